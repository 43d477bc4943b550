"""Wire-level pieces of the fake Stripe API: form decoding, errors, ids, money, signing.

Stripe's v1 API takes `application/x-www-form-urlencoded` bodies with bracketed keys
(`line_items[0][price]`, `metadata[k]`, `expand[]`) and answers JSON. Everything here
is standard library so the fake can run wherever the tests run.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import re
import string
import time
from typing import Any
from urllib.parse import parse_qsl

# --------------------------------------------------------------------------- errors


class StripeApiError(Exception):
    """An error answer in Stripe's shape: `{"error": {"type", "message", "code"?, "param"?}}`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self, request_id: str | None = None) -> dict[str, Any]:
        error: dict[str, Any] = {"message": self.message, "type": self.type}
        if self.code:
            error["code"] = self.code
            error["doc_url"] = "https://stripe.com/docs/error-codes/" + self.code.replace("_", "-")
        if self.param:
            error["param"] = self.param
        if request_id:
            error["request_log_url"] = f"https://dashboard.stripe.com/test/logs/{request_id}"
        return {"error": error}


def missing_param(param: str) -> StripeApiError:
    return StripeApiError(400, f"Missing required param: {param}.", code="parameter_missing", param=param)


def unknown_param(param: str) -> StripeApiError:
    return StripeApiError(400, f"Received unknown parameter: {param}", code="parameter_unknown", param=param)


def no_such(kind: str, object_id: str, param: str = "id") -> StripeApiError:
    return StripeApiError(
        404 if param == "id" else 400,
        f"No such {kind}: '{object_id}'",
        code="resource_missing",
        param=param,
    )


def invalid(message: str, param: str | None = None, code: str | None = None) -> StripeApiError:
    return StripeApiError(400, message, code=code, param=param)


# --------------------------------------------------------------------------- form decoding

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")


def parse_form(raw: str) -> dict[str, Any]:
    """Decode Stripe's bracketed form encoding into nested dicts and lists.

    `a[0][b]=1` and `a[]=x` become lists; `a[k]=v` becomes a dict. stripe-python always
    sends indexed arrays (`expand[0]`), browsers and curl users often send `expand[]`.
    """
    root: dict[str, Any] = {}
    for key, value in parse_qsl(raw, keep_blank_values=True):
        match = _KEY.match(key)
        if not match:
            raise invalid(f"Invalid parameter name: {key}", param=key)
        parts = [match.group(1)] + re.findall(r"\[([^\[\]]*)\]", match.group(2))
        node: dict[str, Any] = root
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            if part == "":
                # `[]` appends: give it the next free index of the (future) list.
                part = str(len(node))
            if last:
                if isinstance(node.get(part), dict):
                    raise invalid(f"Invalid hash: {key} is both a value and a hash", param=key)
                node[part] = value
            else:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    raise invalid(f"Invalid hash: {key} is both a value and a hash", param=key)
                node = child
    return _listify(root)


def _listify(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    converted = {k: _listify(v) for k, v in value.items()}
    if converted and all(k.isdigit() for k in converted):
        return [converted[k] for k in sorted(converted, key=int)]
    return converted


def form_fingerprint(raw: str) -> list[tuple[str, str]]:
    """Order-insensitive identity of a request body, for idempotency comparisons."""
    return sorted(parse_qsl(raw, keep_blank_values=True))


# --------------------------------------------------------------------------- typed params


def check_known(params: dict[str, Any], allowed: frozenset[str], prefix: str = "") -> None:
    for name in params:
        if name not in allowed:
            raise unknown_param(f"{prefix}[{name}]" if prefix else name)


def as_int(value: Any, param: str, *, minimum: int | None = None) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"-?\d+", value):
        number = int(value)
    else:
        raise invalid(f"Invalid integer: {value}", param=param, code="parameter_invalid_integer")
    if minimum is not None and number < minimum:
        if minimum == 1:
            raise invalid(
                "This value must be greater than or equal to 1.",
                param=param,
                code="parameter_invalid_integer",
            )
        raise invalid(
            f"This value must be greater than or equal to {minimum}.",
            param=param,
            code="parameter_invalid_integer",
        )
    return number


def as_bool(value: Any, param: str) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise invalid(f"Invalid boolean: {value}", param=param)


def as_str(value: Any, param: str, *, max_length: int | None = None) -> str:
    if not isinstance(value, str):
        raise invalid(f"Invalid string: {value!r}", param=param)
    if max_length is not None and len(value) > max_length:
        raise invalid(
            f"Invalid string: {value[:20]}...; must be at most {max_length} characters",
            param=param,
        )
    return value


def as_enum(value: Any, param: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        if len(choices) > 1:
            listed = ", ".join(choices[:-1]) + f", or {choices[-1]}"
        else:
            listed = choices[0]
        raise invalid(f"Invalid {param}: must be one of {listed}", param=param)
    return value


def as_dict(value: Any, param: str) -> dict[str, Any]:
    if value == "":
        return {}
    if not isinstance(value, dict):
        raise invalid("Invalid object", param=param)
    return value


def as_list(value: Any, param: str) -> list[Any]:
    if not isinstance(value, list):
        raise invalid("Invalid array", param=param)
    return value


def apply_metadata(current: dict[str, str], value: Any, param: str = "metadata") -> dict[str, str]:
    """Merge metadata as Stripe does: keys are set, `""` unsets a key, `metadata=""` clears."""
    if value == "":
        return {}
    updates = as_dict(value, param)
    merged = dict(current)
    for key, item in updates.items():
        if not isinstance(item, str):
            raise invalid("Invalid metadata: values must be strings", param=f"{param}[{key}]")
        if len(key) > 40:
            raise invalid(
                f"Metadata keys can have up to 40 characters, but you passed in a key that is "
                f"{len(key)} characters long.",
                param=f"{param}[{key}]",
            )
        if len(item) > 500:
            raise invalid(
                f"Metadata values can have up to 500 characters, but you passed in a value that "
                f"is {len(item)} characters long.",
                param=f"{param}[{key}]",
            )
        if item == "":
            merged.pop(key, None)
        else:
            merged[key] = item
    if len(merged) > 50:
        raise invalid(f"You can have up to 50 metadata keys; you passed in {len(merged)} keys.", param=param)
    return merged


# --------------------------------------------------------------------------- money

# ISO 4217 minor units as Stripe applies them: zero-decimal and three-decimal currencies.
ZERO_DECIMAL = frozenset("bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split())
THREE_DECIMAL = frozenset("bhd jod kwd omr tnd".split())
_SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "jpy": "¥", "cad": "CA$", "aud": "A$"}


def minor_unit_exponent(currency: str) -> int:
    currency = currency.lower()
    if currency in ZERO_DECIMAL:
        return 0
    if currency in THREE_DECIMAL:
        return 3
    return 2


def format_amount(amount: int, currency: str) -> str:
    """`1050, "usd"` → `$10.50` (the form Stripe uses inside error messages)."""
    exponent = minor_unit_exponent(currency)
    whole, frac = divmod(abs(amount), 10**exponent) if exponent else (abs(amount), 0)
    number = f"{whole:,}" + (f".{frac:0{exponent}d}" if exponent else "")
    sign = "-" if amount < 0 else ""
    symbol = _SYMBOLS.get(currency.lower())
    return f"{sign}{symbol}{number}" if symbol else f"{sign}{number} {currency.upper()}"


# --------------------------------------------------------------------------- ids

_ALNUM = string.ascii_letters + string.digits


class IdFactory:
    """Stripe-looking ids (`cus_…`, `pi_3…`, `cs_test_a1…`); seedable for reproducible runs."""

    _LENGTHS = {"cus": 14, "prod": 14, "si": 14, "req": 14, "sub_sched": 14}

    def __init__(self, seed: int | None = None) -> None:
        self._random = random.Random(seed)
        self._seen: set[str] = set()

    def new(self, prefix: str) -> str:
        while True:
            if prefix == "cs_test":
                candidate = "cs_test_a1" + self._chars(56)
            else:
                length = self._LENGTHS.get(prefix)
                body = self._chars(length) if length else "1" + self._chars(23)
                candidate = f"{prefix}_{body}"
            if candidate not in self._seen:
                self._seen.add(candidate)
                return candidate

    def secret(self, prefix: str, length: int = 24) -> str:
        return prefix + self._chars(length)

    def _chars(self, n: int) -> str:
        return "".join(self._random.choice(_ALNUM) for _ in range(n))


# --------------------------------------------------------------------------- webhooks


def event_bytes(event: dict[str, Any]) -> bytes:
    """Serialise an event the way Stripe delivers it (pretty-printed JSON, UTF-8)."""
    return json.dumps(event, indent=2, ensure_ascii=False).encode("utf-8")


def sign_payload(payload: bytes | str, secret: str, timestamp: int | None = None) -> str:
    """A `Stripe-Signature` header value: `t=<unix>,v1=<hex HMAC-SHA256 of "t.payload">`.

    The timestamp defaults to the real wall clock, not the fake's clock: receivers check
    it against their own `time.time()` with a 300 s tolerance.
    """
    if timestamp is None:
        timestamp = int(time.time())
    body = payload if isinstance(payload, bytes) else payload.encode("utf-8")
    signed = str(timestamp).encode("ascii") + b"." + body
    digest = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"
