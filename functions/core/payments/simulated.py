"""The offline payment mode: a local page stands in for Stripe's hosted checkout. Paying
there builds the event Stripe would send, signs it the way Stripe does, and hands it to
the same verification and RPC as a real delivery, so the offline path proves the real one."""

from __future__ import annotations

import html
import json
import secrets
import time
from typing import Any

from functions.core.money import format_micro, minor_to_major

# Signs in-process deliveries when no STRIPE_WEBHOOK_SECRET is set; it never leaves the
# process, so nothing outside can sign with it.
LOCAL_SECRET = "whsec_local_" + secrets.token_hex(24)


def completed_event(order: dict[str, Any]) -> dict[str, Any]:
    """`checkout.session.completed`, shaped as Stripe sends it. The event id is derived
    from the session, so paying twice delivers the same event twice."""
    session_id = order["session_id"]
    suffix = session_id.removeprefix("cs_sim_")
    pack = order["kind"] == "pack"
    metadata = {"account_id": order["account_id"], "order_id": order["order_id"], order["kind"]: order["item"]}
    return {
        "id": f"evt_sim_{suffix}",
        "object": "event",
        "api_version": "simulated",
        "created": int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": "checkout.session.completed",
        "data": {
            "object": {
                "id": session_id,
                "object": "checkout.session",
                "mode": "payment" if pack else "subscription",
                "status": "complete",
                "payment_status": "paid",
                "amount_total": order["amount_minor"],
                "currency": order["currency"],
                "client_reference_id": order["account_id"],
                "customer": None,
                "metadata": metadata,
                "payment_intent": f"pi_sim_{suffix}" if pack else None,
                "subscription": None,
                "success_url": order["success_url"],
                "cancel_url": order["cancel_url"],
                "livemode": False,
            }
        },
    }


def sign(payload: bytes, secret: str) -> str:
    import stripe

    return stripe.WebhookSignature.generate_signature_header(payload.decode("utf-8"), secret)


def event_payload(event: dict[str, Any]) -> bytes:
    return json.dumps(event, indent=2).encode("utf-8")


def page(order: dict[str, Any]) -> str:
    what = order["name"] or order["item"]
    if order["kind"] == "pack":
        detail = f"{format_micro(order['credits'])} {order.get('key') or 'credits'}"
    else:
        detail = f"{order['item']} plan, billed every {order['interval'] or 'month'}"
    price = f"{minor_to_major(order['amount_minor'], order['currency'])} {order['currency'].upper()}"
    e = html.escape
    if order["status"] == "pending":
        action = (
            '<form method="post"><button type="submit">Pay ' + e(price) + "</button></form>"
            f'<p><a href="{e(order["cancel_url"] or "")}">Cancel</a></p>'
        )
    else:
        action = f"<p>This checkout is <strong>{e(order['status'])}</strong>.</p>"
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Simulated checkout</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem}"
        "button{font-size:1.1rem;padding:.6rem 1.4rem}.note{color:#777;font-size:.9rem}</style></head><body>"
        f"<h1>{e(what)}</h1><p>{e(detail)}</p><p><strong>{e(price)}</strong></p>{action}"
        "<p class='note'>Simulated payment (CREDITGATE_PAYMENTS=simulated): no money moves. "
        "Paying sends a signed checkout.session.completed event through the webhook.</p>"
        "</body></html>"
    )
