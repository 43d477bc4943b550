"""A checkout: the order first (one RPC), then Stripe's Checkout Session for it (or the
offline one), then the session attached to the order (one RPC)."""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import urlsplit

from functions.core.errors import Forbidden, InvalidRequest, ProblemError, ServiceUnavailable
from functions.core.ledger import Ledger
from functions.core.payments import provider
from functions.core.payments.schemas import CheckoutRequest
from functions.core.settings import Settings

DEFAULT_PORTS = {"http": 80, "https": 443}
SIMULATED_PREFIX = "cs_sim_"


def origin_of(url: str) -> str | None:
    """scheme://host[:port] of an absolute http(s) URL; None for anything a browser could
    read differently than we do (credentials, backslashes, spaces, other schemes)."""
    if any(c in url for c in "\\ \t\r\n") or any(ord(c) < 32 for c in url):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.username or parts.password:
        return None
    netloc = parts.hostname if port in (None, DEFAULT_PORTS[parts.scheme]) else f"{parts.hostname}:{port}"
    return f"{parts.scheme}://{netloc}"


def return_urls(settings: Settings, success_url: str | None, cancel_url: str | None) -> tuple[str, str]:
    """Where the payer's browser goes afterwards: only to the configured origins (or our
    own public URL), so checkout cannot be used as an open redirect."""
    base = settings.public_url.rstrip("/")
    success_url = success_url or f"{base}/v1/checkout/complete?session_id={{CHECKOUT_SESSION_ID}}"
    cancel_url = cancel_url or f"{base}/v1/checkout/canceled"
    require_allowed(settings, {"success_url": success_url, "cancel_url": cancel_url})
    return success_url, cancel_url


def require_allowed(settings: Settings, urls: dict[str, str]) -> None:
    allowed = {origin_of(o) for o in [*settings.allowed_origin_list, settings.public_url.rstrip("/")]} - {None}
    errors = [
        {"loc": ["body", name], "msg": "must be an http(s) URL on one of the allowed origins", "type": "value_error"}
        for name, url in urls.items()
        if origin_of(url) not in allowed
    ]
    if errors:
        raise InvalidRequest(
            f"{errors[0]['loc'][1]}: not on an allowed origin (CREDITGATE_ALLOWED_ORIGINS)", errors=errors
        )


def open_billing_portal(
    account_id: str, user_id: str | None, return_url: str | None, settings: Settings, ledger: Ledger
) -> dict[str, Any]:
    """Stripe's customer portal for the account's Stripe customer: where a subscriber
    changes or cancels the plan; the webhook applies what they do there. A user opens it
    for their own account or for an org they own (a member may use it, not cancel it)."""
    if provider.payments_mode(settings) != "stripe":
        raise ServiceUnavailable(
            "The billing portal is Stripe's: set STRIPE_SECRET_KEY (simulated payments have none)",
            code="stripe_not_configured",
            title="Stripe is not configured",
        )
    return_url = return_url or settings.public_url.rstrip("/")
    require_allowed(settings, {"return_url": return_url})
    billing = ledger.billing_customer(account_id, user_id)
    if user_id is not None and user_id != account_id and billing["role"] != "owner":
        raise Forbidden("Only an owner of the account manages its billing", code="forbidden")
    customer = billing["stripe_customer_id"]
    if not customer:
        raise ProblemError(
            "The account has not paid through Stripe yet, so there is no billing to manage",
            status=409,
            code="no_stripe_customer",
            title="No Stripe customer",
            account_id=account_id,
        )
    return {"account_id": account_id, "url": provider.create_portal_session(settings, customer, return_url)}


def answer(order: dict[str, Any], replayed: bool) -> dict[str, Any]:
    return {
        "order_id": order["order_id"],
        "checkout_url": order["checkout_url"],
        "session_id": order["session_id"],
        "kind": order["kind"],
        "item": order["item"],
        "status": order["status"],
        "replayed": replayed,
    }


def create_checkout(
    body: CheckoutRequest, account_id: str, idempotency_key: str | None, settings: Settings, ledger: Ledger
) -> dict[str, Any]:
    mode = provider.payments_mode(settings)
    if mode is None:
        raise provider.stripe_not_configured()
    success_url, cancel_url = return_urls(settings, body.success_url, body.cancel_url)
    order = ledger.create_order(
        {
            "account_id": account_id,
            "kind": body.kind,
            "item": body.item,
            "idempotency_key": idempotency_key,
            "success_url": success_url,
            "cancel_url": cancel_url,
            "require_price": mode == "stripe",
        }
    )
    if order["session_id"] and order["checkout_url"]:
        return answer(order, order["replayed"])
    try:
        if mode == "stripe":
            session_id, url = _stripe_session(order, settings, ledger)
        else:
            session_id = SIMULATED_PREFIX + secrets.token_urlsafe(24)
            url = f"{settings.public_url.rstrip('/')}/v1/simulated-checkout/{session_id}"
    except ProblemError:
        if idempotency_key is None:
            # Nobody can retry this order: say so in the order list instead of leaving it pending.
            ledger.attach_checkout({"order_id": order["order_id"], "failed": True})
        raise
    attached = ledger.attach_checkout({"order_id": order["order_id"], "session_id": session_id, "checkout_url": url})
    return answer(attached, order["replayed"])


def _stripe_session(order: dict[str, Any], settings: Settings, ledger: Ledger) -> tuple[str, str]:
    kind, item, account_id = order["kind"], order["item"], order["account_id"]
    if not order["stripe_price_id"]:
        raise ProblemError(
            f"The {kind} {item!r} has no stripe_price_id in the catalog",
            status=409,
            code="price_not_configured",
            title="Price not configured",
        )
    customer = order["stripe_customer_id"]
    if not customer:
        created = provider.create_customer(settings, account_id, order["email"])
        customer = ledger.set_stripe_customer(account_id, created)
    metadata = {"account_id": account_id, "order_id": order["order_id"], kind: item}
    params: dict[str, Any] = {
        "mode": "payment" if kind == "pack" else "subscription",
        "line_items": [{"price": order["stripe_price_id"], "quantity": 1}],
        "customer": customer,
        "client_reference_id": account_id,
        "metadata": metadata,
        "success_url": order["success_url"],
        "cancel_url": order["cancel_url"],
    }
    if kind == "pack":
        params["payment_intent_data"] = {"metadata": metadata}
    else:
        params["subscription_data"] = {"metadata": metadata}
    # The order stands for the caller's Idempotency-Key, so this key repeats exactly when
    # the caller's does (and cannot collide across accounts, as a raw caller key could).
    return provider.create_checkout_session(settings, params, f"creditgate-checkout-{order['order_id']}")
