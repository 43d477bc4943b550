"""Field types shared by every domain's request schemas."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictInt

AccountId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@|-]+$")]
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


class Strict(BaseModel):
    """Request bodies: unknown fields are refused, not ignored, so typos surface."""

    model_config = ConfigDict(extra="forbid")


class Balance(BaseModel):
    """The balance a gate answer shows (API.md: key and available; a gate that passed has no debt)."""

    key: str
    available: str
