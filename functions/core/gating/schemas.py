from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_serializer, model_validator

from functions.core.schemas import AccountId, Balance, IdempotencyKey, ModelName, Quantity, Slug, Strict, TokenCount


class Estimate(Strict):
    """What the call will use: tokens, for a feature priced by model or by tokens, or a
    quantity, for one priced per unit. (One model rather than a union of two, so a bad
    value is named plainly: "estimate.quantity: … greater than or equal to 1".)"""

    input_tokens: TokenCount = 0
    max_output_tokens: TokenCount = 0
    # Not `| None`: an explicit null is refused, as before (the default is never validated).
    quantity: Quantity = None  # type: ignore[assignment]

    @model_validator(mode="after")
    def _tokens_or_quantity(self) -> Estimate:
        tokens = {"input_tokens", "max_output_tokens"} & self.model_fields_set
        if tokens and self.quantity is not None:
            raise ValueError("an estimate names tokens or a quantity, not both")
        # `{}` would price the call at nothing.
        if not tokens and self.quantity is None:
            raise ValueError("an estimate names input_tokens, max_output_tokens or quantity")
        return self

    @model_serializer(mode="wrap")
    def _one_shape(self, handler: Any) -> dict[str, Any]:
        # The ledger reads which keys are present: {"quantity"} or both token counts.
        if self.quantity is not None:
            return {"quantity": self.quantity}
        data = handler(self)
        data.pop("quantity", None)
        return data


class GateRequest(Strict):
    account_id: AccountId | None = None
    feature: Slug
    agent: Slug | None = None
    model: ModelName | None = None
    provider: Slug | None = None
    estimate: Estimate | None = None
    mode: Literal["check", "reserve", "commit"] | None = None
    ttl_seconds: int | None = Field(None, ge=10, le=86_400, strict=True)
    idempotency_key: IdempotencyKey | None = None
    user_id: str | None = Field(
        None,
        max_length=128,
        description="service key only: the member of an org account who made the call, kept on a commit's "
        "usage row (a user's JWT names its own user)",
    )
    _mode_given: bool = PrivateAttr(False)

    @model_validator(mode="after")
    def _mode_and_key(self) -> GateRequest:
        self._mode_given = self.mode is not None
        if self.mode is None:
            self.mode = "reserve" if self.estimate is not None else "check"
        if self.mode != "check" and not self.idempotency_key and self._mode_given:
            raise ValueError(f"idempotency_key is required for mode {self.mode!r}")
        return self


class Reservation(BaseModel):
    id: str
    amount: str
    expires_at: str


class GateAllowed(BaseModel):
    allowed: Literal[True]
    account_id: str | None
    plan: str | None
    feature: str
    agent: str | None = None
    model: str | None = None
    mode: str
    cost_estimate: str
    reservation: Reservation | None
    charged: str | None = None
    usage_id: str | None = None
    balance: Balance | None
    warnings: list[str]
    not_enforced: dict | None = Field(
        None,
        description="CREDITGATE_ENFORCEMENT=monitor: the denial (problem) this call would have got. Nothing "
        "was reserved: a commit was recorded as usage (debt where short); after a reserve, record the usage",
    )


class GateDenied(BaseModel):
    """The problem+json body of a 402 / 403 / 429 denial."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    allowed: Literal[False] = Field(
        False, description="on a denial of the call; absent when the caller may not ask at all (403 forbidden)"
    )
    key: str | None = Field(None, description="the balance that was short (402)")
    required: str | None = None
    available: str | None = None
    packs: list[dict] | None = None
    upgrade_to: list[str] | None = None
    resets_at: str | None = Field(None, description="quota_exhausted: when the period's allowance comes back")
    retry_after: int | None = None
    limit: int | None = Field(None, description="rate_limited: the requests a minute allowed")
    scope: Literal["account", "member", "session", "ip"] | None = Field(
        None,
        description="rate_limited: whose window is full, the account's or the calling member's; "
        "guest_limit_reached: the guest session's or the address's",
    )


class Entitlement(BaseModel):
    """One feature or agent: allowed, or why not and what would help. Features also say
    their `kind`, `balance_key` and `available`; a quota says `key` and `resets_at`."""

    model_config = ConfigDict(extra="allow")

    allowed: bool
    reason: str | None = Field(
        None,
        description="feature_not_in_plan / agent_not_in_plan / debt_outstanding / insufficient_credits / "
        "quota_exhausted / guest_limit_reached",
    )
    upgrade_to: list[str] | None = None
    scope: Literal["session", "ip"] | None = Field(None, description="guest_limit_reached: the limit used up")
    not_enforced: str | None = Field(
        None, description="CREDITGATE_ENFORCEMENT=monitor: the denial the gate lets through (allowed is true)"
    )


class GuestAllowance(BaseModel):
    exchanges_left: int = Field(description="gate calls this guest has left (the session's and the address's)")
    scope: str | None = Field(None, description="session / ip: the limit that is used up")


class Entitlements(BaseModel):
    account_id: str | None = Field(None, description="absent for a guest")
    plan: dict
    status: str
    features: dict[str, Entitlement]
    agents: dict[str, Entitlement]
    guest: GuestAllowance | None = Field(None, description="a guest's exchanges left (guests only)")


class ReleaseAnswer(BaseModel):
    id: str
    status: str
    released: str
