"""Provider usage objects normalise to canonical token counts, nothing twice, nothing lost."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from functions.core.pricing import (
    MAX_TOKENS,
    USAGE_FORMATS,
    TokenUsage,
    UsageFormatError,
    normalize_usage,
)

# --- documented shapes -------------------------------------------------------------
# Each object below is a provider's `usage` as its API reference shows it, with
# numbers chosen so every part is non-zero and the arithmetic is visible.


def test_openai_chat_completion_usage():
    raw = {
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 192,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    assert normalize_usage("openai", raw) == TokenUsage(
        input_tokens=2006, cached_input_tokens=1920, output_tokens=300, reasoning_tokens=192
    )


@pytest.mark.parametrize("details", [None, "missing", {}])
def test_openai_chat_details_may_be_absent_or_null(details):
    raw = {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29}
    if details != "missing":
        raw["prompt_tokens_details"] = details
        raw["completion_tokens_details"] = details
    assert normalize_usage("openai", raw) == TokenUsage(input_tokens=19, output_tokens=10)


def test_openai_streaming_final_chunk_usage_is_the_same_object():
    # With stream_options.include_usage the last chunk has choices: [] and this usage.
    chunk = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "choices": [],
        "usage": {"prompt_tokens": 50, "completion_tokens": 7, "total_tokens": 57},
    }
    assert normalize_usage("openai", chunk["usage"]) == TokenUsage(input_tokens=50, output_tokens=7)


def test_xai_reasoning_reported_beside_completion_is_billed_as_output():
    # xAI: total_tokens = prompt + completion + reasoning, reasoning outside completion.
    raw = {
        "prompt_tokens": 10120,
        "completion_tokens": 1499,
        "total_tokens": 14428,
        "prompt_tokens_details": {"cached_tokens": 128},
        "completion_tokens_details": {"reasoning_tokens": 2809},
    }
    assert normalize_usage("openai", raw) == TokenUsage(
        input_tokens=10120, cached_input_tokens=128, output_tokens=4308, reasoning_tokens=2809
    )


def test_unreported_thinking_visible_in_total_is_billed():
    # Gemini's OpenAI-compatible endpoint leaves thinking out of completion_tokens and
    # reports it nowhere but total_tokens.
    raw = {"completion_tokens": 102, "prompt_tokens": 758, "total_tokens": 1725}
    assert normalize_usage("openai", raw) == TokenUsage(input_tokens=758, output_tokens=967, reasoning_tokens=865)


def test_total_below_parts_is_ignored():
    raw = {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 10}
    assert normalize_usage("openai", raw) == TokenUsage(input_tokens=100, output_tokens=50)


def test_deepseek_cache_hit_tokens_are_cached_input():
    raw = {
        "prompt_tokens": 1000,
        "completion_tokens": 20,
        "total_tokens": 1020,
        "prompt_cache_hit_tokens": 640,
        "prompt_cache_miss_tokens": 360,
    }
    assert normalize_usage("openai", raw) == TokenUsage(input_tokens=1000, cached_input_tokens=640, output_tokens=20)


def test_openai_responses_usage():
    raw = {
        "input_tokens": 328,
        "input_tokens_details": {"cached_tokens": 256},
        "output_tokens": 52,
        "output_tokens_details": {"reasoning_tokens": 40},
        "total_tokens": 380,
    }
    assert normalize_usage("openai_responses", raw) == TokenUsage(
        input_tokens=328, cached_input_tokens=256, output_tokens=52, reasoning_tokens=40
    )


def test_openai_responses_without_details():
    raw = {"input_tokens": 36, "output_tokens": 87, "total_tokens": 123}
    assert normalize_usage("openai_responses", raw) == TokenUsage(input_tokens=36, output_tokens=87)


def test_anthropic_usage_adds_cache_reads_and_writes_to_input():
    raw = {
        "input_tokens": 21,
        "cache_creation_input_tokens": 188086,
        "cache_read_input_tokens": 1024,
        "cache_creation": {"ephemeral_5m_input_tokens": 188086, "ephemeral_1h_input_tokens": 0},
        "output_tokens": 393,
        "server_tool_use": {"web_search_requests": 0},
        "service_tier": "standard",
    }
    assert normalize_usage("anthropic", raw) == TokenUsage(
        input_tokens=21 + 1024 + 188086,
        cached_input_tokens=1024,
        cache_write_tokens=188086,
        output_tokens=393,
    )


def test_anthropic_cache_fields_may_be_null_or_missing():
    assert normalize_usage(
        "anthropic",
        {
            "input_tokens": 12,
            "output_tokens": 6,
            "cache_creation_input_tokens": None,
            "cache_read_input_tokens": None,
            "cache_creation": None,
        },
    ) == TokenUsage(input_tokens=12, output_tokens=6)
    assert normalize_usage("anthropic", {"input_tokens": 12, "output_tokens": 6}) == TokenUsage(
        input_tokens=12, output_tokens=6
    )


def test_anthropic_cache_creation_breakdown_is_not_counted_twice():
    raw = {
        "input_tokens": 10,
        "output_tokens": 5,
        "cache_creation_input_tokens": 300,
        "cache_creation": {"ephemeral_5m_input_tokens": 200, "ephemeral_1h_input_tokens": 100},
    }
    assert normalize_usage("anthropic", raw) == TokenUsage(input_tokens=310, cache_write_tokens=300, output_tokens=5)


def test_anthropic_breakdown_alone_gives_cache_writes():
    raw = {
        "input_tokens": 10,
        "output_tokens": 5,
        "cache_creation": {"ephemeral_5m_input_tokens": 200, "ephemeral_1h_input_tokens": 100},
    }
    assert normalize_usage("anthropic", raw).cache_write_tokens == 300


def test_anthropic_stream_message_delta_needs_input_from_message_start():
    # message_delta.usage is cumulative but may carry only output_tokens: the caller
    # must merge it with message_start's usage, so a bare delta is refused, not billed
    # as zero input.
    with pytest.raises(UsageFormatError, match="input_tokens is missing"):
        normalize_usage("anthropic", {"output_tokens": 15})


def test_gemini_usage_metadata():
    raw = {
        "promptTokenCount": 4116,
        "cachedContentTokenCount": 4096,
        "candidatesTokenCount": 272,
        "thoughtsTokenCount": 722,
        "toolUsePromptTokenCount": 31,
        "totalTokenCount": 4116 + 272 + 722 + 31,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 4116}],
        "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": 4096}],
    }
    expected = TokenUsage(
        input_tokens=4116 + 31,
        cached_input_tokens=4096,
        output_tokens=272 + 722,
        reasoning_tokens=722,
    )
    assert normalize_usage("gemini", raw) == expected
    assert normalize_usage("gemini", {"usageMetadata": raw}) == expected


def test_gemini_whole_response_and_missing_counts():
    response = {
        "candidates": [{"content": {"parts": [{"text": "hi"}], "role": "model"}}],
        "usageMetadata": {"promptTokenCount": 8, "totalTokenCount": 8},
        "modelVersion": "gemini-2.5-flash",
    }
    assert normalize_usage("gemini", response) == TokenUsage(input_tokens=8, output_tokens=0)


@pytest.mark.parametrize(
    "meta",
    [{"totalTokenCount": 5000}, {"candidatesTokenCount": 100, "totalTokenCount": 5100}, {"total_token_count": 9}],
)
def test_gemini_usage_without_a_prompt_count_is_refused(meta):
    # Gemini leaves zero counts out, but no call has an empty prompt: these were billed
    # as if the prompt had cost nothing.
    with pytest.raises(UsageFormatError, match="promptTokenCount is missing"):
        normalize_usage("gemini", {"usageMetadata": meta})


@pytest.mark.parametrize("total_key", ["totalTokenCount", "total_token_count"])
def test_gemini_tokens_the_total_counts_beyond_its_parts_are_billed_as_output(total_key):
    # A thinking count an SDK dropped, or the Live API's responseTokenCount in place of
    # candidatesTokenCount: the total still counts them.
    meta = {"promptTokenCount": 1000, "candidatesTokenCount": 200, total_key: 1000 + 200 + 300}
    assert normalize_usage("gemini", meta) == TokenUsage(input_tokens=1000, output_tokens=500, reasoning_tokens=300)
    live = {"promptTokenCount": 1000, "responseTokenCount": 700, total_key: 1700}
    assert normalize_usage("gemini", live) == TokenUsage(input_tokens=1000, output_tokens=700, reasoning_tokens=700)
    # A total below the parts' sum takes nothing away.
    short = {"promptTokenCount": 1000, "candidatesTokenCount": 200, total_key: 1000}
    assert normalize_usage("gemini", short) == TokenUsage(input_tokens=1000, output_tokens=200)


def test_gemini_python_sdk_snake_case():
    raw = {
        "usage_metadata": {
            "prompt_token_count": 100,
            "cached_content_token_count": 60,
            "candidates_token_count": 20,
            "thoughts_token_count": 5,
            "total_token_count": 125,
        }
    }
    assert normalize_usage("gemini", raw) == TokenUsage(
        input_tokens=100, cached_input_tokens=60, output_tokens=25, reasoning_tokens=5
    )


@pytest.mark.parametrize("raw", [{}, {"usageMetadata": None}, {"prompt_tokens": 10, "completion_tokens": 2}])
def test_gemini_object_without_any_count_is_refused(raw):
    with pytest.raises(UsageFormatError, match="no Gemini token counts"):
        normalize_usage("gemini", raw)


@pytest.mark.parametrize(
    ("usage_format", "response", "expected"),
    [
        (
            "openai",
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
                "usage": {
                    "prompt_tokens": 100,
                    "completion_tokens": 20,
                    "prompt_tokens_details": {"cached_tokens": 64},
                },
            },
            TokenUsage(input_tokens=100, cached_input_tokens=64, output_tokens=20),
        ),
        (
            "openai_responses",
            {
                "id": "resp_1",
                "object": "response",
                "output": [],
                "usage": {"input_tokens": 100, "output_tokens": 20, "output_tokens_details": {"reasoning_tokens": 8}},
            },
            TokenUsage(input_tokens=100, output_tokens=20, reasoning_tokens=8),
        ),
        (
            "anthropic",
            {
                "id": "msg_1",
                "type": "message",
                "content": [],
                "usage": {"input_tokens": 10, "cache_read_input_tokens": 90, "output_tokens": 20},
            },
            TokenUsage(input_tokens=100, cached_input_tokens=90, output_tokens=20),
        ),
    ],
)
def test_a_whole_response_is_billed_by_its_usage(usage_format, response, expected):
    # Gemini's whole response was accepted; the others said "prompt_tokens is missing".
    assert normalize_usage(usage_format, response) == expected
    assert normalize_usage(usage_format, response["usage"]) == expected


# --- rejections ----------------------------------------------------------------------

BAD_COUNTS = [-1, 1.5, 12.0, True, False, "12", math.nan, math.inf, [3], {"n": 3}, MAX_TOKENS + 1]


@pytest.mark.parametrize("bad", BAD_COUNTS, ids=repr)
@pytest.mark.parametrize(
    ("usage_format", "base", "path"),
    [
        ("openai", {"prompt_tokens": 10, "completion_tokens": 5}, ("prompt_tokens",)),
        ("openai", {"prompt_tokens": 10, "completion_tokens": 5}, ("completion_tokens",)),
        (
            "openai",
            {"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": {}},
            ("prompt_tokens_details", "cached_tokens"),
        ),
        (
            "openai",
            {"prompt_tokens": 10, "completion_tokens": 5, "completion_tokens_details": {}},
            ("completion_tokens_details", "reasoning_tokens"),
        ),
        ("openai_responses", {"input_tokens": 10, "output_tokens": 5}, ("input_tokens",)),
        (
            "openai_responses",
            {"input_tokens": 10, "output_tokens": 5, "input_tokens_details": {}},
            ("input_tokens_details", "cached_tokens"),
        ),
        (
            "openai_responses",
            {"input_tokens": 10, "output_tokens": 5, "output_tokens_details": {}},
            ("output_tokens_details", "reasoning_tokens"),
        ),
        ("anthropic", {"input_tokens": 10, "output_tokens": 5}, ("input_tokens",)),
        ("anthropic", {"input_tokens": 10, "output_tokens": 5}, ("output_tokens",)),
        ("anthropic", {"input_tokens": 10, "output_tokens": 5}, ("cache_read_input_tokens",)),
        ("anthropic", {"input_tokens": 10, "output_tokens": 5}, ("cache_creation_input_tokens",)),
        (
            "anthropic",
            {"input_tokens": 10, "output_tokens": 5, "cache_creation": {}},
            ("cache_creation", "ephemeral_1h_input_tokens"),
        ),
        ("gemini", {"promptTokenCount": 10}, ("promptTokenCount",)),
        ("gemini", {"promptTokenCount": 10}, ("candidatesTokenCount",)),
        ("gemini", {"promptTokenCount": 10}, ("thoughtsTokenCount",)),
        ("gemini", {"promptTokenCount": 10}, ("toolUsePromptTokenCount",)),
        ("gemini", {"promptTokenCount": 10}, ("cachedContentTokenCount",)),
    ],
)
def test_bad_counts_are_refused_naming_the_field(usage_format, base, path, bad):
    raw = json.loads(json.dumps(base))
    target = raw
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = bad
    with pytest.raises(UsageFormatError) as info:
        normalize_usage(usage_format, raw)
    assert ".".join(path) in str(info.value)


@pytest.mark.parametrize("usage_format", ["openai", "openai_responses"])
@pytest.mark.parametrize("bad", [-1, 1.5, 12.0, True, "12", math.nan, 3 * MAX_TOKENS + 1], ids=repr)
def test_bad_total_tokens_is_refused(usage_format, bad):
    first, second = (
        ("prompt_tokens", "completion_tokens") if usage_format == "openai" else ("input_tokens", "output_tokens")
    )
    with pytest.raises(UsageFormatError, match="total_tokens"):
        normalize_usage(usage_format, {first: 1, second: 1, "total_tokens": bad})


def test_total_tokens_may_exceed_the_per_count_limit():
    raw = {
        "prompt_tokens": MAX_TOKENS,
        "completion_tokens": MAX_TOKENS,
        "total_tokens": 2 * MAX_TOKENS,
    }
    assert normalize_usage("openai", raw).output_tokens == MAX_TOKENS


@pytest.mark.parametrize(
    ("usage_format", "raw", "field"),
    [
        ("openai", {"completion_tokens": 5}, "prompt_tokens"),
        ("openai", {"prompt_tokens": 5}, "completion_tokens"),
        ("openai", {"prompt_tokens": None, "completion_tokens": 5}, "prompt_tokens"),
        ("openai_responses", {"output_tokens": 5}, "input_tokens"),
        ("openai_responses", {"input_tokens": 5}, "output_tokens"),
        ("anthropic", {"output_tokens": 5}, "input_tokens"),
        ("anthropic", {"input_tokens": 5}, "output_tokens"),
    ],
)
def test_missing_required_counts_are_refused(usage_format, raw, field):
    with pytest.raises(UsageFormatError, match=f"{field} is missing"):
        normalize_usage(usage_format, raw)


@pytest.mark.parametrize("usage_format", ["", "OpenAI", "bedrock", None, 3])
def test_unknown_format_is_refused(usage_format):
    with pytest.raises(UsageFormatError, match="unknown usage_format"):
        normalize_usage(usage_format, {"prompt_tokens": 1, "completion_tokens": 1})


@pytest.mark.parametrize("usage_format", USAGE_FORMATS)
@pytest.mark.parametrize("raw", [None, [], "usage", 12, [("input_tokens", 1)]])
def test_non_object_is_refused(usage_format, raw):
    with pytest.raises(UsageFormatError, match="must be a JSON object"):
        normalize_usage(usage_format, raw)


@pytest.mark.parametrize(
    ("usage_format", "raw", "message"),
    [
        (
            "openai",
            {
                "prompt_tokens": 10,
                "completion_tokens": 5,
                "prompt_tokens_details": {"cached_tokens": 11},
            },
            "prompt_tokens_details.cached_tokens (11) exceeds prompt_tokens (10)",
        ),
        (
            "openai",
            {
                "prompt_tokens": 10,
                "completion_tokens": 5,
                "completion_tokens_details": {"reasoning_tokens": 6},
            },
            "completion_tokens_details.reasoning_tokens (6) exceeds completion_tokens (5)",
        ),
        (
            "openai_responses",
            {"input_tokens": 10, "output_tokens": 5, "input_tokens_details": {"cached_tokens": 11}},
            "input_tokens_details.cached_tokens (11) exceeds input_tokens (10)",
        ),
        (
            "openai_responses",
            {
                "input_tokens": 10,
                "output_tokens": 5,
                "output_tokens_details": {"reasoning_tokens": 6},
            },
            "output_tokens_details.reasoning_tokens (6) exceeds output_tokens (5)",
        ),
        (
            "gemini",
            {"promptTokenCount": 10, "cachedContentTokenCount": 11},
            "cachedContentTokenCount (11) exceeds promptTokenCount (10)",
        ),
        (
            "openai",
            {"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": "cached"},
            "prompt_tokens_details must be an object",
        ),
    ],
)
def test_parts_larger_than_their_total_are_refused(usage_format, raw, message):
    with pytest.raises(UsageFormatError) as info:
        normalize_usage(usage_format, raw)
    assert message in str(info.value)


def test_derived_total_above_limit_is_refused():
    raw = {"input_tokens": MAX_TOKENS, "output_tokens": 1, "cache_read_input_tokens": 1}
    with pytest.raises(UsageFormatError, match="input_tokens"):
        normalize_usage("anthropic", raw)
    raw = {"promptTokenCount": 1, "candidatesTokenCount": MAX_TOKENS, "thoughtsTokenCount": 1}
    with pytest.raises(UsageFormatError, match="output_tokens"):
        normalize_usage("gemini", raw)


def test_usage_format_error_is_a_value_error():
    assert issubclass(UsageFormatError, ValueError)


# --- the canonical model itself ----------------------------------------------------


@pytest.mark.parametrize("bad", BAD_COUNTS, ids=repr)
@pytest.mark.parametrize(
    "field",
    [
        "input_tokens",
        "output_tokens",
        "cached_input_tokens",
        "reasoning_tokens",
        "cache_write_tokens",
    ],
)
def test_token_usage_accepts_only_strict_bounded_integers(field, bad):
    values = {"input_tokens": 10, "output_tokens": 10, field: bad}
    with pytest.raises(ValidationError):
        TokenUsage(**values)


@pytest.mark.parametrize("text", ["12.0", "1e3", "true", '"12"', "NaN", "-1", str(MAX_TOKENS + 1)])
def test_token_usage_from_json_is_strict(text):
    with pytest.raises(ValidationError):
        TokenUsage.model_validate_json(f'{{"input_tokens": {text}, "output_tokens": 1}}')


def test_token_usage_bounds_are_inclusive():
    usage = TokenUsage(input_tokens=MAX_TOKENS, output_tokens=0)
    assert usage.input_tokens == MAX_TOKENS


def test_token_usage_defaults_and_extra_fields():
    assert TokenUsage(input_tokens=3, output_tokens=4).model_dump() == {
        "input_tokens": 3,
        "output_tokens": 4,
        "cached_input_tokens": 0,
        "reasoning_tokens": 0,
        "cache_write_tokens": 0,
    }
    with pytest.raises(ValidationError):
        TokenUsage(input_tokens=3, output_tokens=4, total_tokens=7)
    with pytest.raises(ValidationError):
        TokenUsage(input_tokens=3)


@pytest.mark.parametrize(
    "values",
    [
        {"input_tokens": 10, "output_tokens": 0, "cached_input_tokens": 11},
        {"input_tokens": 10, "output_tokens": 0, "cache_write_tokens": 11},
        {"input_tokens": 10, "output_tokens": 0, "cached_input_tokens": 6, "cache_write_tokens": 5},
        {"input_tokens": 0, "output_tokens": 5, "reasoning_tokens": 6},
    ],
)
def test_token_usage_parts_must_fit(values):
    with pytest.raises(ValidationError):
        TokenUsage(**values)


def test_token_usage_parts_may_fill_totals():
    usage = TokenUsage(
        input_tokens=10,
        cached_input_tokens=6,
        cache_write_tokens=4,
        output_tokens=5,
        reasoning_tokens=5,
    )
    assert usage.cached_input_tokens + usage.cache_write_tokens == usage.input_tokens


def test_module_imports_without_heavy_dependencies():
    # The usage function's cold start pays for this import: stdlib + pydantic only.
    code = (
        "import sys; import functions.core.pricing; "
        "heavy = {'fastapi', 'stripe', 'supabase', 'psycopg', 'httpx', 'hypothesis'}; "
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))"
    )
    repo_root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo_root)
    assert out.stdout.strip() == "[]"


# --- property: every provider shape round-trips to the same canonical usage ----------

counts = st.integers(min_value=0, max_value=MAX_TOKENS)


@st.composite
def split(draw, total, parts):
    """`parts` non-negative integers whose sum is at most `total`."""
    cuts = sorted(draw(st.integers(min_value=0, max_value=total)) for _ in range(parts))
    return [b - a for a, b in zip([0, *cuts], cuts, strict=False)]


@st.composite
def canonical(draw, *, cache_writes, reasoning):
    # Occasionally use tiny numbers so zero parts and equal parts show up often.
    top = draw(st.sampled_from([MAX_TOKENS, 1000, 3]))
    input_tokens = draw(st.integers(min_value=0, max_value=top))
    output_tokens = draw(st.integers(min_value=0, max_value=top))
    cached, write = draw(split(input_tokens, 2))
    if not cache_writes:
        write = 0
    reasoning_tokens = draw(st.integers(min_value=0, max_value=output_tokens)) if reasoning else 0
    return TokenUsage(
        input_tokens=input_tokens,
        cached_input_tokens=cached,
        cache_write_tokens=write,
        output_tokens=output_tokens,
        reasoning_tokens=reasoning_tokens,
    )


def _maybe_details(draw, key, value):
    """A details object as providers send it: omitted, null or {} when the count is 0."""
    if value:
        return {key: value}
    return draw(st.sampled_from(["omit", None, {}, {key: 0}]))


def _put(raw, name, value):
    if value != "omit":
        raw[name] = value


@settings(max_examples=300)
@given(data=st.data(), usage=canonical(cache_writes=False, reasoning=True))
def test_openai_chat_round_trip(data, usage):
    draw = data.draw
    # OpenAI style counts reasoning inside completion; xAI style beside it, with the
    # provider's total showing the difference. Both must bill the same output.
    xai_style = usage.reasoning_tokens > 0 and draw(st.booleans())
    completion = usage.output_tokens - (usage.reasoning_tokens if xai_style else 0)
    raw = {"prompt_tokens": usage.input_tokens, "completion_tokens": completion}
    if xai_style or draw(st.booleans()):
        raw["total_tokens"] = usage.input_tokens + usage.output_tokens
    _put(
        raw,
        "prompt_tokens_details",
        _maybe_details(draw, "cached_tokens", usage.cached_input_tokens),
    )
    _put(
        raw,
        "completion_tokens_details",
        _maybe_details(draw, "reasoning_tokens", usage.reasoning_tokens),
    )
    assert normalize_usage("openai", raw) == usage


@settings(max_examples=300)
@given(data=st.data(), usage=canonical(cache_writes=False, reasoning=True))
def test_openai_responses_round_trip(data, usage):
    draw = data.draw
    raw = {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens}
    if draw(st.booleans()):
        raw["total_tokens"] = usage.input_tokens + usage.output_tokens
    _put(
        raw,
        "input_tokens_details",
        _maybe_details(draw, "cached_tokens", usage.cached_input_tokens),
    )
    _put(
        raw,
        "output_tokens_details",
        _maybe_details(draw, "reasoning_tokens", usage.reasoning_tokens),
    )
    assert normalize_usage("openai_responses", raw) == usage


@settings(max_examples=300)
@given(data=st.data(), usage=canonical(cache_writes=True, reasoning=False))
def test_anthropic_round_trip(data, usage):
    draw = data.draw
    raw = {
        "input_tokens": usage.input_tokens - usage.cached_input_tokens - usage.cache_write_tokens,
        "output_tokens": usage.output_tokens,
    }
    if usage.cached_input_tokens or draw(st.booleans()):
        raw["cache_read_input_tokens"] = usage.cached_input_tokens
    # cache_creation_input_tokens and its per-lifetime split name the same writes; a
    # response may carry either or both.
    shape = draw(st.sampled_from(["total", "breakdown", "both"]))
    if shape != "breakdown" and (usage.cache_write_tokens or draw(st.booleans())):
        raw["cache_creation_input_tokens"] = usage.cache_write_tokens
    if shape != "total":
        five = draw(st.integers(min_value=0, max_value=usage.cache_write_tokens))
        raw["cache_creation"] = {
            "ephemeral_5m_input_tokens": five,
            "ephemeral_1h_input_tokens": usage.cache_write_tokens - five,
        }
    assert normalize_usage("anthropic", raw) == usage


@settings(max_examples=300)
@given(data=st.data(), usage=canonical(cache_writes=False, reasoning=True))
def test_gemini_round_trip(data, usage):
    draw = data.draw
    # Tool-use prompt tokens are input reported beside promptTokenCount; the cached
    # content must stay inside promptTokenCount.
    tool_prompt = draw(st.integers(min_value=0, max_value=usage.input_tokens - usage.cached_input_tokens))
    counts_ = {
        "promptTokenCount": usage.input_tokens - tool_prompt,
        "cachedContentTokenCount": usage.cached_input_tokens,
        "candidatesTokenCount": usage.output_tokens - usage.reasoning_tokens,
        "thoughtsTokenCount": usage.reasoning_tokens,
        "toolUsePromptTokenCount": tool_prompt,
    }
    # Gemini leaves zero counts out; promptTokenCount is always there.
    meta = {k: v for k, v in counts_.items() if v or k == "promptTokenCount" or draw(st.booleans())}
    meta["totalTokenCount"] = usage.input_tokens + usage.output_tokens
    raw = {"usageMetadata": meta} if draw(st.booleans()) else meta
    assert normalize_usage("gemini", raw) == usage
