"""Field types shared by every domain's request schemas."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictInt

AccountId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@|-]+$")]
Slug = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.:-]*$")]
ModelName = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_./:@+-]+$")]
IdempotencyKey = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")]
Quantity = Annotated[StrictInt, Field(ge=1, le=1_000_000_000)]


class Strict(BaseModel):
    """Request bodies: unknown fields are refused, not ignored, so typos surface."""

    model_config = ConfigDict(extra="forbid")


class Balance(BaseModel):
    key: str
    available: str
    debt: str | None = None
