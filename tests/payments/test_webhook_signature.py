"""The webhook accepts only Stripe's signature over the exact bytes it received."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import WEBHOOK_SECRET
from tests.payments.conftest import checkout, deliver, new_key

ROOT = Path(__file__).resolve().parents[2]
TABLES = ("stripe_events", "grants", "orders", "ledger_entries", "balances")


def counts(sql):
    return {t: sql(f"SELECT count(*) FROM creditgate.{t}")[0][0] for t in TABLES}


@pytest.fixture
def paid_event(stripe_http, fake, make_account, service_headers):
    account = make_account()
    session_id = checkout(stripe_http, service_headers, account, key=new_key(), pack="growth").json()["session_id"]
    return fake.complete_checkout(session_id)[0]


def post(client, payload: bytes, headers: dict):
    return client.post("/v1/webhooks/stripe", content=payload, headers=headers)


def tampered(fake, event):
    payload, headers = fake.webhook(event, WEBHOOK_SECRET)
    return payload.replace(b'"payment_status": "paid"', b'"payment_status":  "paid"'), headers


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda fake, e: fake.webhook(e, "whsec_someone_else"), id="wrong secret"),
        pytest.param(lambda fake, e: (fake.webhook(e, WEBHOOK_SECRET)[0], {}), id="missing header"),
        pytest.param(
            lambda fake, e: (fake.webhook(e, WEBHOOK_SECRET)[0], {"Stripe-Signature": "garbage"}),
            id="unparseable header",
        ),
        pytest.param(
            lambda fake, e: fake.webhook(e, WEBHOOK_SECRET, timestamp=int(time.time()) - 600), id="ten minutes old"
        ),
        pytest.param(tampered, id="body changed after signing"),
        pytest.param(
            lambda fake, e: (b"\xff" + fake.webhook(e, WEBHOOK_SECRET)[0], fake.webhook(e, WEBHOOK_SECRET)[1]),
            id="not utf-8",
        ),
    ],
)
def test_bad_missing_or_stale_signatures_are_400_and_change_nothing(stripe_http, fake, paid_event, sql, forge):
    before = counts(sql)
    payload, headers = forge(fake, paid_event)
    response = post(stripe_http, payload, headers)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "invalid_signature"
    assert counts(sql) == before
    # The genuine delivery still works afterwards.
    assert deliver(stripe_http, fake, paid_event).json() == {"received": True, "duplicate": False, "handled": True}


@pytest.mark.parametrize(
    "payload",
    [
        b"{not json",
        b"[1, 2]",
        b'{"id": "evt_1", "type": "x"}',
        b'{"id": "evt_1", "type": "x", "created": "soon", "data": {"object": {}}}',
        # Signed, but an amount the ledger cannot keep: refused before the database.
        b'{"id": "evt_s", "object": "event", "type": "charge.refunded", "created": 1700000000, '
        b'"data": {"object": {"id": "ch_t", "object": "charge", "amount": "x", "amount_refunded": "y"}}}',
    ],
)
def test_malformed_events_with_a_valid_signature_are_400(stripe_http, fake, sql, payload):
    before = counts(sql)
    response = post(stripe_http, payload, {"Stripe-Signature": fake.sign_payload(payload, WEBHOOK_SECRET)})
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_payload"
    if b"evt_s" in payload:
        assert "must be a non-negative integer" in response.json()["detail"]
    assert counts(sql) == before


def test_a_field_only_the_database_refuses_is_400_and_stores_nothing(stripe_http, fake, sql, make_account):
    """The net under the event checks: a value the ledger cannot cast (a line item's
    quantity here) rolls the event back and is answered as the payload's fault."""
    account = make_account("free")
    event = {
        "id": "evt_db_refuses",
        "object": "event",
        "type": "checkout.session.completed",
        "created": 1700000000,
        "data": {
            "object": {
                "id": "cs_db_refuses",
                "object": "checkout.session",
                "mode": "payment",
                "payment_status": "paid",
                "metadata": {"account_id": account, "pack": "no-such-pack"},  # found by its line item
                "line_items": {"data": [{"quantity": "x", "price": {"id": "price_nowhere"}}]},
            }
        },
    }
    before = counts(sql)
    payload = json.dumps(event).encode()
    response = post(stripe_http, payload, {"Stripe-Signature": fake.sign_payload(payload, WEBHOOK_SECRET)})
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_payload" and "cannot be stored" in response.json()["detail"]
    assert counts(sql) == before


def test_without_a_webhook_secret_the_webhook_is_unavailable(settings, ledger, fake, paid_event):
    from fastapi.testclient import TestClient

    from functions.local import build_app

    app = build_app(settings=settings.model_copy(update={"stripe_webhook_secret": None}), ledger=ledger)
    with TestClient(app, raise_server_exceptions=False) as client:
        payload, headers = fake.webhook(paid_event, WEBHOOK_SECRET)
        response = post(client, payload, headers)
    assert response.status_code == 503
    assert response.json()["code"] == "stripe_not_configured"


def test_base64_bodies_from_api_gateway_are_verified_on_their_decoded_bytes(
    stripe_settings, ledger, fake, paid_event, sql
):
    """API Gateway HTTP API (payload v2) hands binary-ish bodies to Lambda base64-encoded;
    Mangum decodes them, and the signature must hold over the decoded bytes."""
    from functions.core.app import create_app, lambda_handler
    from functions.core.payments.endpoints import webhook_router

    handler = lambda_handler(create_app("webhook", webhook_router, settings=stripe_settings, ledger=ledger))
    payload, headers = fake.webhook(paid_event, WEBHOOK_SECRET)

    def api_gateway_event(body: bytes, signature: str) -> dict:
        return {
            "version": "2.0",
            "routeKey": "POST /v1/webhooks/stripe",
            "rawPath": "/v1/webhooks/stripe",
            "rawQueryString": "",
            "headers": {
                "content-type": "application/json; charset=utf-8",
                "content-length": str(len(body)),
                "host": "abc123.execute-api.eu-west-1.amazonaws.com",
                "stripe-signature": signature,
                "user-agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                "x-forwarded-for": "54.187.174.169",
                "x-forwarded-port": "443",
                "x-forwarded-proto": "https",
            },
            "requestContext": {
                "accountId": "123456789012",
                "apiId": "abc123",
                "domainName": "abc123.execute-api.eu-west-1.amazonaws.com",
                "domainPrefix": "abc123",
                "http": {
                    "method": "POST",
                    "path": "/v1/webhooks/stripe",
                    "protocol": "HTTP/1.1",
                    "sourceIp": "54.187.174.169",
                    "userAgent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                },
                "requestId": "JKJaXmPLvHcESHA=",
                "routeKey": "POST /v1/webhooks/stripe",
                "stage": "$default",
                "time": "10/Mar/2025:12:00:00 +0000",
                "timeEpoch": int(time.time() * 1000),
            },
            "body": base64.b64encode(body).decode("ascii"),
            "isBase64Encoded": True,
        }

    def body_of(result: dict) -> dict:
        raw = result["body"]
        return json.loads(base64.b64decode(raw) if result.get("isBase64Encoded") else raw)

    forged = handler(api_gateway_event(payload + b" ", headers["Stripe-Signature"]), None)
    assert forged["statusCode"] == 400
    assert body_of(forged)["code"] == "invalid_signature"

    result = handler(api_gateway_event(payload, headers["Stripe-Signature"]), None)
    assert result["statusCode"] == 200, result
    assert body_of(result) == {"received": True, "duplicate": False, "handled": True}
    session_id = paid_event["data"]["object"]["id"]
    assert sql("SELECT status FROM creditgate.orders WHERE stripe_session_id = %s", session_id) == [("paid",)]


def test_stripe_is_imported_only_where_used():
    """Cold start: importing a function's module must not import stripe (~0.2 s); the
    checkout and webhook import it on their first call."""
    code = (
        "import sys, functions.gate, functions.usage, functions.balance, functions.admin, "
        "functions.checkout, functions.webhook, functions.local; "
        "print(','.join(m for m in ('stripe', 'psycopg') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
