"""Amounts cross the HTTP boundary as decimal strings and live everywhere else as integers:
micro-credits (1 credit = 1,000,000), minor units of a currency, pico-USD of provider cost."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

MICRO = 1_000_000
MAX_CREDITS = 10**12
ZERO_DECIMAL_CURRENCIES = frozenset(
    {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"}
)


# Plain ASCII digits with an optional fraction. Decimal() alone would also take "1_000",
# " 1 ", "+1", "1e2" and other scripts' digits: a typo like "1_000" for "1.000" would
# move a thousand times the money.
DECIMAL_STRING = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def _decimal(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError("must be a decimal string or a number")
    if isinstance(value, str) and not DECIMAL_STRING.fullmatch(value):
        raise ValueError('must be a decimal number written with digits and one optional ".", like "12.5"')
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ValueError("must be a decimal number") from None
    if not number.is_finite():
        raise ValueError("must be a finite number")
    return number


def to_micro(value: Any, *, allow_zero: bool = False) -> int:
    """A credit amount ("12.5", 12.5, 12) to micro-credits; refuses what would be rounded."""
    number = _decimal(value)
    if number < 0 or (number == 0 and not allow_zero):
        raise ValueError("must be positive")
    if number > MAX_CREDITS:
        raise ValueError(f"must be at most {MAX_CREDITS}")
    micro = number * MICRO
    if micro != micro.to_integral_value():
        raise ValueError("at most 6 decimal places")
    return int(micro)


def format_micro(micro: int | None) -> str | None:
    """Micro-units to the shortest exact decimal string: 12500000 -> "12.5"."""
    if micro is None:
        return None
    text = format((Decimal(micro) / MICRO).normalize(), "f")
    return text


def minor_to_major(amount_minor: int, currency: str) -> str:
    if currency.lower() in ZERO_DECIMAL_CURRENCIES:
        return str(amount_minor)
    return format(Decimal(amount_minor) / 100, ".2f")


def major_to_minor(value: Any, currency: str) -> int:
    number = _decimal(value)
    scale = 1 if currency.lower() in ZERO_DECIMAL_CURRENCIES else 100
    minor = number * scale
    if number < 0 or minor != minor.to_integral_value():
        raise ValueError(f"not a valid {currency} amount: {value}")
    return int(minor)


# A model's prices, each in USD per million tokens (micro-USD integers inside).
PRICE_FIELDS = (
    "input_per_mtok",
    "output_per_mtok",
    "cached_input_per_mtok",
    "reasoning_per_mtok",
    "cache_write_per_mtok",
    "long_context_input_per_mtok",
    "long_context_output_per_mtok",
    "long_context_cached_input_per_mtok",
    "long_context_cache_write_per_mtok",
)


def usd_to_pico(value: Any) -> int:
    """A USD amount ("50", "0.5") to pico-USD, the unit of provider cost."""
    number = _decimal(value)
    if number < 0:
        raise ValueError("must not be negative")
    return int(number * 10**12)


def pico_usd_to_str(pico: int) -> str:
    return format((Decimal(pico) / 10**12).normalize(), "f")


def usd_per_mtok_to_micro(value: Any) -> int:
    """A price in USD per million tokens to integer micro-USD per million tokens."""
    number = _decimal(value)
    micro = number * MICRO
    if number < 0 or micro != micro.to_integral_value():
        raise ValueError(f"price must be non-negative with at most 6 decimals: {value}")
    return int(micro)


# A request field holding credits: accepts "12.5" or 12.5, yields micro-credits.
Credits = Annotated[int, BeforeValidator(to_micro), PlainSerializer(format_micro, return_type=str)]
# An amount that may be zero (an allowance of nothing).
CreditsOrZero = Annotated[
    int, BeforeValidator(lambda v: to_micro(v, allow_zero=True)), PlainSerializer(format_micro, return_type=str)
]
