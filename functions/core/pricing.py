"""Token usage as creditgate bills it, and the provider usage objects it is built from.

Providers disagree on what their counts contain: OpenAI's ``prompt_tokens`` already
includes the cached part, Anthropic's ``input_tokens`` leaves out both cache reads and
cache writes, Gemini keeps thinking tokens outside ``candidatesTokenCount``. Billing the
raw numbers either charges cached tokens twice or forgets the ones left out, so every
provider object is turned into one canonical shape first (API.md, "Usage"):

* ``input_tokens`` counts all input; ``cached_input_tokens`` and ``cache_write_tokens``
  are parts of it;
* ``output_tokens`` counts all output; ``reasoning_tokens`` is a part of it.

This module is on the cold-start path of the ``usage`` function: stdlib and pydantic only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from functions.core.schemas import MAX_TOKENS, TokenCount

__all__ = [
    "MAX_TOKENS",
    "USAGE_FORMATS",
    "TokenCount",
    "TokenUsage",
    "UsageFormatError",
    "normalize_usage",
]

USAGE_FORMATS = ("openai", "openai_responses", "anthropic", "gemini")


class UsageFormatError(ValueError):
    """A provider usage object that cannot be billed as it stands."""


class TokenUsage(BaseModel):
    """Canonical token counts of one model call."""

    model_config = ConfigDict(extra="forbid")

    input_tokens: TokenCount
    output_tokens: TokenCount
    cached_input_tokens: TokenCount = 0
    reasoning_tokens: TokenCount = 0
    cache_write_tokens: TokenCount = 0

    @model_validator(mode="after")
    def _parts_fit_in_totals(self) -> TokenUsage:
        # Cache reads and cache writes are disjoint slices of the input; if they add up
        # to more than the input, the caller mixed conventions and we would bill twice.
        if self.cached_input_tokens + self.cache_write_tokens > self.input_tokens:
            raise ValueError(
                "cached_input_tokens + cache_write_tokens "
                f"({self.cached_input_tokens} + {self.cache_write_tokens}) "
                f"exceeds input_tokens ({self.input_tokens})"
            )
        if self.reasoning_tokens > self.output_tokens:
            raise ValueError(f"reasoning_tokens ({self.reasoning_tokens}) exceeds output_tokens ({self.output_tokens})")
        return self


def normalize_usage(usage_format: str, raw: Any) -> TokenUsage:
    """Turn a provider's own usage object into canonical :class:`TokenUsage`.

    Raises :class:`UsageFormatError` naming the offending field when the format is
    unknown, the object is not a JSON object, a required count is missing, or a count is
    not a non-negative integer up to :data:`MAX_TOKENS`.
    """
    parser = _PARSERS.get(usage_format) if isinstance(usage_format, str) else None
    if parser is None:
        raise UsageFormatError(f"unknown usage_format {usage_format!r}; expected one of {', '.join(USAGE_FORMATS)}")
    if not isinstance(raw, Mapping):
        raise UsageFormatError(f"{usage_format} usage must be a JSON object, got {type(raw).__name__}")
    # The whole response may be passed (a chat completion, a Responses object, an Anthropic
    # message): what is billed is its `usage`, as Gemini's usageMetadata is found below.
    first_count = _FIRST_COUNT.get(usage_format)
    if first_count and first_count not in raw and isinstance(raw.get("usage"), Mapping):
        raw = raw["usage"]
    fields = parser(_Reader(usage_format, raw))
    try:
        return TokenUsage(**fields)
    except ValidationError as exc:
        # Reached when parts are consistent but a derived total (say Anthropic's input
        # plus cache reads plus cache writes) passes MAX_TOKENS, or parts overrun totals.
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'usage'}: {err['msg']}" for err in exc.errors())
        raise UsageFormatError(f"{usage_format} usage cannot be billed: {problems}") from None


class _Reader:
    """Reads counts from one provider object, naming fields by their path on error."""

    def __init__(self, usage_format: str, raw: Mapping[str, Any]) -> None:
        self.usage_format = usage_format
        self.raw = raw

    def fail(self, message: str) -> UsageFormatError:
        return UsageFormatError(f"{self.usage_format} usage: {message}")

    def section(self, obj: Mapping[str, Any], key: str, path: str = "") -> Mapping[str, Any]:
        # Providers send details objects as absent, null or {} interchangeably.
        value = obj.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.fail(f"{path}{key} must be an object, got {type(value).__name__}")
        return value

    def count(
        self,
        obj: Mapping[str, Any],
        key: str,
        *,
        path: str = "",
        required: bool = False,
        limit: int = MAX_TOKENS,
    ) -> int | None:
        value = obj.get(key)
        if value is None:
            if required:
                raise self.fail(f"{path}{key} is missing")
            return None
        # bool is an int subclass; a float such as 12.0 means the object went through
        # something that does not keep integers, so neither is trusted as a count.
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"{path}{key} must be an integer token count, got {value!r}")
        if value < 0:
            raise self.fail(f"{path}{key} must not be negative, got {value}")
        if value > limit:
            raise self.fail(f"{path}{key} is above the limit of {limit} tokens, got {value}")
        return value

    def part_within(self, part: int, part_name: str, total: int, total_name: str) -> None:
        if part > total:
            raise self.fail(f"{part_name} ({part}) exceeds {total_name} ({total})")


def _openai_like_output(
    r: _Reader,
    prompt: int,
    prompt_name: str,
    completion: int,
    completion_name: str,
    reasoning: int,
    reasoning_name: str,
) -> tuple[int, int]:
    """Output and reasoning counts for the OpenAI conventions.

    OpenAI counts reasoning inside the completion and reports ``total = prompt +
    completion``. Some OpenAI-compatible APIs do not: xAI reports reasoning beside the
    completion (``total = prompt + completion + reasoning``), and Gemini's compatible
    endpoint leaves thinking out of the completion without reporting it at all. In both
    the provider's own ``total_tokens`` shows the output the completion count missed, so
    that excess is billed as reasoning output instead of being lost.
    """
    # A total sums up to three bounded counts, so it gets their combined bound.
    total = r.count(r.raw, "total_tokens", limit=3 * MAX_TOKENS)
    excess = 0 if total is None else max(total - prompt - completion, 0)
    if excess and excess == reasoning:
        return completion + reasoning, reasoning
    r.part_within(reasoning, reasoning_name, completion, completion_name)
    return completion + excess, reasoning + excess


def _openai_chat(r: _Reader) -> dict[str, int]:
    prompt = r.count(r.raw, "prompt_tokens", required=True)
    completion = r.count(r.raw, "completion_tokens", required=True)
    prompt_details = r.section(r.raw, "prompt_tokens_details")
    completion_details = r.section(r.raw, "completion_tokens_details")

    cached_name = "prompt_tokens_details.cached_tokens"
    cached = r.count(prompt_details, "cached_tokens", path="prompt_tokens_details.")
    if cached is None:
        # DeepSeek's OpenAI-compatible usage reports cache hits under its own name;
        # like cached_tokens they are included in prompt_tokens.
        cached_name = "prompt_cache_hit_tokens"
        cached = r.count(r.raw, "prompt_cache_hit_tokens")
    cached = cached or 0
    r.part_within(cached, cached_name, prompt, "prompt_tokens")

    reasoning = r.count(completion_details, "reasoning_tokens", path="completion_tokens_details.") or 0
    output, reasoning = _openai_like_output(
        r,
        prompt,
        "prompt_tokens",
        completion,
        "completion_tokens",
        reasoning,
        "completion_tokens_details.reasoning_tokens",
    )
    return {
        "input_tokens": prompt,
        "cached_input_tokens": cached,
        "output_tokens": output,
        "reasoning_tokens": reasoning,
    }


def _openai_responses(r: _Reader) -> dict[str, int]:
    input_tokens = r.count(r.raw, "input_tokens", required=True)
    output_tokens = r.count(r.raw, "output_tokens", required=True)
    input_details = r.section(r.raw, "input_tokens_details")
    output_details = r.section(r.raw, "output_tokens_details")

    cached = r.count(input_details, "cached_tokens", path="input_tokens_details.") or 0
    r.part_within(cached, "input_tokens_details.cached_tokens", input_tokens, "input_tokens")

    reasoning = r.count(output_details, "reasoning_tokens", path="output_tokens_details.") or 0
    output, reasoning = _openai_like_output(
        r,
        input_tokens,
        "input_tokens",
        output_tokens,
        "output_tokens",
        reasoning,
        "output_tokens_details.reasoning_tokens",
    )
    return {
        "input_tokens": input_tokens,
        "cached_input_tokens": cached,
        "output_tokens": output,
        "reasoning_tokens": reasoning,
    }


def _anthropic(r: _Reader) -> dict[str, int]:
    # Anthropic's input_tokens is only the uncached remainder: cache reads and cache
    # writes are reported beside it and must be added back to get the whole input.
    uncached = r.count(r.raw, "input_tokens", required=True)
    output = r.count(r.raw, "output_tokens", required=True)
    cache_read = r.count(r.raw, "cache_read_input_tokens") or 0
    cache_write = r.count(r.raw, "cache_creation_input_tokens")

    # cache_creation splits the same writes by cache lifetime; it is not additional.
    # When only the split is sent it stands in for the total, and when both are sent
    # the larger wins so a stale or truncated field can neither hide writes nor add any.
    breakdown = r.section(r.raw, "cache_creation")
    split = sum(
        r.count(breakdown, key, path="cache_creation.") or 0 for key in breakdown if key.endswith("_input_tokens")
    )
    cache_write = max(cache_write or 0, split)

    return {
        "input_tokens": uncached + cache_read + cache_write,
        "cached_input_tokens": cache_read,
        "cache_write_tokens": cache_write,
        "output_tokens": output,
    }


# Gemini's REST API spells counts in camelCase; the Python SDK's model_dump() gives
# snake_case. Both name the same counts.
_GEMINI_KEYS = {
    "prompt": ("promptTokenCount", "prompt_token_count"),
    "cached": ("cachedContentTokenCount", "cached_content_token_count"),
    "candidates": ("candidatesTokenCount", "candidates_token_count"),
    "thoughts": ("thoughtsTokenCount", "thoughts_token_count"),
    "tool_prompt": ("toolUsePromptTokenCount", "tool_use_prompt_token_count"),
}
_GEMINI_ALL_KEYS = frozenset(k for pair in _GEMINI_KEYS.values() for k in pair) | {
    "totalTokenCount",
    "total_token_count",
}


def _gemini(r: _Reader) -> dict[str, int]:
    meta: Mapping[str, Any] = r.raw
    for wrapper in ("usageMetadata", "usage_metadata"):
        if wrapper in meta:
            meta = r.section(meta, wrapper)
            break
    # An object with no Gemini count at all is not Gemini usage (another provider's
    # object, a wrong key): billing it as zero tokens would give the call away.
    if not _GEMINI_ALL_KEYS.intersection(meta):
        raise r.fail("no Gemini token counts found (expected usageMetadata.promptTokenCount, …)")

    def get(name: str, required: bool = False) -> tuple[int, str]:
        camel, snake = _GEMINI_KEYS[name]
        key = camel if meta.get(camel) is not None or meta.get(snake) is None else snake
        return r.count(meta, key, required=required) or 0, key

    # Gemini leaves zero counts out, so a missing output count is zero; but every call
    # has a prompt, and a usage without one has lost it.
    prompt, prompt_key = get("prompt", required=True)
    cached, cached_key = get("cached")
    candidates, _ = get("candidates")
    thoughts, _ = get("thoughts")
    tool_prompt, _ = get("tool_prompt")

    # promptTokenCount already includes the cached content; tool-use prompts (search
    # grounding, code execution) are reported beside it and are input too.
    r.part_within(cached, cached_key, prompt, prompt_key)
    # totalTokenCount is the sum of those parts. Tokens it counts that no part names (a
    # thinking count an SDK dropped, the Live API's responseTokenCount) are output the
    # parts missed: billed as reasoning, as in the OpenAI-compatible shapes, not lost.
    total_key = "totalTokenCount" if meta.get("totalTokenCount") is not None else "total_token_count"
    total = r.count(meta, total_key, limit=4 * MAX_TOKENS)
    missed = max((total or 0) - prompt - tool_prompt - candidates - thoughts, 0)
    return {
        "input_tokens": prompt + tool_prompt,
        "cached_input_tokens": cached,
        "output_tokens": candidates + thoughts + missed,
        "reasoning_tokens": thoughts + missed,
    }


# The count each usage object has at its top level, and a whole response does not.
_FIRST_COUNT = {"openai": "prompt_tokens", "openai_responses": "input_tokens", "anthropic": "input_tokens"}

_PARSERS = {
    "openai": _openai_chat,
    "openai_responses": _openai_responses,
    "anthropic": _anthropic,
    "gemini": _gemini,
}
