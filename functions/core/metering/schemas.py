from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field, model_validator

from functions.core.pricing import USAGE_FORMATS, TokenUsage, UsageFormatError, normalize_usage
from functions.core.schemas import (
    AccountId,
    AwareTimestamp,
    GuestSessionId,
    IdempotencyKey,
    ModelName,
    Quantity,
    Slug,
    Strict,
)

MAX_METADATA_BYTES = 8_192
MAX_BACKDATE = timedelta(days=90)
CLOCK_SKEW = timedelta(minutes=5)  # the caller's clock may run a little ahead of ours


class UsageRequest(Strict):
    idempotency_key: IdempotencyKey
    account_id: AccountId | None = None
    reservation_id: UUID | None = None
    guest_session_id: GuestSessionId | None = Field(
        None,
        description="a guest's call (the X-Session-Id its gate call sent), instead of account_id: "
        "priced and kept for the operator's cost figures; nothing is charged",
    )
    feature: Slug
    agent: Slug | None = None
    model: ModelName | None = None
    provider: Slug | None = None
    usage: TokenUsage | None = None
    raw_usage: dict[str, Any] | None = None
    usage_format: Literal["openai", "openai_responses", "anthropic", "gemini"] | None = None
    quantity: Quantity | None = None
    session_id: str | None = Field(None, max_length=128)
    user_id: str | None = Field(None, max_length=128)
    metadata: dict[str, Any] | None = None
    occurred_at: AwareTimestamp | None = Field(
        None,
        description="when the call happened, for usage reported late or backfilled (up to 90 days back): "
        "the usage row is dated then; it is charged to the balance as it is now",
    )

    @model_validator(mode="after")
    def _one_account_and_one_usage(self) -> UsageRequest:
        if self.guest_session_id is not None:
            if self.account_id or self.reservation_id or self.user_id:
                raise ValueError(
                    "a guest's usage names guest_session_id only, not account_id, reservation_id or user_id"
                )
        elif not self.account_id and not self.reservation_id:
            raise ValueError("account_id, reservation_id or guest_session_id is required")
        if self.raw_usage is not None:
            if self.usage is not None:
                raise ValueError("send usage or raw_usage, not both")
            if self.usage_format is None:
                raise ValueError(f"raw_usage needs usage_format, one of {', '.join(USAGE_FORMATS)}")
            try:
                self.usage = normalize_usage(self.usage_format, self.raw_usage)
            except UsageFormatError as error:
                raise ValueError(f"raw_usage: {error}") from None
        if self.occurred_at is not None:
            now = datetime.now(UTC)
            if not now - MAX_BACKDATE <= self.occurred_at <= now + CLOCK_SKEW:
                raise ValueError("occurred_at must be within the last 90 days and not in the future")
        if self.metadata is not None and len(json.dumps(self.metadata)) > MAX_METADATA_BYTES:
            raise ValueError(f"metadata is limited to {MAX_METADATA_BYTES} bytes of JSON")
        return self

    def to_rpc(self) -> dict[str, Any]:
        request = self.model_dump(mode="json", exclude_none=True, exclude={"raw_usage", "usage_format"})
        if self.raw_usage is not None:
            request["metadata"] = {**(self.metadata or {}), "usage_format": self.usage_format}
        return request


class BatchRequest(Strict):
    # Each event is checked on its own (a bad one gets its own problem), so here only the list.
    events: list[Any] = Field(min_length=1, max_length=1000)

    @model_validator(mode="before")
    @classmethod
    def _plain_json(cls, data: Any) -> Any:  # each event is checked on its own
        return data


class UsageBalance(BaseModel):
    key: str
    available: str
    debt: str


class SettledReservation(BaseModel):
    id: str
    status: str
    released: str


class UsageAnswer(BaseModel):
    usage_id: str
    account_id: str | None = Field(description="null for a guest's usage")
    guest_session_id: str | None = None
    feature: str
    cost: str
    cost_usd: str
    balance: UsageBalance | None = Field(description="null for a guest's usage (guests have no balance)")
    reservation: SettledReservation | None
    overdraft: bool
    replayed: bool = False


class BatchAnswer(BaseModel):
    results: list[dict[str, Any]]
