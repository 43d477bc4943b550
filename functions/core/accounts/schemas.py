from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from functions.core.money import Credits
from functions.core.schemas import Slug, Strict


class AccountPut(Strict):
    plan: Slug = "free"
    owner: Literal["user", "org"] = "user"
    email: str | None = Field(None, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")


class MemberPut(Strict):
    role: Literal["member", "owner"] = "member"


class PlanPut(Strict):
    plan: Slug


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
