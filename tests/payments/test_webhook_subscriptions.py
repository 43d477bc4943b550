"""Plans through Stripe subscriptions: the plan of the subscription's price, the allowance
of Stripe's period, renewals by invoice.paid, and nothing stale after reordering."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import pytest

from tests.fakes.stripe_server import FakeStripe
from tests.payments.conftest import (
    MICRO,
    assert_reconciled,
    checkout,
    credits,
    deliver,
    deliver_all,
    new_key,
    plan_price_id,
)

PRO, BUSINESS, ENTERPRISE, FREE = 1_500 * MICRO, 5_000 * MICRO, 10_000 * MICRO, 100 * MICRO


def subscribe(client, fake, headers, account, plan="pro"):
    session_id = checkout(client, headers, account, key=new_key(), plan=plan).json()["session_id"]
    events = fake.complete_checkout(session_id)
    return events[0]["data"]["object"]["subscription"], events


def account_row(sql, account):
    return sql(
        "SELECT plan_id, billing_source, stripe_subscription_id, period_start, period_end "
        "FROM creditgate.accounts WHERE id = %s",
        account,
    )[0]


def allowances(sql, account):
    return sql(
        "SELECT plan_id, amount, remaining, expires_at FROM creditgate.grants "
        "WHERE account_id = %s AND source = 'allowance' AND key = 'credits' ORDER BY id",
        account,
    )


def at(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def welcome(sql) -> int:
    return sql("SELECT welcome_credits FROM creditgate.settings")[0][0]


def test_a_subscription_checkout_moves_the_account_to_the_plan_for_stripes_period(
    stripe_http, fake, make_account, service_headers, ledger, sql
):
    account = make_account()
    sub_id, events = subscribe(stripe_http, fake, service_headers, account)
    assert [e["type"] for e in events] == [
        "checkout.session.completed",
        "customer.subscription.created",
        "invoice.paid",
    ]
    deliver_all(stripe_http, fake, events)
    item = fake.get(sub_id)["items"]["data"][0]
    plan, source, subscription, start, end = account_row(sql, account)
    assert (plan, source, subscription) == ("pro", "stripe", sub_id)
    assert (start, end) == (at(item["current_period_start"]), at(item["current_period_end"]))
    # The free allowance ended, pro's was granted once although two events carried it.
    assert credits(ledger, account) == (welcome(sql) + PRO, 0)
    assert [a[0] for a in allowances(sql, account) if a[2] > 0] == ["pro"]
    orders = sql("SELECT kind, item_id, status FROM creditgate.orders WHERE account_id = %s", account)
    assert orders == [("plan", "pro", "paid")]
    # Delivered again, in reverse: nothing changes.
    deliver_all(stripe_http, fake, list(reversed(events)))
    assert credits(ledger, account) == (welcome(sql) + PRO, 0)
    assert_reconciled(ledger, account)


@pytest.mark.parametrize("order", ["invoice_first", "subscription_first"])
def test_the_first_periods_allowance_is_granted_once_in_any_order(
    stripe_http, fake, make_account, service_headers, ledger, sql, order
):
    account = make_account()
    _, events = subscribe(stripe_http, fake, service_headers, account)
    completed, created, paid = events
    sequence = [paid, created, completed] if order == "invoice_first" else [created, paid, completed]
    deliver_all(stripe_http, fake, sequence)
    assert account_row(sql, account)[0] == "pro"
    assert credits(ledger, account) == (welcome(sql) + PRO, 0)
    assert_reconciled(ledger, account)


def test_a_renewal_grants_the_next_period_once_per_invoice(
    stripe_http, fake, make_account, service_headers, ledger, sql
):
    account = make_account()
    sub_id, events = subscribe(stripe_http, fake, service_headers, account)
    deliver_all(stripe_http, fake, events)
    # Spend some of the first period: what is left of it ends when the next one opens.
    ledger.record_usage({"idempotency_key": new_key(), "account_id": account, "feature": "ai_message", "quantity": 500})
    updated, paid = fake.renew_subscription(sub_id)
    assert paid["data"]["object"]["billing_reason"] == "subscription_cycle"

    deliver_all(stripe_http, fake, [updated])
    assert account_row(sql, account)[3] == at(events[1]["data"]["object"]["items"]["data"][0]["current_period_start"])
    deliver_all(stripe_http, fake, [paid])
    line = paid["data"]["object"]["lines"]["data"][0]["period"]
    assert account_row(sql, account)[3:] == (at(line["start"]), at(line["end"]))
    assert credits(ledger, account) == (welcome(sql) + PRO, 0)
    grants = allowances(sql, account)
    assert [(g[0], g[1]) for g in grants if g[2] > 0] == [("pro", PRO)]
    assert grants[-1][3] == at(line["end"])

    twin = copy.deepcopy(paid)
    twin["id"] = "evt_twin_" + new_key()
    deliver_all(stripe_http, fake, [paid, twin])
    assert credits(ledger, account) == (welcome(sql) + PRO, 0)
    assert_reconciled(ledger, account)


def test_a_failed_renewal_grants_nothing(stripe_http, fake, make_account, service_headers, ledger, sql):
    account = make_account()
    sub_id, events = subscribe(stripe_http, fake, service_headers, account)
    deliver_all(stripe_http, fake, events)
    first_period = account_row(sql, account)[3:]
    renewal = fake.renew_subscription(sub_id, payment_succeeds=False)
    assert [e["type"] for e in renewal] == ["customer.subscription.updated", "invoice.payment_failed"]
    deliver_all(stripe_http, fake, renewal)
    assert account_row(sql, account)[0] == "pro" and account_row(sql, account)[3:] == first_period
    assert len([a for a in allowances(sql, account) if a[0] == "pro"]) == 1


def test_an_older_update_delivered_late_does_not_overwrite_a_newer_plan(
    stripe_http, fake, make_account, service_headers, ledger, sql
):
    account = make_account()
    sub_id, events = subscribe(stripe_http, fake, service_headers, account)
    deliver_all(stripe_http, fake, events)
    to_business = fake.update_subscription_price(sub_id, plan_price_id("business"))
    to_enterprise = fake.update_subscription_price(sub_id, plan_price_id("enterprise"))
    assert to_business[-1]["created"] < to_enterprise[-1]["created"]

    deliver_all(stripe_http, fake, to_enterprise)
    assert account_row(sql, account)[0] == "enterprise"
    answers = deliver_all(stripe_http, fake, to_business)
    assert answers[-1] == {"received": True, "duplicate": False, "handled": False}
    assert account_row(sql, account)[0] == "enterprise"
    assert credits(ledger, account) == (welcome(sql) + ENTERPRISE, 0)
    assert sql("SELECT outcome FROM creditgate.stripe_events WHERE id = %s", to_business[-1]["id"]) == [("stale",)]
    assert_reconciled(ledger, account)


def test_a_plan_change_in_order_applies_the_new_plans_allowance(
    stripe_http, fake, make_account, service_headers, ledger, sql
):
    account = make_account()
    sub_id, events = subscribe(stripe_http, fake, service_headers, account)
    deliver_all(stripe_http, fake, events)
    deliver_all(stripe_http, fake, fake.update_subscription_price(sub_id, plan_price_id("business")))
    assert account_row(sql, account)[:2] == ("business", "stripe")
    assert credits(ledger, account) == (welcome(sql) + BUSINESS, 0)
    assert_reconciled(ledger, account)


def test_deleted_then_a_stale_update_does_not_resurrect_the_plan(
    stripe_http, fake, make_account, service_headers, ledger, sql
):
    # Not created on free: a free period opened in the same second as the account's
    # first one would share its allowance key (allowances are keyed per second).
    account = make_account(plan="starter")
    sub_id, events = subscribe(stripe_http, fake, service_headers, account)
    deliver_all(stripe_http, fake, events)
    update = fake.update_subscription_price(sub_id, plan_price_id("business"))
    deleted = fake.cancel_subscription(sub_id)
    assert deleted[0]["type"] == "customer.subscription.deleted"

    deliver_all(stripe_http, fake, deleted)
    plan, source, subscription, start, _ = account_row(sql, account)
    assert (plan, source, subscription) == ("free", "local", None)
    assert credits(ledger, account) == (welcome(sql) + FREE, 0)

    deliver_all(stripe_http, fake, update)  # older than the deletion
    renewal_paid = copy.deepcopy(events[2])  # an invoice.paid of the ended subscription
    renewal_paid.update(id="evt_late_" + new_key(), created=deleted[0]["created"] + 60)
    late_update = copy.deepcopy(update[-1])  # even one stamped later than the deletion
    late_update.update(id="evt_later_" + new_key(), created=deleted[0]["created"] + 60)
    deliver_all(stripe_http, fake, [renewal_paid, late_update])
    assert account_row(sql, account)[:3] == ("free", "local", None)
    assert credits(ledger, account) == (welcome(sql) + FREE, 0)
    assert_reconciled(ledger, account)

    # Subscribing again afterwards works: a new subscription is a new story.
    sub2, events2 = subscribe(stripe_http, fake, service_headers, account, plan="business")
    deliver_all(stripe_http, fake, events2)
    assert account_row(sql, account)[:3] == ("business", "stripe", sub2)


def test_current_api_shapes_without_legacy_fields(settings, ledger, catalog_prices, make_account, service_headers, sql):
    """API 2025-03-31+: periods only on subscription items, invoices name their
    subscription under `parent` and their price under `pricing`."""
    from fastapi.testclient import TestClient

    from functions.local import build_app

    with FakeStripe(legacy_fields=False) as fake:
        fake.create_price(3900, "usd", recurring="month", id=plan_price_id("pro"))
        current = settings.model_copy(
            update={"stripe_secret_key": fake.api_key, "stripe_api_base": fake.url, "payments": "stripe"}
        )
        with TestClient(build_app(settings=current, ledger=ledger), raise_server_exceptions=False) as client:
            account = make_account()
            sub_id, events = subscribe(client, fake, service_headers, account)
            sub = events[1]["data"]["object"]
            assert "current_period_start" not in sub and "subscription" not in events[2]["data"]["object"]
            # The invoice alone (subscription events lost) is enough to open the period.
            deliver_all(client, fake, [events[2]])
            assert account_row(sql, account)[:3] == ("pro", "stripe", sub_id)
            assert account_row(sql, account)[3] == at(sub["items"]["data"][0]["current_period_start"])
            deliver_all(client, fake, fake.renew_subscription(sub_id))
            assert account_row(sql, account)[3] == at(sub["items"]["data"][0]["current_period_end"])
            assert_reconciled(ledger, account)


def test_subscription_events_resolve_the_account_by_customer(stripe_http, fake, make_account, service_headers, sql):
    """A subscription made outside creditgate: no metadata, only the customer we created."""
    account = make_account()
    checkout(stripe_http, service_headers, account, key=new_key(), pack="growth")  # makes the customer
    customer = sql("SELECT stripe_customer_id FROM creditgate.accounts WHERE id = %s", account)[0][0]
    session = fake.client().v1.checkout.sessions.create(
        params={
            "mode": "subscription",
            "customer": customer,
            "line_items": [{"price": plan_price_id("business"), "quantity": 1}],
            "success_url": "https://example.com/ok",
        }
    )
    events = fake.complete_checkout(session.id)
    assert events[1]["data"]["object"]["metadata"] == {}
    deliver_all(stripe_http, fake, events)
    assert account_row(sql, account)[:2] == ("business", "stripe")


def test_a_subscription_for_an_unknown_customer_is_stored(stripe_http, fake, sql):
    customer = fake.create_customer("someone@example.com")
    session = fake.client().v1.checkout.sessions.create(
        params={
            "mode": "subscription",
            "customer": customer["id"],
            "line_items": [{"price": plan_price_id("pro"), "quantity": 1}],
            "success_url": "https://example.com/ok",
        }
    )
    events = fake.complete_checkout(session.id)
    for event in events:
        response = deliver(stripe_http, fake, event)
        assert response.status_code == 200 and response.json()["handled"] is False
    outcomes = sql("SELECT outcome FROM creditgate.stripe_events WHERE id = ANY(%s)", [e["id"] for e in events])
    assert {o for (o,) in outcomes} == {"unknown_account"}


def test_the_checkout_event_alone_puts_the_account_on_its_plan(
    stripe_http, fake, make_account, service_headers, ledger, sql
):
    """An endpoint subscribed only to checkout.session.completed still works: the
    subscription is fetched from Stripe when the event is applied."""
    account = make_account()
    sub_id, events = subscribe(stripe_http, fake, service_headers, account, plan="business")
    deliver_all(stripe_http, fake, [events[0]])
    item = fake.get(sub_id)["items"]["data"][0]
    assert account_row(sql, account) == (
        "business",
        "stripe",
        sub_id,
        at(item["current_period_start"]),
        at(item["current_period_end"]),
    )
    assert credits(ledger, account) == (welcome(sql) + BUSINESS, 0)
    deliver_all(stripe_http, fake, events[1:])
    assert credits(ledger, account) == (welcome(sql) + BUSINESS, 0)
    assert_reconciled(ledger, account)
