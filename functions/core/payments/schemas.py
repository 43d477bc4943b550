from __future__ import annotations

from pydantic import BaseModel, Field, model_validator

from functions.core.schemas import AccountId, Slug, Strict

ReturnUrl = Field(None, min_length=8, max_length=2000)


class CheckoutRequest(Strict):
    pack: Slug | None = None
    plan: Slug | None = None
    account_id: AccountId | None = None
    success_url: str | None = ReturnUrl
    cancel_url: str | None = ReturnUrl

    @model_validator(mode="after")
    def _one_item(self) -> CheckoutRequest:
        if (self.pack is None) == (self.plan is None):
            raise ValueError("send exactly one of pack or plan")
        return self

    @property
    def kind(self) -> str:
        return "pack" if self.pack else "plan"

    @property
    def item(self) -> str:
        return self.pack or self.plan  # type: ignore[return-value]


class CheckoutAnswer(BaseModel):
    order_id: str
    checkout_url: str
    session_id: str
    kind: str
    item: str
    status: str
    replayed: bool = False


class PortalRequest(Strict):
    account_id: AccountId | None = None
    return_url: str | None = Field(None, min_length=8, max_length=2000, description="where Stripe sends the user back")


class PortalAnswer(BaseModel):
    account_id: str
    url: str = Field(description="Stripe's billing portal for this account: redirect the user there")


class WebhookAnswer(BaseModel):
    received: bool
    duplicate: bool
    handled: bool
