"""Field types shared by every domain's request schemas."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StrictInt, model_validator

ACCOUNT_ID = re.compile(r"[A-Za-z0-9_.:@|-]{1,128}")
# Guests' rows live under "guest:<session id>" (their gate calls' idempotency keys, deleted
# with the session): an account of that name would share them. "operator" is the account
# id of the operator's alerts.
GUEST_PREFIX = "guest:"
OPERATOR = "operator"
# A guest's X-Session-Id (the app's own random id for a visitor).
GUEST_SESSION_ID = re.compile(r"[A-Za-z0-9._:-]{8,128}")


def reserved_id(value: str) -> str | None:
    """Why an id that looks like an account id cannot be one, or None."""
    if value.startswith(GUEST_PREFIX):
        return f"account ids must not start with {GUEST_PREFIX!r} (reserved for guest sessions)"
    if value == OPERATOR:
        return f"{OPERATOR!r} is reserved (the operator's alerts)"
    return None


def is_account_id(value: str) -> bool:
    return bool(ACCOUNT_ID.fullmatch(value)) and reserved_id(value) is None


def _account_id(value: str) -> str:
    if (why := reserved_id(value)) is not None:
        raise ValueError(why)
    return value


AccountId = Annotated[str, Field(pattern=f"^{ACCOUNT_ID.pattern}$"), AfterValidator(_account_id)]
GuestSessionId = Annotated[str, Field(pattern=f"^{GUEST_SESSION_ID.pattern}$")]


PG_MAX_OFFSET = timedelta(hours=16)


def _in_utc(value: datetime) -> datetime:
    # PostgreSQL takes UTC offsets up to ±15:59 where Python takes ±23:59 (a "-18:26" was a
    # 500): such a time is given to the database in UTC. Others stay as sent, so a request
    # body stored for idempotency before this reads the same (a replay is not a 409).
    offset = value.utcoffset()
    if offset is None or abs(offset) < PG_MAX_OFFSET:
        return value
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is out of range") from None


Timestamp = Annotated[datetime, AfterValidator(_in_utc)]
AwareTimestamp = Annotated[AwareDatetime, AfterValidator(_in_utc)]
Slug = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.:-]*$")]
ModelName = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_./:@+-]+$")]
IdempotencyKey = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")]
Quantity = Annotated[StrictInt, Field(ge=1, le=1_000_000_000)]

# A billion tokens in one call is far beyond any context window; the bound keeps a
# corrupted or hostile count from turning into an absurd charge or an overflow in SQL.
MAX_TOKENS = 1_000_000_000
# Strict: 1.5, 12.0, True, "12" and NaN are refused rather than coerced, because a count
# that arrives as anything but an integer means the caller sent the wrong object.
TokenCount = Annotated[StrictInt, Field(ge=0, le=MAX_TOKENS)]


MAX_DEPTH = 32  # of a body's nesting: free-form parts (metadata) included


def check_json(value: Any) -> None:
    """PostgreSQL text and jsonb cannot hold U+0000, so a string with one would fail in the
    database; and a body nested hundreds deep would overflow whatever walks it recursively
    later (the serializer). Both are refused with the rest of the input instead. Walked
    with a stack, not recursion."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise ValueError("text must not contain the NUL character (U+0000)")
        elif isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                raise ValueError(f"the body may nest at most {MAX_DEPTH} levels deep")
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


class Strict(BaseModel):
    """Request bodies: unknown fields are refused, not ignored, so typos surface."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _plain_json(cls, data: Any) -> Any:
        check_json(data)
        return data


class Balance(BaseModel):
    """The balance a gate answer shows (API.md: key and available; a gate that passed has no debt)."""

    key: str
    available: str
