from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class BalanceLine(BaseModel):
    key: str
    available: str
    reserved: str
    debt: str
    allowance: str
    used_this_period: str = Field(description="charged to this key since period_start (credits as a decimal string)")
    period_start: str
    resets_at: str
    percent_used: float | None
    status: str


class BalanceAnswer(BaseModel):
    account_id: str
    plan: dict[str, str]
    balances: list[BalanceLine]
    low_balance: bool
    runway_days: float | None = Field(
        description="days the available credits last at this period's average daily spend; null when nothing was spent"
    )


class Transaction(BaseModel):
    id: int
    at: str
    kind: str
    key: str
    amount: str
    balance_after: str
    source: str | None = None
    usage_id: str | None = None
    external_ref: str | None = None
    feature: str | None = Field(None, description="a charge: the feature of its usage")
    agent: str | None = Field(None, description="a charge: the agent of its usage")
    model: str | None = Field(None, description="a charge: the model of its usage")
    reason: str | None = Field(None, description="a grant, or its expiry or claw-back: the grant's reason")


class Transactions(BaseModel):
    items: list[Transaction]
    next_cursor: str | None


class UsageGroup(BaseModel):
    group: str
    requests: int
    input_tokens: int
    output_tokens: int
    cost: str = Field(description="credits charged")
    cost_usd: str
    other_keys: dict[str, str] = Field(
        default_factory=dict, description="what was charged to other balance keys (tokens, requests, …), by key"
    )


class UsageTotals(BaseModel):
    requests: int
    input_tokens: int
    output_tokens: int
    cost: str = Field(description="credits charged")
    cost_usd: str
    other_keys: dict[str, str] = Field(default_factory=dict)


class UsageSummary(BaseModel):
    group_by: str
    items: list[UsageGroup]
    totals: UsageTotals


class Order(BaseModel):
    order_id: str
    kind: str
    item: str
    status: str
    amount: str
    currency: str
    credits: str = Field(description="what the order grants, in units of its key")
    key: str | None = Field(None, description="a pack order: the balance key it tops up")
    checkout_session_id: str | None = None
    created_at: str
    updated_at: str


class Orders(BaseModel):
    items: list[Order]


class CatalogPlan(BaseModel):
    id: str
    name: str
    price: str
    currency: str
    interval: str
    allowances: dict[str, str]
    features: list[str]
    agents: list[str]
    rate_limit_per_minute: int
    rate_limit_per_member: int = Field(0, description="requests a minute per member of an account; 0: none")


class CatalogPack(BaseModel):
    id: str
    name: str
    price: str
    currency: str
    key: str = Field("credits", description="the balance key the pack tops up: credits, or a plan's quota")
    credits: str
    bonus_credits: str
    buys: dict[str, int] = Field(
        default_factory=dict,
        description="units of each per-unit action of the pack's key that its credits and bonus pay for "
        "(vm_minute: 2000 is about 33 hours of VM time)",
    )


class CatalogFeature(BaseModel):
    id: str
    name: str
    kind: str
    balance_key: str | None
    pricing: dict[str, str] | None
    requests_key: str | None = None


class Catalog(BaseModel):
    plans: list[CatalogPlan]
    packs: list[CatalogPack]
    features: list[CatalogFeature]
    agents: list[dict[str, Any]]


class Price(BaseModel):
    provider: str
    model: str
    input_per_mtok: str
    output_per_mtok: str
    cached_input_per_mtok: str | None
    reasoning_per_mtok: str | None = None
    cache_write_per_mtok: str | None = None
    long_context_threshold: int | None = None
    long_context_input_per_mtok: str | None = None
    long_context_output_per_mtok: str | None = None
    source: str | None = None


class Prices(BaseModel):
    items: list[Price]
    credits_per_usd: int
    markup: str


class Health(BaseModel):
    status: str
    database: str
    schema_version: str | None
