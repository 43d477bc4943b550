"""Stripe's events: the signature checked over the raw bytes, then one RPC that stores the
event and applies it in the same transaction."""

from __future__ import annotations

import json
import logging
from typing import Any

from functions.core.errors import InvalidRequest, ProblemError, ServiceUnavailable
from functions.core.ledger import Ledger
from functions.core.payments import provider
from functions.core.settings import Settings

logger = logging.getLogger("creditgate.payments")
TOLERANCE_SECONDS = 300
PAID_CHECKOUT = ("checkout.session.completed", "checkout.session.async_payment_succeeded")
DISPUTES = ("charge.dispute.created", "charge.dispute.closed")
# Outcomes where money may have moved and no account was credited or changed.
NEEDS_AN_OPERATOR = frozenset({"unknown_account", "unknown_pack", "unknown_plan", "unknown_price"})

# What the ledger keeps of each event it applies, in columns that refuse a null or a
# negative amount: a signed event without them is a payload problem (400), not a fault.
# Each: fields of data.object that must be a non-empty string, and amounts that must be a
# non-negative integer (or, where Stripe may leave them out, may be null).
SHAPES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    # (required strings, required amounts, amounts that may be null)
    "checkout.session.completed": (("id",), (), ("amount_total",)),
    "checkout.session.async_payment_succeeded": (("id",), (), ("amount_total",)),
    "checkout.session.async_payment_failed": (("id",), (), ()),
    "checkout.session.expired": (("id",), (), ()),
    "charge.refunded": (("id",), ("amount", "amount_refunded"), ()),
    "charge.dispute.created": (("id", "currency", "status"), ("amount",), ()),
    "charge.dispute.closed": (("id", "currency", "status"), ("amount",), ()),
    "invoice.paid": (("id",), (), ("amount_paid",)),
    "customer.subscription.created": (("id",), (), ()),
    "customer.subscription.updated": (("id",), (), ()),
    "customer.subscription.deleted": (("id",), (), ()),
}


class InvalidSignature(ProblemError):
    status, code, title = 400, "invalid_signature", "Invalid Stripe signature"


class InvalidPayload(ProblemError):
    status, code, title = 400, "invalid_payload", "Not a Stripe event"


def verify(payload: bytes, header: str | None, secret: str) -> dict[str, Any]:
    import stripe

    try:
        stripe.WebhookSignature.verify_header(payload, header, secret, tolerance=TOLERANCE_SECONDS)
    except stripe.SignatureVerificationError as error:
        raise InvalidSignature(str(error).split(". ")[0]) from None
    except UnicodeDecodeError:
        raise InvalidSignature("The body is not UTF-8") from None
    try:
        event = json.loads(payload)
    except ValueError:
        raise InvalidPayload("The body is not JSON") from None
    valid = (
        isinstance(event, dict)
        and isinstance(event.get("id"), str)
        and isinstance(event.get("type"), str)
        and isinstance(event.get("created"), int)
        and isinstance(event.get("livemode", False), bool)
        and isinstance(event.get("data"), dict)
        and isinstance(event["data"].get("object"), dict)
    )
    if not valid:
        raise InvalidPayload("Expected a Stripe event: id, type, created and data.object")
    if problem := shape_problem(event):
        raise InvalidPayload(f"{event['type']}: {problem}")
    return event


def _amount(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


def shape_problem(event: dict[str, Any]) -> str | None:
    """What an event the ledger applies lacks, or None."""
    strings, amounts, optional = SHAPES.get(event["type"], ((), (), ()))
    obj = event["data"]["object"]
    for name in strings:
        if not isinstance(obj.get(name), str) or not obj[name]:
            return f"data.object.{name} must be a non-empty string"
    for name in amounts:
        if not _amount(obj.get(name)):
            return f"data.object.{name} must be a non-negative integer"
    for name in optional:
        if obj.get(name) is not None and not _amount(obj[name]):
            return f"data.object.{name} must be a non-negative integer or null"
    return None


def expand(event: dict[str, Any], settings: Settings) -> None:
    """What the event leaves out and its handling needs, fetched from Stripe: the line
    items of a session without our metadata (a Payment Link), the subscription a
    checkout started (so that event alone puts the account on its plan), the charge of
    a dispute, and the invoice a refunded charge paid when the API version no longer names
    it on the charge (from 2025-03-31; a charge of ours for a pack carries its order id)."""
    if not settings.stripe_secret_key:
        return
    obj = event["data"]["object"]
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    if event["type"] in PAID_CHECKOUT and obj.get("mode") == "payment" and not metadata.get("pack"):
        event["expanded"] = {"line_items": provider.session_line_items(settings, obj["id"])}
    elif event["type"] in PAID_CHECKOUT and isinstance(obj.get("subscription"), str):
        _expand_subscription(event, settings, obj["subscription"])
    elif event["type"] in DISPUTES and isinstance(obj.get("charge"), str):
        event["expanded"] = {"charge": provider.retrieve_charge(settings, obj["charge"])}
    elif (
        event["type"] == "charge.refunded"
        and "invoice" not in obj
        and not metadata.get("order_id")
        and isinstance(obj.get("payment_intent"), str)
    ):
        try:
            event["expanded"] = {"invoice_payments": provider.invoice_payments(settings, obj["payment_intent"])}
        except provider.PaymentProviderError as error:
            # A restricted key without Invoices: read. A Payment Link pack's refund needs no
            # invoice, and answering 502 would hold every such refund back for good.
            if error.fields.get("provider_status") != 403:
                raise
            logger.error(
                "stripe: the key may not list invoice payments (grant Invoices: read): the refund of charge %s"
                " is applied without its invoice, so a subscription's allowance is not taken back",
                obj.get("id"),
            )


def _expand_subscription(event: dict[str, Any], settings: Settings, subscription_id: str) -> None:
    """The subscription a checkout started. One this key cannot find (a wrong key or mode)
    is left out: the subscription's own events apply its plan. (The line items and a
    disputed charge stay a 502 on any failure: without them nobody would be credited or
    held, and Stripe's retries apply the event once the key is fixed.)"""
    try:
        event["expanded"] = {"subscription": provider.retrieve_subscription(settings, subscription_id)}
    except provider.PaymentProviderError as error:
        if error.fields.get("provider_status") != 404:
            raise
        logger.error("stripe: event %s names subscription %s, which this key cannot find", event["id"], subscription_id)


def handle_webhook(
    payload: bytes, header: str | None, settings: Settings, ledger: Ledger, *, secret: str | None = None
) -> dict[str, Any]:
    secret = secret or settings.stripe_webhook_secret
    if not secret:
        raise ServiceUnavailable("Set STRIPE_WEBHOOK_SECRET to receive Stripe's events", code="stripe_not_configured")
    event = verify(payload, header, secret)
    expand(event, settings)
    try:
        answer = ledger.apply_stripe_event(event)
    except InvalidRequest as error:  # a field the database cannot take ("amount": "x"): nothing stored
        raise InvalidPayload(error.detail) from None
    if answer.get("outcome") in NEEDS_AN_OPERATOR:
        logger.warning(
            "stripe event %s (%s) stored but not applied: %s (account %s)",
            event["id"],
            event["type"],
            answer["outcome"],
            answer.get("account_id"),
        )
    elif not answer.get("duplicate"):
        logger.info("stripe event %s (%s): %s", event["id"], event["type"], answer.get("outcome"))
    return {"received": True, "duplicate": bool(answer.get("duplicate")), "handled": bool(answer.get("handled"))}
