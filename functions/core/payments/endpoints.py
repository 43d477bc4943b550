"""Checkout (with the offline payment pages), the billing portal, and the Stripe webhook."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse

from functions.core.deps import AccountHeader, LedgerDep, SettingsDep, SignedInDep, resolve_account
from functions.core.errors import NotFound
from functions.core.openapi import SIGNED_IN, problem
from functions.core.payments import simulated
from functions.core.payments.checkout import SIMULATED_PREFIX, create_checkout, open_billing_portal
from functions.core.payments.provider import payments_mode
from functions.core.payments.schemas import CheckoutAnswer, CheckoutRequest, PortalAnswer, PortalRequest, WebhookAnswer
from functions.core.payments.webhook import handle_webhook
from functions.core.schemas import IdempotencyKey

checkout_router = APIRouter(tags=["checkout"], responses=SIGNED_IN)
webhook_router = APIRouter(tags=["webhook"])
SessionPath = Annotated[str, Path(min_length=8, max_length=100, pattern=r"^[A-Za-z0-9_-]+$")]


@checkout_router.post(
    "/v1/checkout",
    response_model=CheckoutAnswer,
    status_code=201,
    responses={
        200: {"model": CheckoutAnswer, "description": "replay of an Idempotency-Key: the same order"},
        409: problem("price_not_configured / already_subscribed / idempotency_conflict"),
        422: problem("unknown_pack / unknown_plan / invalid_request (return URL not allowed)"),
        502: problem("payment_provider_error: Stripe failed; nothing was charged"),
        503: problem("stripe_not_configured"),
    },
)
def checkout(
    body: CheckoutRequest,
    caller: SignedInDep,
    ledger: LedgerDep,
    settings: SettingsDep,
    response: Response,
    idempotency_key: Annotated[IdempotencyKey | None, Header(alias="Idempotency-Key")] = None,
    x_account_id: AccountHeader = None,
) -> dict:
    account_id = resolve_account(caller, ledger, body.account_id, x_account_id)
    answer = create_checkout(body, account_id, idempotency_key, settings, ledger)
    if answer["replayed"]:
        response.status_code = 200
    return answer


@checkout_router.get("/v1/checkout/complete", response_class=HTMLResponse, include_in_schema=False)
def checkout_complete() -> str:
    return _note("Thank you", "Your payment was received. Credits appear as soon as it is confirmed.")


@checkout_router.get("/v1/checkout/canceled", response_class=HTMLResponse, include_in_schema=False)
def checkout_canceled() -> str:
    return _note("Checkout canceled", "Nothing was charged.")


def _simulated_order(session_id: str, settings, ledger) -> dict:
    if payments_mode(settings) != "simulated" or not session_id.startswith(SIMULATED_PREFIX):
        raise NotFound("No simulated checkout here", code="checkout_not_found")
    return ledger.checkout_session(session_id)


@checkout_router.get("/v1/simulated-checkout/{session_id}", response_class=HTMLResponse, include_in_schema=False)
def simulated_checkout_page(session_id: SessionPath, ledger: LedgerDep, settings: SettingsDep) -> str:
    return simulated.page(_simulated_order(session_id, settings, ledger))


@checkout_router.post("/v1/simulated-checkout/{session_id}", include_in_schema=False)
def simulated_checkout_pay(session_id: SessionPath, ledger: LedgerDep, settings: SettingsDep) -> RedirectResponse:
    order = _simulated_order(session_id, settings, ledger)
    if order["status"] == "pending":
        secret = settings.stripe_webhook_secret or simulated.LOCAL_SECRET
        payload = simulated.event_payload(simulated.completed_event(order))
        handle_webhook(payload, simulated.sign(payload, secret), settings, ledger, secret=secret)
    target = (order["success_url"] or "").replace("{CHECKOUT_SESSION_ID}", session_id)
    return RedirectResponse(target, status_code=303)


@checkout_router.post(
    "/v1/billing-portal",
    response_model=PortalAnswer,
    status_code=201,
    responses={
        409: problem("no_stripe_customer: the account never paid through Stripe"),
        422: problem("invalid_request (return URL not allowed)"),
        502: problem("payment_provider_error: Stripe failed"),
        503: problem("stripe_not_configured (simulated payments have no portal)"),
    },
)
def billing_portal(
    body: PortalRequest,
    caller: SignedInDep,
    ledger: LedgerDep,
    settings: SettingsDep,
    x_account_id: AccountHeader = None,
) -> dict:
    account_id = resolve_account(caller, ledger, body.account_id, x_account_id)
    user_id = caller.user_id if caller.kind == "user" else None
    return open_billing_portal(account_id, user_id, body.return_url, settings, ledger)


@webhook_router.post(
    "/v1/webhooks/stripe",
    response_model=WebhookAnswer,
    responses={
        400: problem("invalid_signature (bad, missing or stale) / invalid_payload; nothing changed"),
        503: problem("stripe_not_configured: no STRIPE_WEBHOOK_SECRET"),
    },
    # The body is read raw (the signature covers its exact bytes), so it is described here.
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}},
)
async def stripe_webhook(request: Request, settings: SettingsDep, ledger: LedgerDep) -> dict:
    payload = await request.body()
    signature = request.headers.get("stripe-signature")
    return await run_in_threadpool(handle_webhook, payload, signature, settings, ledger)


def _note(title: str, text: str) -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
        f"<body style='font-family:system-ui,sans-serif;max-width:28rem;margin:4rem auto'>"
        f"<h1>{title}</h1><p>{text}</p></body></html>"
    )
