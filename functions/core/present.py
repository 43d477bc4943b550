"""Shapes RPC answers (integers) into HTTP answers (decimal strings)."""

from __future__ import annotations

from typing import Any

from functions.core.money import format_micro, minor_to_major, pico_usd_to_str

MICRO_FIELDS = (
    "required",
    "available",
    "debt",
    "reserved",
    "amount",
    "cost",
    "cost_estimate",
    "charged",
    "released",
    "allowance",
    "used_this_period",
    "debt_paid",
    "credits",
    "bonus_credits",
)


def micro_fields(data: dict[str, Any], names: tuple[str, ...] = MICRO_FIELDS) -> dict[str, Any]:
    out = dict(data)
    for name in names:
        if isinstance(out.get(name), int) and not isinstance(out.get(name), bool):
            out[name] = format_micro(out[name])
    return out


def movement(answer: dict[str, Any], amounts: tuple[str, ...] = ("amount",)) -> dict[str, Any]:
    """A grant's or debit's answer as the API shows it: its amounts and the balance it left in credits."""
    return micro_fields({**answer, "balance": micro_fields(answer["balance"], ("available", "debt"))}, amounts)


def micro_map(amounts: dict[str, int]) -> dict[str, str]:
    """Amounts by balance key, as the API shows them (decimal strings)."""
    return {key: format_micro(amount) for key, amount in amounts.items()}


def pack(p: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": p["id"],
        "name": p["name"],
        "price": minor_to_major(p["price_minor"], p["currency"]),
        "currency": p["currency"],
        "key": p.get("key", "credits"),
        "credits": format_micro(p["credits"]),
        "bonus_credits": format_micro(p["bonus_credits"]),
    }


def denial(detail: dict[str, Any]) -> dict[str, Any]:
    out = micro_fields(detail, ("required", "available", "debt"))
    if "packs" in out:
        out["packs"] = [pack(p) for p in out["packs"]]
    return out


def cost_usd(pico: int | None) -> str | None:
    return pico_usd_to_str(pico) if pico is not None else None
