"""Refunds of subscription invoices: what is left of the allowances the invoice's period
granted is taken back up to the refunded share (per balance key, cumulative over the
invoice's charges, exactly once), never as debt, so a cancellation delivered before or
after the refund leaves the same ledger; an ended period gives nothing back, and revenue
is counted net."""

from __future__ import annotations

import copy
import json
import threading
import time
from contextlib import contextmanager

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
    pack_price_id,
    plan_price_id,
)

PRO_PRICE = 3900  # minor units, as the fake's pro price
PRO = {"credits": 1_500 * MICRO, "requests": 2_000 * MICRO, "tokens": 200_000 * MICRO}


@contextmanager
def current_api(settings, ledger, fake):
    """The app against a fake Stripe of the current API version (charges name no invoice)."""
    from fastapi.testclient import TestClient

    from functions.local import build_app

    current = settings.model_copy(
        update={"stripe_secret_key": fake.api_key, "stripe_api_base": fake.url, "payments": "stripe"}
    )
    with TestClient(build_app(settings=current, ledger=ledger), raise_server_exceptions=False) as client:
        yield client


def subscribe(client, fake, headers, account, plan="pro"):
    session_id = checkout(client, headers, account, key=new_key(), plan=plan).json()["session_id"]
    events = fake.complete_checkout(session_id)
    return events[0]["data"]["object"]["subscription"], events


def paid_invoice(events) -> dict:
    return next(e for e in events if e["type"] == "invoice.paid")["data"]["object"]


def balance(ledger, account, key="credits") -> tuple[int, int]:
    line = next(b for b in ledger.balance(account)["balances"] if b["key"] == key)
    return line["available"], line["debt"]


def refund_row(sql, charge):
    rows = sql("SELECT refunded_minor, clawed_back FROM creditgate.invoice_refunds WHERE charge_id = %s", charge)
    return rows[0] if rows else None


def outcome(sql, event):
    return sql("SELECT handled, outcome FROM creditgate.stripe_events WHERE id = %s", event["id"])[0]


def spend(ledger, account, amount_micro):
    """ai_message costs 0.2 credits per unit."""
    body = {"idempotency_key": new_key(), "account_id": account, "feature": "ai_message"}
    ledger.record_usage(body | {"quantity": amount_micro // 200_000})


def test_partial_then_full_refund_takes_back_the_refunded_share_once(
    stripe_http, fake, make_account, service_headers, ledger, sql, welcome
):
    account = make_account()
    _, events = subscribe(stripe_http, fake, service_headers, account)
    deliver_all(stripe_http, fake, events)
    charge = paid_invoice(events)["charge"]
    assert credits(ledger, account) == (welcome + PRO["credits"], 0)

    third = fake.refund(charge, amount=PRO_PRICE // 3)  # $13.00 of $39.00
    deliver_all(stripe_http, fake, third)
    taken = {key: amount // 3 for key, amount in PRO.items()}
    assert credits(ledger, account) == (welcome + PRO["credits"] - taken["credits"], 0)
    assert balance(ledger, account, "requests") == (PRO["requests"] - taken["requests"], 0)
    assert balance(ledger, account, "tokens") == (PRO["tokens"] - taken["tokens"], 0)
    refunded, clawed = refund_row(sql, charge)
    assert refunded == 1300 and {k: clawed[k] for k in PRO} == taken
    assert outcome(sql, third[0]) == (True, "clawed_back")
    assert_reconciled(ledger, account)

    # The same event again, and another event with the same cumulative amount: nothing more.
    assert deliver(stripe_http, fake, third[0]).json()["duplicate"] is True
    twin = copy.deepcopy(third[0])
    twin["id"] = "evt_twin_" + new_key()
    deliver_all(stripe_http, fake, [twin])
    assert outcome(sql, twin) == (True, "already_clawed_back")
    assert credits(ledger, account) == (welcome + PRO["credits"] - taken["credits"], 0)
    assert refund_row(sql, charge)[1] == clawed
    assert_reconciled(ledger, account)

    # The rest: the whole allowance is gone, the welcome credit stays.
    deliver_all(stripe_http, fake, fake.refund(charge))
    assert credits(ledger, account) == (welcome, 0)
    assert balance(ledger, account, "requests") == (0, 0)
    assert balance(ledger, account, "tokens") == (0, 0)
    refunded, clawed = refund_row(sql, charge)
    assert refunded == PRO_PRICE and {k: clawed[k] for k in PRO} == PRO
    lines = sql(
        "SELECT amount, source FROM creditgate.ledger_entries "
        "WHERE account_id = %s AND key = 'credits' AND kind = 'clawback' AND external_ref = %s ORDER BY id",
        account,
        charge,
    )
    assert lines == [(-taken["credits"], "allowance"), (-(PRO["credits"] - taken["credits"]), "allowance")]
    assert_reconciled(ledger, account)


def test_a_refund_after_the_allowance_was_partly_spent_takes_what_is_left_and_makes_no_debt(
    stripe_http, fake, make_account, service_headers, ledger, sql, welcome
):
    account = make_account()
    _, events = subscribe(stripe_http, fake, service_headers, account)
    deliver_all(stripe_http, fake, events)
    charge = paid_invoice(events)["charge"]
    spend(ledger, account, 1_200 * MICRO)  # from the allowance first: 300 of it left
    assert credits(ledger, account) == (welcome + 300 * MICRO, 0)

    # Half: 750 due, the 300 left taken; the welcome credit is not the allowance's.
    half = fake.refund(charge, amount=PRO_PRICE // 2)
    deliver_all(stripe_http, fake, half)
    assert credits(ledger, account) == (welcome, 0)
    assert refund_row(sql, charge)[1]["credits"] == 300 * MICRO
    assert_reconciled(ledger, account)
    rest = fake.refund(charge)
    deliver_all(stripe_http, fake, rest)
    assert credits(ledger, account) == (welcome, 0)  # nothing of the credits left to take
    assert balance(ledger, account, "requests") == (0, 0)  # the rest of the unused requests
    assert refund_row(sql, charge)[1]["credits"] == 300 * MICRO
    assert_reconciled(ledger, account)
    gate = stripe_http.post(
        "/v1/gate", headers=service_headers, json={"account_id": account, "feature": "ai_message", "mode": "check"}
    )
    assert gate.status_code == 200


def test_cancel_and_refund_leave_the_same_ledger_in_either_order(
    stripe_http, fake, make_account, service_headers, ledger
):
    """Stripe's "cancel and refund" delivers the two events in either order."""
    results = []
    for refund_first in (True, False):
        account = make_account()
        sub, events = subscribe(stripe_http, fake, service_headers, account)
        deliver_all(stripe_http, fake, events)
        spend(ledger, account, 1_200 * MICRO)
        refund = fake.refund(paid_invoice(events)["charge"])
        deleted = fake.cancel_subscription(sub)
        deliver_all(stripe_http, fake, refund + deleted if refund_first else deleted + refund)
        results.append(credits(ledger, account))
        assert_reconciled(ledger, account)
    assert results[0] == results[1]


def test_a_refund_after_the_period_rolled_takes_nothing_and_is_recorded(
    stripe_http, fake, make_account, service_headers, ledger, sql, welcome
):
    account = make_account()
    sub_id, events = subscribe(stripe_http, fake, service_headers, account)
    deliver_all(stripe_http, fake, events)
    first = paid_invoice(events)
    # All of the first period's credits spent: its grant is empty, not expired, when the
    # renewal opens the next period.
    spend(ledger, account, PRO["credits"])
    renewal = fake.renew_subscription(sub_id)
    deliver_all(stripe_http, fake, renewal)
    assert credits(ledger, account) == (welcome + PRO["credits"], 0)

    refund = fake.refund(first["charge"])
    answer = deliver_all(stripe_http, fake, refund)
    assert answer == [{"received": True, "duplicate": False, "handled": True}]
    assert outcome(sql, refund[0]) == (True, "allowance_ended")
    # The running period's allowance is the renewal's, not the refunded invoice's.
    assert credits(ledger, account) == (welcome + PRO["credits"], 0)
    assert balance(ledger, account, "requests") == (PRO["requests"], 0)
    assert refund_row(sql, first["charge"]) == (PRO_PRICE, {})
    assert_reconciled(ledger, account)

    # The renewal's own refund takes from the period it opened.
    deliver_all(stripe_http, fake, fake.refund(paid_invoice(renewal)["charge"], amount=PRO_PRICE // 3))
    assert credits(ledger, account) == (welcome + PRO["credits"] - PRO["credits"] // 3, 0)
    assert_reconciled(ledger, account)


def test_a_refund_delivered_before_its_invoice_paid_is_taken_back_when_it_arrives(
    stripe_http, fake, make_account, service_headers, ledger, sql, welcome
):
    account = make_account()
    _, events = subscribe(stripe_http, fake, service_headers, account)
    completed, created, paid = events
    deliver_all(stripe_http, fake, [completed])  # the allowance, from the fetched subscription
    refund = fake.refund(paid["data"]["object"]["charge"], amount=PRO_PRICE // 2)
    deliver_all(stripe_http, fake, refund)
    assert outcome(sql, refund[0]) == (True, "refund_recorded")

    deliver_all(stripe_http, fake, [created, paid])
    assert credits(ledger, account) == (welcome + PRO["credits"] // 2, 0)
    assert_reconciled(ledger, account)


def revenue(client, headers) -> dict[str, int]:
    return client.get("/v1/admin/metrics?days=90", headers=headers).json()["revenue_minor"]


def test_revenue_is_net_of_pack_and_subscription_refunds(stripe_http, fake, make_account, service_headers, ledger):
    before = revenue(stripe_http, service_headers)
    buyer = make_account()
    pack = checkout(stripe_http, service_headers, buyer, key=new_key(), pack="pro").json()
    events = fake.complete_checkout(pack["session_id"])
    deliver_all(stripe_http, fake, events)
    pack_charge = fake.get(events[0]["data"]["object"]["payment_intent"])["latest_charge"]
    deliver_all(stripe_http, fake, fake.refund(pack_charge, amount=4950))

    subscriber = make_account()
    _, events = subscribe(stripe_http, fake, service_headers, subscriber)
    deliver_all(stripe_http, fake, events)
    sub_charge = paid_invoice(events)["charge"]
    deliver_all(stripe_http, fake, fake.refund(sub_charge, amount=1300))

    after = revenue(stripe_http, service_headers)
    assert after["packs"] - before["packs"] == 9900 - 4950
    assert after["subscriptions"] - before["subscriptions"] == PRO_PRICE - 1300
    assert_reconciled(ledger, buyer)
    assert_reconciled(ledger, subscriber)

    deliver_all(stripe_http, fake, fake.refund(pack_charge) + fake.refund(sub_charge))
    after = revenue(stripe_http, service_headers)
    assert (after["packs"], after["subscriptions"]) == (before["packs"], before["subscriptions"])
    assert_reconciled(ledger, buyer)
    assert_reconciled(ledger, subscriber)


def test_current_api_shapes_find_the_invoice_through_its_payment(
    settings, ledger, catalog_prices, make_account, service_headers, sql, welcome
):
    """API 2025-03-31+: a charge no longer names its invoice; the webhook asks Stripe for
    the invoice payment of the charge's PaymentIntent."""
    with FakeStripe(legacy_fields=False) as fake:
        fake.create_price(PRO_PRICE, "usd", recurring="month", id=plan_price_id("pro"))
        with current_api(settings, ledger, fake) as client:
            account = make_account()
            _, events = subscribe(client, fake, service_headers, account)
            deliver_all(client, fake, events)
            invoice = paid_invoice(events)
            payment = fake.client().v1.invoice_payments.list(params={"invoice": invoice["id"]}).data[0]
            charge = fake.get(payment.payment.payment_intent)["latest_charge"]
            refund = fake.refund(charge)
            assert "invoice" not in refund[0]["data"]["object"]
            deliver_all(client, fake, refund)
            assert credits(ledger, account) == (welcome, 0)
            assert refund_row(sql, charge)[0] == PRO_PRICE
            assert_reconciled(ledger, account)


def test_an_invoice_paid_by_two_payments_gives_back_its_allowance_once(
    settings, ledger, catalog_prices, make_account, service_headers, welcome
):
    """Partial payments (API 2025-05-28+): the share is the invoice's, over all its charges."""
    from tests.fakes import stripe_billing_objects as billing

    with FakeStripe(legacy_fields=False) as fake:
        fake.create_price(PRO_PRICE, "usd", recurring="month", id=plan_price_id("pro"))
        with current_api(settings, ledger, fake) as client:
            account = make_account()
            _, events = subscribe(client, fake, service_headers, account)
            deliver_all(client, fake, events)
            invoice = fake.get(paid_invoice(events)["id"])
            first = fake.client().v1.invoice_payments.list(params={"invoice": invoice["id"]}).data[0]
            for row in fake._all("invoice_payment"):
                if row["invoice"] == invoice["id"]:
                    row.update(amount_paid=PRO_PRICE // 2, amount_requested=PRO_PRICE // 2)
            second = billing.invoice_payment(
                "inpay_second", fake.clock, invoice=invoice, payment_intent="pi_second", paid_at=fake.clock
            )
            second.update(amount_paid=PRO_PRICE // 2, is_default=False)
            fake._put(second)
            template = fake.refund(fake.get(first.payment.payment_intent)["latest_charge"])[0]
            refunds = []
            for charge, intent in (
                (template["data"]["object"]["id"], first.payment.payment_intent),
                ("ch_second", "pi_second"),
            ):
                event = copy.deepcopy(template)
                event["id"] = "evt_" + new_key()
                event["data"]["object"].update(
                    id=charge, payment_intent=intent, amount=PRO_PRICE // 2, amount_refunded=PRO_PRICE // 2
                )
                refunds.append(event)
            deliver_all(client, fake, refunds[:1])
            assert credits(ledger, account) == (welcome + PRO["credits"] // 2, 0)
            deliver_all(client, fake, refunds[1:])
            assert credits(ledger, account) == (welcome, 0)
            assert_reconciled(ledger, account)


def test_a_refund_racing_its_invoice_paid_is_still_taken_back(
    stripe_http, fake, make_account, service_headers, ledger, sql, dsn, welcome
):
    """The refund arrives while invoice.paid is being applied (a redelivered backlog)."""
    import psycopg

    account = make_account()
    _, (completed, created, paid) = subscribe(stripe_http, fake, service_headers, account)
    deliver_all(stripe_http, fake, [completed, created])
    refund = fake.refund(paid["data"]["object"]["charge"])
    answer = {}
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT public.creditgate_apply_stripe_event(%s::jsonb)", (json.dumps(paid),))  # not committed
        racing = threading.Thread(target=lambda: answer.update(r=deliver(stripe_http, fake, refund[0])))
        racing.start()
        for _ in range(200):  # until the refund waits for the account's lock
            waiting = sql(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
                "%apply_stripe_event%",
            )
            if waiting[0][0]:
                break
            time.sleep(0.05)
        conn.commit()
        racing.join(20)
    assert answer["r"].status_code == 200
    assert credits(ledger, account) == (welcome, 0)
    assert_reconciled(ledger, account)


def test_a_payment_link_pack_refund_needs_no_invoice_permission(settings, ledger, catalog_prices, make_account):
    """A restricted key without Invoices: read still applies a pack's refund (not a 502 forever)."""
    with FakeStripe(legacy_fields=False) as fake:
        fake.create_price(4900, "usd", id=pack_price_id("growth"))
        with current_api(settings, ledger, fake) as client:
            account = make_account()
            before, _ = credits(ledger, account)
            session = fake.client().v1.checkout.sessions.create(
                params={
                    "mode": "payment",
                    "line_items": [{"price": pack_price_id("growth"), "quantity": 1}],
                    "success_url": "https://example.com/ok",
                    "client_reference_id": account,
                }
            )
            events = fake.complete_checkout(session.id)
            deliver_all(client, fake, events)
            assert credits(ledger, account)[0] > before
            refund = fake.refund(fake.get(events[0]["data"]["object"]["payment_intent"])["latest_charge"])
            fake.inject_error(
                403,
                message="The provided key does not have the required permissions",
                path="/v1/invoice_payments",
                times=5,
            )
            assert deliver(client, fake, refund[0]).status_code == 200
            assert credits(ledger, account) == (before, 0)
            assert_reconciled(ledger, account)


def hold_of(ledger, account, credits_: int) -> str:
    return ledger.gate(
        {
            "account_id": account,
            "feature": "vm_minute",  # 1 credit a minute
            "mode": "reserve",
            "estimate": {"quantity": credits_},
            "idempotency_key": new_key(),
        }
    )["reservation"]["id"]


def test_a_full_refund_while_a_hold_is_open_ends_the_allowance_and_leaves_other_credits(
    stripe_http, fake, make_account, service_headers, ledger, welcome
):
    """An open hold keeps the allowance it covers: what the call spends of it was used; the
    rest expires when the hold ends. The welcome credit is never taken."""
    for ends in ("settled", "released"):
        account = make_account()
        _, events = subscribe(stripe_http, fake, service_headers, account)
        deliver_all(stripe_http, fake, events)
        hold = hold_of(ledger, account, 1_520)  # the whole allowance and 20 of the welcome credit
        deliver_all(stripe_http, fake, fake.refund(paid_invoice(events)["charge"]))
        assert_reconciled(ledger, account)
        if ends == "settled":
            body = {"reservation_id": hold, "feature": "vm_minute", "quantity": 1_520, "idempotency_key": new_key()}
            ledger.record_usage(body)
            assert credits(ledger, account) == (welcome - 20 * MICRO, 0)
        else:
            ledger.release_reservation({"reservation_id": hold})
            assert credits(ledger, account) == (welcome, 0)
        assert_reconciled(ledger, account)


def end_hold(ledger, sql, hold: str, how: str) -> None:
    """Ends an open hold: released, left to expire (the scheduler expires it), or settled."""
    if how == "released":
        ledger.release_reservation({"reservation_id": hold})
    elif how == "expired":
        sql("UPDATE creditgate.reservations SET expires_at = now() - interval '1 second' WHERE id = %s", hold)
        ledger.run_maintenance({"limit": 5000})
    else:
        used = int(how.removeprefix("settled_"))
        ledger.record_usage(
            {"reservation_id": hold, "feature": "vm_minute", "quantity": used, "idempotency_key": new_key()}
        )


@pytest.mark.parametrize(
    ("ends", "left", "taken_later"),
    [
        ("released", 750, 250),
        ("expired", 750, 250),
        ("settled_900", 0, 100),  # 100 freed, all of it due
        ("settled_300", 450, 250),  # 700 freed, 250 of it due
        ("settled_1000", 0, 0),  # nothing freed: what the call used stays used
    ],
)
def test_what_a_hold_frees_of_a_partly_refunded_allowance_is_taken_back_when_it_ends(
    stripe_http, fake, make_account, service_headers, ledger, sql, welcome, ends, left, taken_later
):
    """A half refund is due 750 of the 1,500 credits; a hold keeps 1,000 of them, so only
    500 can go at once. What the hold frees later goes too, up to the 250 still due; what
    its call spends stays spent, and nothing becomes debt."""
    account = make_account()
    _, events = subscribe(stripe_http, fake, service_headers, account)
    deliver_all(stripe_http, fake, events)
    charge = paid_invoice(events)["charge"]
    hold = hold_of(ledger, account, 1_000)
    deliver_all(stripe_http, fake, fake.refund(charge, amount=PRO_PRICE // 2))
    assert credits(ledger, account) == (welcome, 0)
    assert refund_row(sql, charge)[1]["credits"] == 500 * MICRO
    assert_reconciled(ledger, account)

    end_hold(ledger, sql, hold, ends)
    assert credits(ledger, account) == (welcome + left * MICRO, 0)
    assert refund_row(sql, charge)[1]["credits"] == (500 + taken_later) * MICRO
    assert_reconciled(ledger, account)


def test_a_later_refund_counts_what_an_ended_hold_gave_back(
    stripe_http, fake, make_account, service_headers, ledger, sql, welcome
):
    """What was taken when the hold ended is the refund's: two thirds refunded in all are
    due 1,000 credits, so the second refund takes 250 more, not 500."""
    account = make_account()
    _, events = subscribe(stripe_http, fake, service_headers, account)
    deliver_all(stripe_http, fake, events)
    charge = paid_invoice(events)["charge"]
    hold = hold_of(ledger, account, 1_000)
    deliver_all(stripe_http, fake, fake.refund(charge, amount=PRO_PRICE // 2))
    ledger.release_reservation({"reservation_id": hold})
    assert credits(ledger, account) == (welcome + 750 * MICRO, 0)
    deliver_all(stripe_http, fake, fake.refund(charge, amount=PRO_PRICE * 2 // 3 - PRO_PRICE // 2))
    assert credits(ledger, account) == (welcome + 500 * MICRO, 0)
    assert refund_row(sql, charge)[1]["credits"] == 1_000 * MICRO
    assert_reconciled(ledger, account)


def to_plan(client, fake, sub: str, plan: str) -> None:
    deliver_all(client, fake, fake.update_subscription_price(sub, plan_price_id(plan)))


@pytest.mark.parametrize("hold_ends", ["before", "while_away", "after"])
@pytest.mark.parametrize(("refunded", "kept"), [(PRO_PRICE, 0), (PRO_PRICE // 2, 750)])
def test_a_plan_round_trip_never_gives_back_a_refunded_allowance(
    stripe_http, fake, make_account, service_headers, ledger, sql, welcome, hold_ends, refunded, kept
):
    """pro -> business -> pro in one period gives back what expired of pro's allowance on
    leaving: never what its refund was due, whether a hold kept that part when the refund
    came and ended before the trip, while on business, or after the return."""
    account = make_account()
    sub, events = subscribe(stripe_http, fake, service_headers, account)
    deliver_all(stripe_http, fake, events)
    hold = hold_of(ledger, account, 1_000)
    deliver_all(stripe_http, fake, fake.refund(paid_invoice(events)["charge"], amount=refunded))
    if hold_ends == "before":
        ledger.release_reservation({"reservation_id": hold})
    to_plan(stripe_http, fake, sub, "business")
    if hold_ends == "while_away":
        ledger.release_reservation({"reservation_id": hold})
    to_plan(stripe_http, fake, sub, "pro")
    if hold_ends == "after":
        ledger.release_reservation({"reservation_id": hold})
    assert credits(ledger, account) == (welcome + kept * MICRO, 0)
    assert balance(ledger, account, "requests") == (PRO["requests"] - PRO["requests"] * refunded // PRO_PRICE, 0)
    assert_reconciled(ledger, account)


def test_a_refund_delivered_while_on_another_plan_is_taken_when_the_allowance_comes_back(
    stripe_http, fake, make_account, service_headers, ledger, sql, welcome
):
    """The refund finds pro's allowance ended (the account is on business) and takes
    nothing; coming back to pro in the same period brings back only the unrefunded part."""
    account = make_account()
    sub, events = subscribe(stripe_http, fake, service_headers, account)
    deliver_all(stripe_http, fake, events)
    to_plan(stripe_http, fake, sub, "business")
    refund = fake.refund(paid_invoice(events)["charge"], amount=PRO_PRICE // 2)
    deliver_all(stripe_http, fake, refund)
    assert outcome(sql, refund[0]) == (True, "allowance_ended")
    to_plan(stripe_http, fake, sub, "pro")
    assert credits(ledger, account) == (welcome + 750 * MICRO, 0)
    assert balance(ledger, account, "tokens") == (PRO["tokens"] // 2, 0)
    assert_reconciled(ledger, account)
    # Another trip brings back the 750 that expired, and only that.
    to_plan(stripe_http, fake, sub, "business")
    to_plan(stripe_http, fake, sub, "pro")
    assert credits(ledger, account) == (welcome + 750 * MICRO, 0)
    assert_reconciled(ledger, account)
