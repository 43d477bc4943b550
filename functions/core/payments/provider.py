"""The Stripe adapter. stripe-python is imported here, on first use, never at module import:
the gate and the other functions must not pay for it at cold start."""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from typing import Any

from functions.core.errors import ProblemError, ServiceUnavailable
from functions.core.settings import Settings

logger = logging.getLogger("creditgate.payments")

_clients: dict[tuple[str, str | None], Any] = {}
_lock = threading.Lock()


class PaymentProviderError(ProblemError):
    status, code, title = 502, "payment_provider_error", "The payment provider failed"


def stripe_not_configured() -> ProblemError:
    return ServiceUnavailable(
        "Payments are not configured: set STRIPE_SECRET_KEY, or CREDITGATE_PAYMENTS=simulated for local runs",
        code="stripe_not_configured",
        title="Stripe is not configured",
    )


def payments_mode(settings: Settings) -> str | None:
    """'stripe', 'simulated', or None (checkout unavailable). Simulated payments credit
    without money, so outside `make dev` they must be asked for by name."""
    if settings.payments == "simulated":
        return "simulated"
    if settings.stripe_secret_key:
        return "stripe"
    if settings.payments is None and settings.environment == "development":
        return "simulated"
    return None


def stripe_client(settings: Settings) -> Any:
    """One StripeClient per key and API base, shared by the warm instance (it holds no
    per-caller state). Retries are safe: every create carries an idempotency key."""
    if not settings.stripe_secret_key:
        raise stripe_not_configured()
    key = (settings.stripe_secret_key, settings.stripe_api_base)
    with _lock:
        client = _clients.get(key)
        if client is None:
            import stripe

            options: dict[str, Any] = {"max_network_retries": 2}
            if settings.stripe_api_base:
                options["base_addresses"] = {"api": settings.stripe_api_base}
            client = _clients[key] = stripe.StripeClient(settings.stripe_secret_key, **options)
    return client


@contextmanager
def provider_call(action: str):
    """Stripe's failures become a 502 problem, logged with Stripe's request id; its
    message is not echoed (it can name keys and internal ids)."""
    import stripe

    try:
        yield
    except stripe.StripeError as error:
        logger.warning("stripe: %s failed: %r", action, error)
        raise PaymentProviderError(
            f"Stripe could not {action}",
            provider_status=error.http_status,
            provider_code=error.code,
            provider_request_id=error.request_id,
        ) from None


def create_customer(settings: Settings, account_id: str, email: str | None) -> str:
    params: dict[str, Any] = {"metadata": {"account_id": account_id}}
    if email:
        params["email"] = email
    with provider_call("create the customer"):
        customer = stripe_client(settings).v1.customers.create(
            params=params, options={"idempotency_key": f"creditgate-customer-{account_id}"}
        )
    return customer.id


def create_checkout_session(settings: Settings, params: dict[str, Any], idempotency_key: str) -> tuple[str, str]:
    with provider_call("create the checkout session"):
        session = stripe_client(settings).v1.checkout.sessions.create(
            params=params, options={"idempotency_key": idempotency_key}
        )
    return session.id, session.url


def create_portal_session(settings: Settings, customer: str, return_url: str) -> str:
    # Not a payment and nothing to repeat safely or not: a fresh, short-lived session each time.
    with provider_call("open the billing portal"):
        session = stripe_client(settings).v1.billing_portal.sessions.create(
            params={"customer": customer, "return_url": return_url}
        )
    return session.url


def session_line_items(settings: Settings, session_id: str) -> dict[str, Any]:
    with provider_call("list the session's line items"):
        items = stripe_client(settings).v1.checkout.sessions.line_items.list(session_id, params={"limit": 10})
    return items.to_dict(for_json=True)


def retrieve_charge(settings: Settings, charge_id: str) -> dict[str, Any]:
    with provider_call("retrieve the charge"):
        return stripe_client(settings).v1.charges.retrieve(charge_id).to_dict(for_json=True)


def invoice_payments(settings: Settings, payment_intent: str) -> dict[str, Any]:
    params = {"payment": {"type": "payment_intent", "payment_intent": payment_intent}, "limit": 1}
    with provider_call("list the payment's invoice payments"):
        return stripe_client(settings).v1.invoice_payments.list(params=params).to_dict(for_json=True)


def retrieve_subscription(settings: Settings, subscription_id: str) -> dict[str, Any]:
    with provider_call("retrieve the subscription"):
        return stripe_client(settings).v1.subscriptions.retrieve(subscription_id).to_dict(for_json=True)
