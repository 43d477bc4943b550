"""Loads the operator's catalog file into the database: parse and validate the TOML,
convert every amount to integers, and hand the document to one RPC."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator

from functions.core.money import PRICE_FIELDS, major_to_minor, to_micro, usd_per_mtok_to_micro, usd_to_pico
from functions.core.schemas import Slug

DEFAULT_CATALOG = Path(__file__).resolve().parents[2] / "catalog.toml"
Amount = str  # decimal strings in the file; TOML floats would round


class _Item(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SettingsSection(_Item):
    credits_per_usd: StrictInt = Field(gt=0)
    markup: Amount = "1"
    welcome_credits: Amount = "0"
    currency: str = "usd"
    guest_exchanges_per_session: StrictInt = Field(3, ge=0)
    guest_exchanges_per_ip_per_day: StrictInt = Field(20, ge=0)
    guest_session_ttl_hours: StrictInt = Field(24, gt=0)
    low_balance_credits: Amount = "0"
    reservation_ttl_seconds: StrictInt = Field(300, gt=0)
    abuse_sessions_per_ip: StrictInt = Field(5, ge=0)
    # "signup": each account resets on the day it was created; "calendar": on the 1st (UTC).
    periods: Literal["signup", "calendar"] = "signup"
    # Tell the operator when a day's provider cost reaches this (USD); "0": never.
    alert_daily_cost_usd: Amount = "0"
    # Percent of a period's allowance used at which a notice is recorded (once each).
    allowance_notices: list[Annotated[StrictInt, Field(gt=0, le=100)]] = [75, 90, 100]
    # Tell the operator when a day's insufficient_credits, debt_outstanding and
    # quota_exhausted denials reach this many; 0: never.
    alert_daily_denials: StrictInt = Field(0, ge=0, le=2_147_483_647)


class PlanItem(_Item):
    id: str
    name: str
    price: Amount = "0"
    interval: Literal["month", "year"] = "month"
    stripe_price_id: str = ""
    allowances: dict[str, Amount] = {}
    features: list[str] = []
    agents: list[str] = []
    rate_limit_per_minute: StrictInt = Field(0, ge=0)
    # Per member of an account (each user's calls in their own window); 0: none.
    rate_limit_per_member: StrictInt = Field(0, ge=0, le=999_999_999)
    display_order: StrictInt = 0
    description: str | None = None


class PackItem(_Item):
    id: str
    name: str
    price: Amount
    currency: str = "usd"
    # The balance key the pack tops up: credits, or a quota some plan or feature meters.
    key: Slug = "credits"
    credits: Amount
    bonus_credits: Amount = "0"
    stripe_price_id: str = ""
    display_order: StrictInt = 0
    description: str | None = None


class Pricing(_Item):
    mode: Literal["model", "tokens", "per_unit"]
    credits_per_unit: Amount | None = None


class FeatureItem(_Item):
    id: str
    name: str
    kind: Literal["access", "metered"]
    balance_key: str | None = None
    pricing: Pricing | None = None
    requests_key: str | None = None
    description: str | None = None

    @model_validator(mode="after")
    def _metered_needs_pricing(self) -> FeatureItem:
        if self.kind == "metered" and (self.balance_key is None or self.pricing is None):
            raise ValueError(f"metered feature {self.id!r} needs balance_key and pricing")
        if self.pricing and self.pricing.mode == "per_unit" and self.pricing.credits_per_unit is None:
            raise ValueError(f"per_unit feature {self.id!r} needs pricing.credits_per_unit")
        return self


class AgentItem(_Item):
    id: str
    name: str
    description: str | None = None
    display_order: StrictInt | None = None


class ModelItem(_Item):
    provider: str
    model: str
    input_per_mtok: Amount
    output_per_mtok: Amount
    cached_input_per_mtok: Amount | None = None
    reasoning_per_mtok: Amount | None = None
    cache_write_per_mtok: Amount | None = None
    long_context_threshold: StrictInt | None = Field(None, gt=0)
    long_context_input_per_mtok: Amount | None = None
    long_context_output_per_mtok: Amount | None = None
    long_context_cached_input_per_mtok: Amount | None = None
    long_context_cache_write_per_mtok: Amount | None = None
    source: str | None = None

    @field_validator(*PRICE_FIELDS)
    @classmethod
    def _price(cls, value: str | None) -> str | None:
        if value is not None:
            usd_per_mtok_to_micro(value)
        return value


class CatalogFile(_Item):
    settings: SettingsSection
    plans: list[PlanItem]
    packs: list[PackItem] = []
    features: list[FeatureItem]
    agents: list[AgentItem] = []
    models: list[ModelItem] = []

    @model_validator(mode="after")
    def _references(self) -> CatalogFile:
        features = {f.id for f in self.features}
        agents = {a.id for a in self.agents}
        for kind, items in (
            ("plan", self.plans),
            ("pack", self.packs),
            ("feature", self.features),
            ("agent", self.agents),
        ):
            ids = [i.id for i in items]
            if len(ids) != len(set(ids)):
                raise ValueError(f"duplicate {kind} ids")
        for plan in self.plans:
            if missing := set(plan.features) - features:
                raise ValueError(f"plan {plan.id!r} names unknown features {sorted(missing)}")
            if missing := set(plan.agents) - agents:
                raise ValueError(f"plan {plan.id!r} names unknown agents {sorted(missing)}")
        keys = {"credits"} | {k for p in self.plans for k in p.allowances}
        keys |= {k for f in self.features for k in (f.balance_key, f.requests_key) if k}
        for pack in self.packs:
            if pack.key not in keys:
                raise ValueError(
                    f"pack {pack.id!r} tops up unknown key {pack.key!r}: use 'credits' or a key a plan's "
                    f"allowances or a feature's balance_key names ({', '.join(sorted(keys))})"
                )
        if not any(p.id == "free" for p in self.plans):
            raise ValueError("a plan with id 'free' is required: new accounts start on it")
        return self


def load_catalog(path: Path = DEFAULT_CATALOG) -> CatalogFile:
    with open(path, "rb") as handle:
        return CatalogFile.model_validate(tomllib.load(handle))


def to_document(catalog: CatalogFile) -> dict[str, Any]:
    """The integer document the creditgate_apply_catalog RPC takes."""
    s = catalog.settings
    markup_bps = to_micro(s.markup) // 100
    return {
        "settings": {
            "credits_per_usd": s.credits_per_usd,
            "markup_bps": markup_bps,
            "welcome_credits": to_micro(s.welcome_credits, allow_zero=True),
            "currency": s.currency,
            "guest_exchanges_per_session": s.guest_exchanges_per_session,
            "guest_exchanges_per_ip_per_day": s.guest_exchanges_per_ip_per_day,
            "guest_session_ttl_hours": s.guest_session_ttl_hours,
            "low_balance_credits": to_micro(s.low_balance_credits, allow_zero=True),
            "reservation_ttl_seconds": s.reservation_ttl_seconds,
            "abuse_sessions_per_ip": s.abuse_sessions_per_ip,
            "periods": s.periods,
            "alert_daily_cost_pico_usd": usd_to_pico(s.alert_daily_cost_usd),
            "allowance_notices": sorted(set(s.allowance_notices)),
            "alert_daily_denials": s.alert_daily_denials,
        },
        "plans": [
            {
                "id": p.id,
                "name": p.name,
                "price_minor": major_to_minor(p.price, s.currency),
                "currency": s.currency,
                "billing_interval": p.interval,
                "stripe_price_id": p.stripe_price_id,
                "allowances": {k: to_micro(v, allow_zero=True) for k, v in p.allowances.items()},
                "features": p.features,
                "agents": p.agents,
                "rate_limit_per_minute": p.rate_limit_per_minute,
                "rate_limit_per_member": p.rate_limit_per_member,
                "display_order": p.display_order,
            }
            for p in catalog.plans
        ],
        "packs": [
            {
                "id": p.id,
                "name": p.name,
                "price_minor": major_to_minor(p.price, p.currency),
                "currency": p.currency,
                "key": p.key,
                "credits": to_micro(p.credits),
                "bonus_credits": to_micro(p.bonus_credits, allow_zero=True),
                "stripe_price_id": p.stripe_price_id,
                "display_order": p.display_order,
            }
            for p in catalog.packs
        ],
        "features": [
            {
                "id": f.id,
                "name": f.name,
                "kind": f.kind,
                "balance_key": f.balance_key,
                "pricing_mode": f.pricing.mode if f.pricing else None,
                "credits_per_unit": to_micro(f.pricing.credits_per_unit, allow_zero=True)
                if f.pricing and f.pricing.credits_per_unit is not None
                else None,
                "requests_key": f.requests_key,
            }
            for f in catalog.features
        ],
        "agents": [
            {
                "id": a.id,
                "name": a.name,
                "description": a.description,
                "display_order": a.display_order if a.display_order is not None else n,
            }
            for n, a in enumerate(catalog.agents)
        ],
        "models": [
            {
                "provider": m.provider,
                "model": m.model,
                "long_context_threshold": m.long_context_threshold,
                "source": m.source,
                **{
                    k: usd_per_mtok_to_micro(getattr(m, k)) if getattr(m, k) is not None else None for k in PRICE_FIELDS
                },
            }
            for m in catalog.models
        ],
    }


def apply_catalog(ledger, path: Path = DEFAULT_CATALOG) -> dict[str, Any]:
    document = to_document(load_catalog(path))
    answer = ledger.apply_catalog(document)
    # Idempotent like the rest; its own call, so the catalog RPC need not change.
    forwarded = ("periods", "alert_daily_cost_pico_usd", "allowance_notices", "alert_daily_denials")
    settings = {k: document["settings"][k] for k in forwarded}
    settings["pack_keys"] = {p["id"]: p["key"] for p in document["packs"]}
    settings["member_rate_limits"] = {p["id"]: p["rate_limit_per_member"] for p in document["plans"]}
    return answer | ledger.rpc("creditgate_apply_settings", settings)
