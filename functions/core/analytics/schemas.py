"""The operator's analytics: usage, revenue, the funnel and the KPIs."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Conversion(BaseModel):
    guest_sessions: int
    new_accounts: int
    free_to_paid: int = Field(description="accounts that moved from a free plan to a priced one")


class PlanTokens(BaseModel):
    accounts: int = Field(description="accounts on the plan that used anything in the window")
    avg_tokens: int = Field(description="their input + output tokens per account, rounded down")


class Kpis(BaseModel):
    """The seed's success metrics. Money in the currency's minor units; ratios as decimal
    strings with four places, null when there is nothing to divide by."""

    mrr_minor: int = Field(
        description="monthly price of the plan of every account on a priced plan that pays for it (a Stripe "
        "subscription, or billed locally); a yearly price counts a twelfth, rounded down per account"
    )
    arr_minor: int = Field(description="12 × mrr_minor")
    mrr_minor_by_billing: dict[str, int] = Field(description="stripe, local (a plan an operator set or sold offline)")
    paying_accounts: int = Field(description="the accounts mrr_minor counts")
    paying_accounts_at_start: int = Field(description="accounts on a priced plan when the window began")
    churned: int = Field(description="accounts that moved from a priced plan to a free one in the window")
    churned_from_start: int = Field(description="of those, the accounts that were paying when the window began")
    churn_rate: str | None = Field(description="churned_from_start / paying_accounts_at_start")
    conversion: Conversion
    revenue_minor: int = Field(description="packs and subscriptions, net of refunds")
    cost_usd: str = Field(description="provider cost of the window's usage")
    guest_cost_usd: str = Field(description="of that, the cost of guests' calls (reported with guest_session_id)")
    cost_minor: int | None = Field(
        description="cost_usd in minor units, rounded up; null unless the currency is usd (no exchange rate)"
    )
    margin_minor: int | None = Field(description="revenue_minor − cost_minor")
    margin_share: str | None = Field(description="margin_minor / revenue_minor")
    tokens_per_account_by_plan: dict[str, PlanTokens] = Field(description="by the account's current plan")


class Metrics(BaseModel):
    """Operator analytics over the last `days` (amounts as decimal strings of credits,
    cost_usd as provider USD, revenue in the currency's minor units)."""

    since: str
    daily: list[dict[str, Any]] = Field(
        description="per day: requests, input_tokens, output_tokens, cost, cost_usd, revenue_minor"
    )
    funnel: list[dict[str, Any]] = Field(
        description="per day: guest_sessions, guest_exchanges, new_accounts, upgrades, downgrades"
    )
    currency: str
    revenue_minor: dict[str, int] = Field(description="packs, subscriptions (every paid invoice), net of refunds")
    accounts_by_plan: dict[str, int]
    top_accounts: list[dict[str, Any]] = Field(description="the 20 that spent most credits: requests, cost, cost_usd")
    accounts_over_80_percent: list[dict[str, Any]] = Field(description="account_id, key, used, allowance")
    top_agents: list[dict[str, Any]]
    top_features: list[dict[str, Any]]
    top_models: list[dict[str, Any]]
    guest_abuse: list[dict[str, Any]] = Field(description="IPs over abuse_sessions_per_ip sessions a day")
    kpis: Kpis
