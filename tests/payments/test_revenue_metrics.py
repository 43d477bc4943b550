"""Revenue in GET /v1/admin/metrics: packs through their orders, subscriptions through every
paid invoice (renewals too), each counted once however often Stripe delivers it; a live
subscription in the recurring revenue of the `kpis`."""

from __future__ import annotations

import copy

from tests.payments.conftest import checkout, deliver_all, new_key


def revenue(client, headers) -> dict[str, int]:
    return client.get("/v1/admin/metrics?days=90", headers=headers).json()["revenue_minor"]


def test_packs_and_every_paid_invoice_count_once(stripe_http, fake, make_account, service_headers):
    before = revenue(stripe_http, service_headers)
    account = make_account()
    pack = checkout(stripe_http, service_headers, account, key=new_key(), pack="pro").json()
    deliver_all(stripe_http, fake, fake.complete_checkout(pack["session_id"]))

    subscriber = make_account()
    session = checkout(stripe_http, service_headers, subscriber, key=new_key(), plan="pro").json()["session_id"]
    events = fake.complete_checkout(session)
    deliver_all(stripe_http, fake, events)
    subscription = events[0]["data"]["object"]["subscription"]
    updated, renewal = fake.renew_subscription(subscription)
    twin = copy.deepcopy(renewal)
    twin["id"] = "evt_twin_" + new_key()
    deliver_all(stripe_http, fake, [updated, renewal, twin])

    # An invoice in another currency than the catalog's (another product on the same Stripe
    # account) is not added to this revenue.
    stranger = copy.deepcopy(renewal)
    stranger["id"] = "evt_stranger_" + new_key()
    stranger["data"]["object"]["id"] = "in_stranger_" + new_key()
    stranger["data"]["object"]["currency"] = "jpy"
    deliver_all(stripe_http, fake, [stranger])

    invoices = {
        e["data"]["object"]["id"]: e["data"]["object"]["amount_paid"]
        for e in [*events, renewal]
        if e["type"] == "invoice.paid"
    }
    assert len(invoices) == 2  # the first invoice and the renewal
    after = revenue(stripe_http, service_headers)
    assert after["packs"] - before["packs"] == 9900  # the pro pack, $99.00
    assert after["subscriptions"] - before["subscriptions"] == sum(invoices.values())


def kpis(client, headers) -> dict:
    return client.get("/v1/admin/metrics?days=1", headers=headers).json()["kpis"]


def test_a_subscription_is_recurring_revenue_until_it_is_cancelled(stripe_http, fake, make_account, service_headers):
    before = kpis(stripe_http, service_headers)
    subscriber = make_account()
    session = checkout(stripe_http, service_headers, subscriber, key=new_key(), plan="pro").json()["session_id"]
    events = fake.complete_checkout(session)
    deliver_all(stripe_http, fake, events)
    subscribed = kpis(stripe_http, service_headers)
    stripe_mrr = subscribed["mrr_minor_by_billing"]["stripe"] - before["mrr_minor_by_billing"]["stripe"]
    assert stripe_mrr == subscribed["mrr_minor"] - before["mrr_minor"] == 3900
    assert subscribed["paying_accounts"] - before["paying_accounts"] == 1
    assert subscribed["conversion"]["free_to_paid"] - before["conversion"]["free_to_paid"] == 1

    deliver_all(stripe_http, fake, fake.cancel_subscription(events[0]["data"]["object"]["subscription"]))
    cancelled = kpis(stripe_http, service_headers)
    assert cancelled["mrr_minor"] == before["mrr_minor"] and cancelled["paying_accounts"] == before["paying_accounts"]
    assert cancelled["churned"] - before["churned"] == 1


def test_accounts_by_plan_and_top_accounts(client, service_headers, make_account):
    account = make_account("pro")
    client.post(
        "/v1/usage",
        headers=service_headers,
        json={"account_id": account, "feature": "screenshot", "quantity": 10**6, "idempotency_key": new_key()},
    )
    body = client.get("/v1/admin/metrics?days=1", headers=service_headers).json()
    assert body["accounts_by_plan"]["pro"] >= 1 and body["currency"]
    top = body["top_accounts"][0]
    assert top["account_id"] == account and top["cost"] == "500000" and top["other_keys"] == {}
    client.post(
        "/v1/usage",
        headers=service_headers,
        json={
            "account_id": account,
            "feature": "chat_tokens",
            "model": "gpt-4o-mini",
            "usage": {"input_tokens": 700, "output_tokens": 300},
            "idempotency_key": new_key(),
        },
    )
    body = client.get("/v1/admin/metrics?days=1", headers=service_headers).json()
    top = next(t for t in body["top_accounts"] if t["account_id"] == account)
    assert top["other_keys"] == {"tokens": "1000"}
    assert all("other_keys" in f for f in body["top_features"])
