"""Builders for Stripe API objects, shaped like the API reference at the current version.

Field sets follow the resource classes of stripe-python 16 (API version `*.endive`), so a
`StripeObject` built from them has the attributes the SDK declares for what the fake
models. Billing objects (subscriptions, invoices) are in `stripe_billing_objects`.
"""

from __future__ import annotations

import calendar
import copy
from datetime import UTC, datetime
from typing import Any

from .stripe_wire import format_amount


def list_object(data: list[dict[str, Any]], url: str, has_more: bool = False) -> dict[str, Any]:
    return {"object": "list", "data": data, "has_more": has_more, "url": url}


# --------------------------------------------------------------------------- catalog


def customer(
    id: str,
    created: int,
    *,
    email: str | None,
    name: str | None,
    description: str | None,
    phone: str | None,
    metadata: dict[str, str],
) -> dict[str, Any]:
    return {
        "id": id,
        "object": "customer",
        "address": None,
        "balance": 0,
        "created": created,
        "currency": None,
        "default_source": None,
        "delinquent": False,
        "description": description,
        "discount": None,
        "email": email,
        "invoice_prefix": id[4:12].upper(),
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": None,
            "footer": None,
            "rendering_options": None,
        },
        "livemode": False,
        "metadata": metadata,
        "name": name,
        "next_invoice_sequence": 1,
        "phone": phone,
        "preferred_locales": [],
        "shipping": None,
        "tax_exempt": "none",
        "test_clock": None,
    }


def product(
    id: str,
    created: int,
    *,
    name: str,
    description: str | None,
    metadata: dict[str, str],
    active: bool = True,
) -> dict[str, Any]:
    return {
        "id": id,
        "object": "product",
        "active": active,
        "created": created,
        "default_price": None,
        "description": description,
        "images": [],
        "livemode": False,
        "marketing_features": [],
        "metadata": metadata,
        "name": name,
        "package_dimensions": None,
        "shippable": None,
        "statement_descriptor": None,
        "tax_code": None,
        "type": "service",
        "unit_label": None,
        "updated": created,
        "url": None,
    }


def price(
    id: str,
    created: int,
    *,
    product: str,
    currency: str,
    unit_amount: int,
    recurring: dict[str, Any] | None,
    metadata: dict[str, str],
    nickname: str | None,
    lookup_key: str | None,
    active: bool = True,
    tax_behavior: str = "unspecified",
) -> dict[str, Any]:
    return {
        "id": id,
        "object": "price",
        "active": active,
        "billing_scheme": "per_unit",
        "created": created,
        "currency": currency,
        "custom_unit_amount": None,
        "livemode": False,
        "lookup_key": lookup_key,
        "metadata": metadata,
        "nickname": nickname,
        "product": product,
        "recurring": recurring,
        "tax_behavior": tax_behavior,
        "tiers_mode": None,
        "transform_quantity": None,
        "type": "recurring" if recurring else "one_time",
        "unit_amount": unit_amount,
        "unit_amount_decimal": str(unit_amount),
    }


def recurring(interval: str, interval_count: int = 1) -> dict[str, Any]:
    return {
        "interval": interval,
        "interval_count": interval_count,
        "meter": None,
        "trial_period_days": None,
        "usage_type": "licensed",
    }


def plan_from_price(p: dict[str, Any]) -> dict[str, Any]:
    """The legacy `plan` view of a recurring price, still present on subscription items."""
    rec = p["recurring"] or {}
    return {
        "id": p["id"],
        "object": "plan",
        "active": p["active"],
        "amount": p["unit_amount"],
        "amount_decimal": p["unit_amount_decimal"],
        "billing_scheme": p["billing_scheme"],
        "created": p["created"],
        "currency": p["currency"],
        "interval": rec.get("interval"),
        "interval_count": rec.get("interval_count"),
        "livemode": False,
        "metadata": p["metadata"],
        "meter": None,
        "nickname": p["nickname"],
        "product": p["product"],
        "tiers_mode": None,
        "transform_usage": None,
        "trial_period_days": None,
        "usage_type": rec.get("usage_type", "licensed"),
    }


def price_label(p: dict[str, Any], product_name: str) -> str:
    """Stripe's invoice line description, e.g. `1 × Pro (at $20.00 / month)`."""
    amount = format_amount(p["unit_amount"], p["currency"])
    if p["recurring"]:
        return f"{product_name} (at {amount} / {p['recurring']['interval']})"
    return f"{product_name} (at {amount})"


# --------------------------------------------------------------------------- checkout


def checkout_session(
    id: str,
    created: int,
    *,
    url: str | None,
    mode: str,
    ui_mode: str,
    currency: str | None,
    amount_total: int | None,
    customer: str | None,
    customer_email: str | None,
    customer_creation: str | None,
    client_reference_id: str | None,
    metadata: dict[str, str],
    success_url: str | None,
    cancel_url: str | None,
    return_url: str | None,
    expires_at: int,
    client_secret: str | None,
    locale: str | None,
    payment_method_types: list[str],
) -> dict[str, Any]:
    return {
        "id": id,
        "object": "checkout.session",
        "adaptive_pricing": None,
        "after_expiration": None,
        "allow_promotion_codes": None,
        "amount_subtotal": amount_total,
        "amount_total": amount_total,
        "automatic_tax": {"enabled": False, "liability": None, "provider": None, "status": None},
        "billing_address_collection": None,
        "cancel_url": cancel_url,
        "client_reference_id": client_reference_id,
        "client_secret": client_secret,
        "collected_information": None,
        "consent": None,
        "consent_collection": None,
        "created": created,
        "currency": currency,
        "currency_conversion": None,
        "custom_fields": [],
        "custom_text": {
            "after_submit": None,
            "shipping_address": None,
            "submit": None,
            "terms_of_service_acceptance": None,
        },
        "customer": customer,
        "customer_creation": customer_creation,
        "customer_details": None,
        "customer_email": customer_email,
        "discounts": [],
        "expires_at": expires_at,
        "invoice": None,
        "invoice_creation": None,
        "livemode": False,
        "locale": locale,
        "metadata": metadata,
        "mode": mode,
        "payment_intent": None,
        "payment_link": None,
        "payment_method_collection": None if mode == "setup" else "always",
        "payment_method_configuration_details": None,
        "payment_method_options": {},
        "payment_method_types": payment_method_types,
        "payment_status": "no_payment_required" if mode == "setup" else "unpaid",
        "phone_number_collection": {"enabled": False},
        "presentment_details": None,
        "recovered_from": None,
        "return_url": return_url,
        "saved_payment_method_options": None,
        "setup_intent": None,
        "shipping_address_collection": None,
        "shipping_cost": None,
        "shipping_options": [],
        "status": "open",
        "submit_type": None,
        "subscription": None,
        "success_url": success_url,
        "total_details": (
            {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0} if amount_total is not None else None
        ),
        "ui_mode": ui_mode,
        "url": url,
        "wallet_options": None,
    }


def checkout_line_item(id: str, p: dict[str, Any], quantity: int, description: str) -> dict[str, Any]:
    amount = p["unit_amount"] * quantity
    return {
        "id": id,
        "object": "item",
        "adjustable_quantity": None,
        "amount_discount": 0,
        "amount_subtotal": amount,
        "amount_tax": 0,
        "amount_total": amount,
        "currency": p["currency"],
        "description": description,
        "metadata": {},
        "price": copy.deepcopy(p),
        "quantity": quantity,
    }


def customer_details(email: str | None, name: str | None) -> dict[str, Any]:
    return {
        "address": None,
        "business_name": None,
        "email": email,
        "individual_name": None,
        "name": name,
        "phone": None,
        "tax_exempt": "none",
        "tax_ids": [],
    }


# --------------------------------------------------------------------------- payments


def payment_intent(
    id: str,
    created: int,
    *,
    amount: int,
    currency: str,
    customer: str | None,
    metadata: dict[str, str],
    description: str | None,
    status: str,
    latest_charge: str | None,
    payment_method_types: list[str],
    client_secret: str,
) -> dict[str, Any]:
    return {
        "id": id,
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": 0,
        "amount_details": {"tip": {}},
        "amount_received": amount if status == "succeeded" else 0,
        "application": None,
        "application_fee_amount": None,
        "automatic_payment_methods": None,
        "canceled_at": None,
        "cancellation_reason": None,
        "capture_method": "automatic_async",
        "client_secret": client_secret,
        "confirmation_method": "automatic",
        "created": created,
        "currency": currency,
        "customer": customer,
        "description": description,
        "last_payment_error": None,
        "latest_charge": latest_charge,
        "livemode": False,
        "metadata": metadata,
        "next_action": None,
        "on_behalf_of": None,
        "payment_method": None,
        "payment_method_configuration_details": None,
        "payment_method_options": {},
        "payment_method_types": payment_method_types,
        "processing": None,
        "receipt_email": None,
        "review": None,
        "setup_future_usage": None,
        "shipping": None,
        "source": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": status,
        "transfer_data": None,
        "transfer_group": None,
    }


def charge(
    id: str,
    created: int,
    *,
    amount: int,
    currency: str,
    customer: str | None,
    payment_intent: str,
    metadata: dict[str, str],
    description: str | None,
    status: str,
    email: str | None,
    name: str | None,
    method: str,
    receipt_url: str,
) -> dict[str, Any]:
    if method == "card":
        details: dict[str, Any] = {
            "type": "card",
            "card": {
                "brand": "visa",
                "country": "US",
                "exp_month": 12,
                "exp_year": 2034,
                "fingerprint": "fakeFingerprint1",
                "funding": "credit",
                "last4": "4242",
                "network": "visa",
                "three_d_secure": None,
                "wallet": None,
            },
        }
    else:
        details = {
            "type": "us_bank_account",
            "us_bank_account": {
                "account_holder_type": "individual",
                "account_type": "checking",
                "bank_name": "STRIPE TEST BANK",
                "last4": "6789",
                "routing_number": "110000000",
            },
        }
    return {
        "id": id,
        "object": "charge",
        "amount": amount,
        "amount_captured": amount if status == "succeeded" else 0,
        "amount_refunded": 0,
        "application": None,
        "application_fee": None,
        "application_fee_amount": None,
        "balance_transaction": None,
        "billing_details": {
            "address": {
                "city": None,
                "country": None,
                "line1": None,
                "line2": None,
                "postal_code": None,
                "state": None,
            },
            "email": email,
            "name": name,
            "phone": None,
            "tax_id": None,
        },
        "calculated_statement_descriptor": "CREDITGATE",
        "captured": status == "succeeded",
        "created": created,
        "currency": currency,
        "customer": customer,
        "description": description,
        "disputed": False,
        "failure_balance_transaction": None,
        "failure_code": None,
        "failure_message": None,
        "fraud_details": {},
        "livemode": False,
        "metadata": metadata,
        "on_behalf_of": None,
        "outcome": {
            "network_status": "approved_by_network",
            "reason": None,
            "risk_level": "normal",
            "seller_message": "Payment complete.",
            "type": "authorized",
        },
        "paid": status == "succeeded",
        "payment_intent": payment_intent,
        "payment_method": "pm_fake_" + id[-12:],
        "payment_method_details": details,
        "receipt_email": email,
        "receipt_number": None,
        "receipt_url": receipt_url,
        "refunded": False,
        "review": None,
        "shipping": None,
        "source": None,
        "source_transfer": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": status,
        "transfer_data": None,
        "transfer_group": None,
    }


def refund(
    id: str,
    created: int,
    *,
    amount: int,
    currency: str,
    charge: str,
    payment_intent: str | None,
    metadata: dict[str, str],
    reason: str | None,
) -> dict[str, Any]:
    return {
        "id": id,
        "object": "refund",
        "amount": amount,
        "balance_transaction": None,
        "charge": charge,
        "created": created,
        "currency": currency,
        "description": None,
        "destination_details": {
            "card": {"reference_status": "pending", "type": "refund"},
            "type": "card",
        },
        "metadata": metadata,
        "payment_intent": payment_intent,
        "reason": reason,
        "receipt_number": None,
        "source_transfer_reversal": None,
        "status": "succeeded",
        "transfer_reversal": None,
    }


def dispute(
    id: str,
    created: int,
    *,
    amount: int,
    currency: str,
    charge: str,
    payment_intent: str | None,
    reason: str,
) -> dict[str, Any]:
    return {
        "id": id,
        "object": "dispute",
        "amount": amount,
        "balance_transactions": [],
        "charge": charge,
        "created": created,
        "currency": currency,
        "enhanced_eligibility_types": [],
        "evidence": {},
        "evidence_details": {
            "due_by": created + 7 * 86400,
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
        },
        "is_charge_refundable": False,
        "livemode": False,
        "metadata": {},
        "network_reason_code": None,
        "payment_intent": payment_intent,
        "payment_method_details": {
            "card": {"brand": "visa", "network_reason_code": None},
            "type": "card",
        },
        "reason": reason,
        "status": "needs_response",
    }


# --------------------------------------------------------------------------- events


def event(
    id: str,
    created: int,
    *,
    type: str,
    obj: dict[str, Any],
    api_version: str,
    previous_attributes: dict[str, Any] | None,
    request_id: str | None,
    idempotency_key: str | None,
) -> dict[str, Any]:
    data: dict[str, Any] = {"object": copy.deepcopy(obj)}
    if previous_attributes is not None:
        data["previous_attributes"] = previous_attributes
    return {
        "id": id,
        "object": "event",
        "api_version": api_version,
        "created": created,
        "data": data,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": request_id, "idempotency_key": idempotency_key},
        "type": type,
    }


def previous_attributes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """What an `*.updated` event reports as changed: old values of changed keys.

    Nested hashes recurse (so a changed item list shows up as `{"items": {"data": [...]}}`,
    as Stripe sends it); lists and scalars are reported whole.
    """
    changed: dict[str, Any] = {}
    for key, old_value in old.items():
        new_value = new.get(key)
        if old_value == new_value:
            continue
        if isinstance(old_value, dict) and isinstance(new_value, dict):
            changed[key] = previous_attributes(old_value, new_value)
        else:
            changed[key] = copy.deepcopy(old_value)
    return changed


# --------------------------------------------------------------------------- time


def add_interval(ts: int, interval: str, count: int, anchor: int) -> int:
    """Next period boundary after `ts`, keeping the billing-cycle anchor's day and time.

    Monthly subscriptions anchored on the 31st bill on the last day of shorter months and
    go back to the 31st afterwards, as Stripe's billing cycle does.
    """
    if interval == "day":
        return ts + 86400 * count
    if interval == "week":
        return ts + 7 * 86400 * count
    start = datetime.fromtimestamp(ts, tz=UTC)
    anchor_dt = datetime.fromtimestamp(anchor, tz=UTC)
    months = count * (12 if interval == "year" else 1)
    month_index = start.month - 1 + months
    year, month = start.year + month_index // 12, month_index % 12 + 1
    if interval == "year":
        month = anchor_dt.month
    day = min(anchor_dt.day, calendar.monthrange(year, month)[1])
    end = anchor_dt.replace(year=year, month=month, day=day)
    return int(end.timestamp())
