from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field

from functions.core.money import Credits, CreditsOrZero
from functions.core.schemas import Slug, Strict


def _not_for_guests(plan: str) -> str:
    if plan == "anonymous":
        raise ValueError("the anonymous plan describes guests; an account cannot be on it")
    return plan


AccountPlan = Annotated[Slug, AfterValidator(_not_for_guests)]


class AccountPut(Strict):
    plan: AccountPlan = "free"
    owner: Literal["user", "org"] = "user"
    email: str | None = Field(None, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")


class MemberPut(Strict):
    role: Literal["member", "owner"] = "member"


class PlanPut(Strict):
    plan: AccountPlan


class DebitPost(Strict):
    amount: Credits
    key: Slug = "credits"
    reason: str = Field(min_length=1, max_length=500)


class DebitAnswer(BaseModel):
    account_id: str
    key: str
    amount: str
    debt_added: str = Field(description="what the balance could not pay: it became debt")
    reason: str | None
    balance: dict
    replayed: bool = False


class AllowancesPut(Strict):
    allowances: dict[Slug, CreditsOrZero] | None = Field(
        description="per balance key, the amount each period grants instead of the plan's; replaces the "
        "whole set of overrides (null clears them)"
    )
    reason: str = Field(min_length=1, max_length=500)


class HoldLift(Strict):
    reason: str = Field(min_length=1, max_length=500)


class AccountChange(BaseModel):
    id: int
    at: str
    field: str = Field(description="plan, status or allowances (the overrides, as JSON of decimal strings)")
    from_: str | None = Field(alias="from")
    to: str | None = Field(description="null: allowance overrides cleared")
    reason: str | None


class AccountHistory(BaseModel):
    account_id: str
    items: list[AccountChange]


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
    churn_rate: str | None = Field(description="churned / paying_accounts_at_start")
    conversion: Conversion
    revenue_minor: int = Field(description="packs and subscriptions, net of refunds")
    cost_usd: str = Field(description="provider cost of the window's usage")
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
    revenue_minor: dict[str, int] = Field(description="packs, subscriptions (every paid invoice)")
    accounts_by_plan: dict[str, int]
    top_accounts: list[dict[str, Any]] = Field(description="the 20 that spent most credits: requests, cost, cost_usd")
    accounts_over_80_percent: list[dict[str, Any]] = Field(description="account_id, key, used, allowance")
    top_agents: list[dict[str, Any]]
    top_features: list[dict[str, Any]]
    top_models: list[dict[str, Any]]
    guest_abuse: list[dict[str, Any]] = Field(description="IPs over abuse_sessions_per_ip sessions a day")
    kpis: Kpis


class MemberAnswer(BaseModel):
    account_id: str
    user_id: str
    role: str


class MemberRemoved(BaseModel):
    account_id: str
    user_id: str
    removed: bool


class GrantPost(Strict):
    amount: Credits
    key: Slug = "credits"
    source: Literal["promo", "adjustment"]
    expires_at: datetime | None = None
    reason: str = Field(min_length=1, max_length=500)


class AccountAnswer(BaseModel):
    account_id: str
    owner: str
    email: str | None
    status: str
    plan: dict[str, str]
    period_start: str
    period_end: str
    balances: list[dict]
    created: bool | None = None


class Member(BaseModel):
    user_id: str
    role: str


class AccountDetails(AccountAnswer):
    members: list[Member]


class AccountListItem(BaseModel):
    account_id: str
    owner: str
    email: str | None
    status: str
    plan: str
    billing_source: str = Field(description="local, or stripe when a subscription bills it")
    created_at: str
    period_end: str


class AccountList(BaseModel):
    items: list[AccountListItem]
    next_cursor: str | None


class AllowancesAnswer(AccountAnswer):
    allowance_overrides: dict[str, str] | None
    allowances: dict[str, str] = Field(description="what each period grants now: the plan's with the overrides")


class GrantAnswer(BaseModel):
    grant_id: int
    account_id: str
    amount: str
    key: str
    source: str
    expires_at: str | None
    reason: str | None
    balance: dict
    replayed: bool = False
