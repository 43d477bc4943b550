"""Builders for Stripe's billing objects: subscriptions, items, invoices, invoice payments.

Shapes follow API version 2025-03-31.basil and later: billing periods live on the
subscription items, an invoice names its subscription under `parent`, and its lines
carry `pricing.price_details`. With `legacy=True` the pre-basil fields are added too.
"""

from __future__ import annotations

import copy
from typing import Any

from .stripe_objects import list_object, plan_from_price, price_label


def subscription_item(
    id: str,
    created: int,
    *,
    subscription: str,
    p: dict[str, Any],
    quantity: int,
    period_start: int,
    period_end: int,
) -> dict[str, Any]:
    return {
        "id": id,
        "object": "subscription_item",
        "billing_thresholds": None,
        "created": created,
        "current_period_end": period_end,
        "current_period_start": period_start,
        "discounts": [],
        "metadata": {},
        "plan": plan_from_price(p),
        "price": copy.deepcopy(p),
        "quantity": quantity,
        "subscription": subscription,
        "tax_rates": [],
    }


def subscription(
    id: str,
    created: int,
    *,
    customer: str,
    currency: str,
    items: list[dict[str, Any]],
    metadata: dict[str, str],
    status: str,
    latest_invoice: str | None,
    description: str | None,
    legacy: bool,
) -> dict[str, Any]:
    sub = {
        "id": id,
        "object": "subscription",
        "application": None,
        "application_fee_percent": None,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
        "billing_cycle_anchor": items[0]["current_period_start"],
        "billing_cycle_anchor_config": None,
        "billing_mode": {"flexible": None, "type": "classic", "updated_at": None},
        "billing_thresholds": None,
        "cancel_at": None,
        "cancel_at_period_end": False,
        "canceled_at": None,
        "cancellation_details": {"comment": None, "feedback": None, "reason": None},
        "collection_method": "charge_automatically",
        "created": created,
        "currency": currency,
        "customer": customer,
        "days_until_due": None,
        "default_payment_method": None,
        "default_source": None,
        "default_tax_rates": [],
        "description": description,
        "discounts": [],
        "ended_at": None,
        "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
        "items": list_object(items, f"/v1/subscription_items?subscription={id}"),
        "latest_invoice": latest_invoice,
        "livemode": False,
        "metadata": metadata,
        "next_pending_invoice_item_invoice": None,
        "on_behalf_of": None,
        "pause_collection": None,
        "payment_settings": {
            "payment_method_options": None,
            "payment_method_types": None,
            "save_default_payment_method": "off",
        },
        "pending_invoice_item_interval": None,
        "pending_setup_intent": None,
        "pending_update": None,
        "schedule": None,
        "start_date": created,
        "status": status,
        "test_clock": None,
        "transfer_data": None,
        "trial_end": None,
        "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
        "trial_start": None,
    }
    sync_legacy_periods(sub, legacy)
    return sub


def sync_legacy_periods(sub: dict[str, Any], legacy: bool) -> None:
    """Mirror the item period onto the subscription, as Stripe did before 2025-03-31.basil."""
    if legacy and sub["items"]["data"]:
        first = sub["items"]["data"][0]
        sub["current_period_start"] = first["current_period_start"]
        sub["current_period_end"] = first["current_period_end"]


def invoice_line(
    id: str,
    *,
    invoice: str,
    subscription: dict[str, Any],
    item: dict[str, Any],
    product_name: str,
    period_start: int,
    period_end: int,
    legacy: bool,
) -> dict[str, Any]:
    p = item["price"]
    amount = p["unit_amount"] * item["quantity"]
    line = {
        "id": id,
        "object": "line_item",
        "amount": amount,
        "currency": p["currency"],
        "description": f"{item['quantity']} × {price_label(p, product_name)}",
        "discount_amounts": [],
        "discountable": True,
        "discounts": [],
        "invoice": invoice,
        "livemode": False,
        "metadata": dict(subscription["metadata"]),
        "parent": {
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": None,
                "proration": False,
                "proration_details": {"credited_items": None},
                "subscription": subscription["id"],
                "subscription_item": item["id"],
            },
            "type": "subscription_item_details",
        },
        "period": {"end": period_end, "start": period_start},
        "pretax_credit_amounts": [],
        "pricing": {
            "price_details": {"price": p["id"], "product": p["product"]},
            "type": "price_details",
            "unit_amount_decimal": p["unit_amount_decimal"],
        },
        "quantity": item["quantity"],
        "subscription": subscription["id"],
        "subtotal": amount,
        "taxes": [],
    }
    if legacy:
        line.update(
            price=copy.deepcopy(p),
            plan=plan_from_price(p),
            proration=False,
            subscription_item=item["id"],
            type="subscription",
        )
    return line


def invoice(
    id: str,
    created: int,
    *,
    number: str,
    customer: dict[str, Any],
    subscription: dict[str, Any],
    lines: list[dict[str, Any]],
    billing_reason: str,
    period_start: int,
    period_end: int,
    status: str,
    paid_at: int | None,
    payment_intent: str | None,
    charge: str | None,
    hosted_url: str,
    legacy: bool,
) -> dict[str, Any]:
    total = sum(line["amount"] for line in lines)
    paid = total if status == "paid" else 0
    inv = {
        "id": id,
        "object": "invoice",
        "account_country": "US",
        "account_name": "creditgate test account",
        "account_tax_ids": None,
        "amount_due": total,
        "amount_overpaid": 0,
        "amount_paid": paid,
        "amount_remaining": total - paid,
        "amount_shipping": 0,
        "application": None,
        "attempt_count": 1 if payment_intent else 0,
        "attempted": payment_intent is not None,
        "auto_advance": status not in ("paid", "void"),
        "automatic_tax": {
            "disabled_reason": None,
            "enabled": False,
            "liability": None,
            "provider": None,
            "status": None,
        },
        "automatically_finalizes_at": None,
        "billing_reason": billing_reason,
        "collection_method": "charge_automatically",
        "confirmation_secret": None,
        "created": created,
        "currency": subscription["currency"],
        "custom_fields": None,
        "customer": customer["id"],
        "customer_address": None,
        "customer_email": customer["email"],
        "customer_name": customer["name"],
        "customer_phone": None,
        "customer_shipping": None,
        "customer_tax_exempt": "none",
        "customer_tax_ids": [],
        "default_payment_method": None,
        "default_source": None,
        "default_tax_rates": [],
        "description": None,
        "discounts": [],
        "due_date": None,
        "effective_at": created,
        "ending_balance": 0,
        "footer": None,
        "from_invoice": None,
        "hosted_invoice_url": hosted_url,
        "invoice_pdf": hosted_url + "/pdf",
        "issuer": {"type": "self"},
        "last_finalization_error": None,
        "latest_revision": None,
        "lines": list_object(lines, f"/v1/invoices/{id}/lines"),
        "livemode": False,
        "metadata": {},
        "next_payment_attempt": None,
        "number": number,
        "on_behalf_of": None,
        "parent": {
            "quote_details": None,
            "subscription_details": {
                "metadata": dict(subscription["metadata"]),
                "subscription": subscription["id"],
                "subscription_proration_date": None,
            },
            "type": "subscription_details",
        },
        "payment_settings": {
            "default_mandate": None,
            "payment_method_options": None,
            "payment_method_types": None,
        },
        "period_end": period_end,
        "period_start": period_start,
        "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0,
        "receipt_number": None,
        "rendering": None,
        "shipping_cost": None,
        "shipping_details": None,
        "starting_balance": 0,
        "statement_descriptor": None,
        "status": status,
        "status_transitions": {
            "finalized_at": created,
            "marked_uncollectible_at": None,
            "paid_at": paid_at,
            "voided_at": None,
        },
        "subtotal": total,
        "subtotal_excluding_tax": total,
        "test_clock": None,
        "total": total,
        "total_discount_amounts": [],
        "total_excluding_tax": total,
        "total_pretax_credit_amounts": [],
        "total_taxes": [],
        "webhooks_delivered_at": created,
    }
    if legacy:
        inv.update(
            subscription=subscription["id"],
            charge=charge,
            payment_intent=payment_intent,
            paid=status == "paid",
            subscription_details={"metadata": dict(subscription["metadata"])},
        )
    return inv


def invoice_payment(
    id: str,
    created: int,
    *,
    invoice: dict[str, Any],
    payment_intent: str,
    paid_at: int | None,
) -> dict[str, Any]:
    return {
        "id": id,
        "object": "invoice_payment",
        "amount_paid": invoice["amount_paid"] if paid_at else None,
        "amount_requested": invoice["amount_due"],
        "created": created,
        "currency": invoice["currency"],
        "invoice": invoice["id"],
        "is_default": True,
        "livemode": False,
        "payment": {"type": "payment_intent", "payment_intent": payment_intent},
        "status": "paid" if paid_at else "open",
        "status_transitions": {"canceled_at": None, "paid_at": paid_at},
    }


def billing_portal_session(id: str, created: int, *, customer: str, return_url: str | None) -> dict[str, Any]:
    return {
        "id": id,
        "object": "billing_portal.session",
        "configuration": "bpc_default",
        "created": created,
        "customer": customer,
        "flow": None,
        "livemode": False,
        "locale": None,
        "on_behalf_of": None,
        "return_url": return_url,
        "url": f"https://billing.stripe.com/p/session/test_{id[4:]}",
    }
