"""Packs: a paid checkout credits exactly once; refunds and disputes take back."""

from __future__ import annotations

import copy
import logging
from concurrent.futures import ThreadPoolExecutor

from tests.payments.conftest import (
    MICRO,
    assert_reconciled,
    checkout,
    credits,
    deliver,
    deliver_all,
    new_key,
    pack_price_id,
)

PRO_PACK = (15_000 + 1_500) * MICRO  # credits + bonus of the shipped `pro` pack


def buy(client, fake, headers, account, pack="pro", **complete):
    body = checkout(client, headers, account, key=new_key(), pack=pack).json()
    return body, fake.complete_checkout(body["session_id"], **complete)


def order_of(sql, session_id):
    rows = sql(
        "SELECT status, amount_minor, refunded_minor, credits, clawed_back, stripe_payment_intent "
        "FROM creditgate.orders WHERE stripe_session_id = %s",
        session_id,
    )
    return rows[0] if rows else None


def purchase_grants(sql, account):
    return sql(
        "SELECT amount, remaining, external_ref FROM creditgate.grants WHERE account_id = %s AND source = 'purchase'",
        account,
    )


def spend(ledger, account, amount_micro):
    """Usage through the public RPC: ai_message costs 0.2 credits per unit."""
    units, rest = divmod(amount_micro, 200_000)
    assert rest == 0
    ledger.record_usage(
        {"idempotency_key": new_key(), "account_id": account, "feature": "ai_message", "quantity": units}
    )


def test_a_paid_checkout_credits_the_pack_once(stripe_http, fake, make_account, service_headers, ledger, sql):
    account = make_account()
    before, _ = credits(ledger, account)
    body, events = buy(stripe_http, fake, service_headers, account)
    answers = deliver_all(stripe_http, fake, events)
    assert answers == [{"received": True, "duplicate": False, "handled": True}]
    assert credits(ledger, account) == (before + PRO_PACK, 0)
    assert order_of(sql, body["session_id"])[:4] == ("paid", 9900, 0, PRO_PACK)
    assert purchase_grants(sql, account) == [(PRO_PACK, PRO_PACK, body["session_id"])]
    orders = stripe_http.get(f"/v1/orders?account_id={account}", headers=service_headers).json()["items"]
    assert orders[0]["status"] == "paid" and orders[0]["amount"] == "99.00" and orders[0]["credits"] == "16500"
    assert_reconciled(ledger, account)

    # Every other event Stripe sent along is acknowledged and stored, unhandled.
    extra = [e for e in fake.take_events() if e["type"] != "checkout.session.completed"]
    for event in extra:
        assert deliver(stripe_http, fake, event).json()["handled"] is False
    stored = sql("SELECT count(*) FROM creditgate.stripe_events WHERE id = ANY(%s)", [e["id"] for e in extra])
    assert stored == [(len(extra),)]


def test_the_same_event_twenty_times_ten_at_once_credits_once(
    stripe_http, fake, make_account, service_headers, ledger, sql
):
    account = make_account()
    before, _ = credits(ledger, account)
    body, events = buy(stripe_http, fake, service_headers, account)
    completed = events[0]
    with ThreadPoolExecutor(max_workers=10) as pool:
        concurrent = list(pool.map(lambda _: deliver(stripe_http, fake, completed), range(10)))
    sequential = [deliver(stripe_http, fake, completed) for _ in range(10)]
    responses = concurrent + sequential
    assert [r.status_code for r in responses] == [200] * 20
    answers = [r.json() for r in responses]
    assert sum(not a["duplicate"] for a in answers) == 1
    assert all(a["duplicate"] and not a["handled"] for a in answers if a["duplicate"])
    assert credits(ledger, account) == (before + PRO_PACK, 0)
    assert len(purchase_grants(sql, account)) == 1
    assert order_of(sql, body["session_id"])[0] == "paid"
    assert sql("SELECT count(*) FROM creditgate.orders WHERE account_id = %s", account) == [(1,)]
    assert sql("SELECT count(*) FROM creditgate.stripe_events WHERE id = %s", completed["id"]) == [(1,)]
    assert_reconciled(ledger, account)


def test_another_event_about_the_same_session_does_not_credit_again(
    stripe_http, fake, make_account, service_headers, ledger, sql
):
    account = make_account()
    before, _ = credits(ledger, account)
    _, events = buy(stripe_http, fake, service_headers, account)
    twin = copy.deepcopy(events[0])
    twin["id"] = "evt_twin_" + new_key()
    twin["type"] = "checkout.session.async_payment_succeeded"
    assert deliver(stripe_http, fake, events[0]).json()["handled"] is True
    assert deliver(stripe_http, fake, twin).json()["duplicate"] is False
    assert credits(ledger, account) == (before + PRO_PACK, 0)
    assert len(purchase_grants(sql, account)) == 1


def test_a_delayed_payment_credits_only_when_it_succeeds(stripe_http, fake, make_account, service_headers, ledger, sql):
    account = make_account()
    before, _ = credits(ledger, account)
    body, events = buy(stripe_http, fake, service_headers, account, async_payment=True)
    assert events[0]["data"]["object"]["payment_status"] == "unpaid"
    deliver_all(stripe_http, fake, events)
    assert credits(ledger, account) == (before, 0)
    assert order_of(sql, body["session_id"])[0] == "pending"

    deliver_all(stripe_http, fake, fake.succeed_async_payment(body["session_id"]))
    assert credits(ledger, account) == (before + PRO_PACK, 0)
    assert order_of(sql, body["session_id"])[0] == "paid"

    failing, events = buy(stripe_http, fake, service_headers, account, async_payment=True)
    deliver_all(stripe_http, fake, events + fake.fail_async_payment(failing["session_id"]))
    assert order_of(sql, failing["session_id"])[0] == "failed"
    assert credits(ledger, account) == (before + PRO_PACK, 0)
    assert_reconciled(ledger, account)


def test_an_expired_session_marks_its_order_expired(stripe_http, fake, make_account, service_headers, ledger, sql):
    account = make_account()
    body = checkout(stripe_http, service_headers, account, key=new_key(), pack="growth").json()
    deliver_all(stripe_http, fake, fake.expire_checkout(body["session_id"]))
    assert order_of(sql, body["session_id"])[0] == "expired"
    assert purchase_grants(sql, account) == []


def test_a_payment_link_without_metadata_is_credited_by_its_price(stripe_http, fake, make_account, ledger, sql):
    """Sessions made outside creditgate (Payment Links) carry only client_reference_id;
    the pack is found from the line item's price, fetched from Stripe."""
    account = make_account()
    before, _ = credits(ledger, account)
    session = fake.client().v1.checkout.sessions.create(
        params={
            "mode": "payment",
            "line_items": [{"price": pack_price_id("growth"), "quantity": 2}],
            "success_url": "https://example.com/ok",
            "client_reference_id": account,
        }
    )
    deliver_all(stripe_http, fake, fake.complete_checkout(session.id))
    growth = 2 * (6_000 + 500) * MICRO
    assert credits(ledger, account) == (before + growth, 0)
    assert order_of(sql, session.id)[:4] == ("paid", 9800, 0, growth)
    assert_reconciled(ledger, account)


def test_events_for_unknown_accounts_are_stored_logged_and_acknowledged(stripe_http, fake, sql, caplog):
    session = fake.client().v1.checkout.sessions.create(
        params={
            "mode": "payment",
            "line_items": [{"price": pack_price_id("growth"), "quantity": 1}],
            "success_url": "https://example.com/ok",
            "metadata": {"account_id": "nobody-" + new_key(), "pack": "growth"},
        }
    )
    event = fake.complete_checkout(session.id)[0]
    with caplog.at_level(logging.WARNING, logger="creditgate.payments"):
        response = deliver(stripe_http, fake, event)
    assert response.status_code == 200
    assert response.json() == {"received": True, "duplicate": False, "handled": False}
    assert sql("SELECT handled, outcome FROM creditgate.stripe_events WHERE id = %s", event["id"]) == [
        (False, "unknown_account")
    ]
    assert any(event["id"] in r.getMessage() for r in caplog.records)


def test_an_event_nothing_matched_is_told_to_the_operator_once(stripe_http, fake, sql, ledger):
    session = fake.client().v1.checkout.sessions.create(
        params={
            "mode": "payment",
            "line_items": [{"price": pack_price_id("growth"), "quantity": 1}],
            "success_url": "https://example.com/ok",
            "metadata": {"account_id": "nobody-" + new_key(), "pack": "growth"},
        }
    )
    event = fake.complete_checkout(session.id)[0]
    assert deliver(stripe_http, fake, event).status_code == 200
    ignored = {**event, "id": "evt_" + new_key(), "type": "product.created"}  # stored, nothing to apply
    assert deliver(stripe_http, fake, ignored).status_code == 200

    for _ in range(2):
        ledger.rpc("creditgate_record_operator_alerts", {})

    alerts = sql(
        "SELECT key, detail FROM creditgate.notices WHERE account_id = 'operator' AND kind = 'stripe_unapplied'"
        " AND key IN (%s, %s)",
        event["id"],
        ignored["id"],
    )
    assert len(alerts) == 1 and alerts[0][0] == event["id"]
    detail = alerts[0][1]
    assert (detail["type"], detail["outcome"], detail["object_id"]) == (
        "checkout.session.completed",
        "unknown_account",
        session.id,
    )
    assert detail["amount_minor"] == event["data"]["object"]["amount_total"]


def test_unknown_event_types_are_acknowledged_and_stored(stripe_http, fake, sql):
    event = {
        "id": "evt_" + new_key(),
        "object": "event",
        "type": "product.created",
        "created": 1700000000,
        "livemode": False,
        "data": {"object": {"id": "prod_1", "object": "product"}},
        "api_version": "x",
    }
    assert deliver(stripe_http, fake, event).json() == {"received": True, "duplicate": False, "handled": False}
    assert sql("SELECT type, handled, outcome FROM creditgate.stripe_events WHERE id = %s", event["id"]) == [
        ("product.created", False, "ignored_type")
    ]


def test_half_refund_after_a_third_was_spent_takes_back_the_unspent_part(
    stripe_http, fake, make_account, service_headers, ledger, sql
):
    account = make_account()
    before, _ = credits(ledger, account)  # welcome credit + the free plan's allowance
    body, events = buy(stripe_http, fake, service_headers, account)
    deliver_all(stripe_http, fake, events)
    # Spend everything else first and then a third of the pack: the pack grant holds 2/3.
    spend(ledger, account, before + PRO_PACK // 3)
    assert purchase_grants(sql, account)[0][1] == PRO_PACK * 2 // 3
    charge = fake.get(events[0]["data"]["object"]["payment_intent"])["latest_charge"]

    refund = fake.refund(charge, amount=4950)  # half of $99.00
    deliver_all(stripe_http, fake, refund)
    half = PRO_PACK // 2
    assert credits(ledger, account) == (PRO_PACK * 2 // 3 - half, 0)
    status, amount, refunded, total, clawed, _ = order_of(sql, body["session_id"])
    assert (status, amount, refunded, total, clawed) == ("partially_refunded", 9900, 4950, PRO_PACK, half)
    lines = sql(
        "SELECT amount, external_ref FROM creditgate.ledger_entries WHERE account_id = %s AND kind = 'clawback'",
        account,
    )
    assert lines == [(-half, charge)]
    assert_reconciled(ledger, account)

    # The same refund again (cumulative amount unchanged) takes nothing more.
    again = copy.deepcopy(refund[0])
    again["id"] = "evt_again_" + new_key()
    deliver_all(stripe_http, fake, [again])
    assert credits(ledger, account) == (PRO_PACK * 2 // 3 - half, 0)

    # Refunding the rest: what is left of the pack goes, the spent third becomes debt.
    deliver_all(stripe_http, fake, fake.refund(charge))
    assert credits(ledger, account) == (0, PRO_PACK // 3)
    assert order_of(sql, body["session_id"])[:5] == ("refunded", 9900, 9900, PRO_PACK, PRO_PACK)
    balance = stripe_http.get(f"/v1/transactions?account_id={account}", headers=service_headers).json()
    assert [i["kind"] for i in balance["items"][:2]] == ["clawback", "clawback"]
    assert_reconciled(ledger, account)
    gate = stripe_http.post(
        "/v1/gate", headers=service_headers, json={"account_id": account, "feature": "ai_message", "mode": "check"}
    )
    assert gate.status_code == 402 and gate.json()["code"] == "debt_outstanding"


def test_a_refund_uses_other_credits_before_debt_and_rounds_down(
    stripe_http, fake, make_account, service_headers, ledger, sql
):
    account = make_account()
    before, _ = credits(ledger, account)
    _, events = buy(stripe_http, fake, service_headers, account, pack="starter")  # 2000 credits for $19.00
    deliver_all(stripe_http, fake, events)
    pack = 2_000 * MICRO
    spend(ledger, account, before + pack)  # all gone
    ledger.grant_credits(
        {"account_id": account, "amount": 10 * MICRO, "source": "promo", "reason": "test", "idempotency_key": new_key()}
    )
    charge = fake.get(events[0]["data"]["object"]["payment_intent"])["latest_charge"]
    deliver_all(stripe_http, fake, fake.refund(charge, amount=1))  # one cent of 1900
    share = pack * 1 // 1900  # 1052631 micro-credits, rounded down
    assert share == 1_052_631
    assert credits(ledger, account) == (10 * MICRO - share, 0)
    assert_reconciled(ledger, account)


def test_a_dispute_holds_the_account_until_it_is_won(stripe_http, fake, make_account, service_headers, ledger, sql):
    account = make_account()
    before, _ = credits(ledger, account)
    body, events = buy(stripe_http, fake, service_headers, account)
    deliver_all(stripe_http, fake, events)
    charge = fake.get(events[0]["data"]["object"]["payment_intent"])["latest_charge"]
    gate = {"account_id": account, "feature": "ai_message", "mode": "check"}

    opened = fake.dispute(charge)
    deliver_all(stripe_http, fake, opened)
    assert sql("SELECT status FROM creditgate.accounts WHERE id = %s", account) == [("disputed",)]
    assert order_of(sql, body["session_id"])[0] == "disputed"
    denied = stripe_http.post("/v1/gate", headers=service_headers, json=gate)
    assert denied.status_code == 403 and denied.json()["code"] == "account_disputed"

    won = copy.deepcopy(opened[0])
    won.update(id="evt_won_" + new_key(), type="charge.dispute.closed", created=won["created"] + 86400)
    won["data"]["object"]["status"] = "won"
    deliver_all(stripe_http, fake, [won])
    assert sql("SELECT status FROM creditgate.accounts WHERE id = %s", account) == [("active",)]
    assert order_of(sql, body["session_id"])[0] == "paid"
    assert stripe_http.post("/v1/gate", headers=service_headers, json=gate).status_code == 200
    assert credits(ledger, account) == (before + PRO_PACK, 0)
    # A late copy of the opening event does not reopen a decided dispute.
    late = copy.deepcopy(opened[0])
    late["id"] = "evt_late_" + new_key()
    deliver_all(stripe_http, fake, [late])
    assert sql("SELECT status FROM creditgate.accounts WHERE id = %s", account) == [("active",)]


def test_a_lost_dispute_takes_back_the_pack(stripe_http, fake, make_account, service_headers, ledger, sql):
    account = make_account()
    before, _ = credits(ledger, account)
    _, events = buy(stripe_http, fake, service_headers, account)
    deliver_all(stripe_http, fake, events)
    charge = fake.get(events[0]["data"]["object"]["payment_intent"])["latest_charge"]
    opened = fake.dispute(charge)
    lost = copy.deepcopy(opened[0])
    lost.update(id="evt_lost_" + new_key(), type="charge.dispute.closed", created=lost["created"] + 86400)
    lost["data"]["object"]["status"] = "lost"
    deliver_all(stripe_http, fake, opened + [lost])
    assert credits(ledger, account) == (before, 0)
    assert sql("SELECT status FROM creditgate.accounts WHERE id = %s", account) == [("disputed",)]
    assert sql("SELECT status, closed_at IS NOT NULL FROM creditgate.disputes WHERE account_id = %s", account) == [
        ("lost", True)
    ]
    assert_reconciled(ledger, account)
