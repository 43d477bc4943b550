"""The payment RPCs through the Supabase adapter (PostgREST), as deployed on Supabase."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.ledger_fixtures import rest_server  # noqa: F401 - fixture
from tests.payments.conftest import MICRO, assert_reconciled, checkout, credits, deliver, deliver_all, new_key


@pytest.fixture
def supabase_http(rest_server, stripe_settings, catalog_prices):  # noqa: F811
    from functions.core.ledger.supabase import SupabaseLedger
    from functions.local import build_app

    ledger = SupabaseLedger(rest_server.url, rest_server.service_role_key)
    with TestClient(build_app(settings=stripe_settings, ledger=ledger), raise_server_exceptions=False) as client:
        yield client, ledger
    ledger.close()


def test_checkout_webhook_and_refund_over_postgrest(supabase_http, fake, make_account, service_headers):
    client, ledger = supabase_http
    account = make_account()
    before, _ = credits(ledger, account)
    body = checkout(client, service_headers, account, key=new_key(), pack="growth")
    assert body.status_code == 201, body.text
    events = fake.complete_checkout(body.json()["session_id"])
    deliver_all(client, fake, events)
    assert deliver(client, fake, events[0]).json()["duplicate"] is True
    assert credits(ledger, account) == (before + 6_500 * MICRO, 0)

    charge = fake.get(events[0]["data"]["object"]["payment_intent"])["latest_charge"]
    deliver_all(client, fake, fake.refund(charge))
    assert credits(ledger, account) == (before, 0)
    assert_reconciled(ledger, account)

    unknown = checkout(client, service_headers, account, key=new_key(), pack="nope")
    assert unknown.status_code == 422 and unknown.json()["code"] == "unknown_pack"
