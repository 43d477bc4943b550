from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field

from functions.core.money import Credits, CreditsOrZero
from functions.core.schemas import Slug, Strict, Timestamp


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
    expires_at: Timestamp | None = None
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
