"""Refunds under holds (sql/123_refunds_under_holds.sql, 124_refunds_and_round_trips.sql): a
subscription refund still due something is `owing`, and every hold end (and a return to a
plan) runs its claw-back again. What a refund can still take, when, under which lock and
at what cost on the settle path."""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager

import psycopg
import pytest

from tests.conftest import grant
from tests.payments.conftest import MICRO, assert_reconciled, credits, deliver, deliver_all, new_key
from tests.payments.test_webhook_subscription_refunds import (
    PRO,
    PRO_PRICE,
    balance,
    hold_of,
    paid_invoice,
    refund_row,
    spend,
    subscribe,
    to_plan,
)

# The statement of sql/123_refunds_under_holds.sql that marks the refunds made before it.
MARK_OLD_REFUNDS_OWING = """
UPDATE creditgate.invoice_refunds r SET owing = true
WHERE EXISTS (SELECT 1 FROM creditgate.stripe_events e
              WHERE e.object_id = r.invoice_id AND e.type = 'invoice.paid' AND e.handled)
  AND r.account_id = %s"""

# Before 123 the held part of the share stayed in the allowance grant, not set aside.
UNDO_SET_ASIDE = """
WITH aside AS (
  DELETE FROM creditgate.grants s WHERE s.account_id = %s AND s.plan_id IS NULL AND s.external_ref LIKE '%%:refund:%%'
  RETURNING s.external_ref, s.remaining)
UPDATE creditgate.grants o SET remaining = o.remaining + a.remaining FROM aside a
WHERE o.account_id = %s AND starts_with(a.external_ref, o.external_ref || ':refund:')"""


def owing(sql, account) -> list[bool]:
    return [row[0] for row in sql("SELECT owing FROM creditgate.invoice_refunds WHERE account_id = %s", account)]


@contextmanager
def counted(dsn):
    """A session whose PL/pgSQL calls are counted: `calls(name)` is how often `name` ran in
    the current transaction."""
    with psycopg.connect(dsn) as conn:
        conn.execute("SET track_functions = 'pl'")

        def run(function: str, request: dict):
            return conn.execute(f"SELECT public.{function}(%s::jsonb)", (json.dumps(request),)).fetchone()[0]

        def calls(name: str) -> int:
            row = conn.execute(
                "SELECT coalesce(sum(calls), 0) FROM pg_stat_xact_user_functions "
                "WHERE schemaname = 'creditgate' AND funcname = %s",
                (name,),
            ).fetchone()
            return int(row[0])

        yield conn, run, calls


def settle(ledger, hold: str, used: int) -> None:
    ledger.record_usage(
        {"reservation_id": hold, "feature": "vm_minute", "quantity": used, "idempotency_key": new_key()}
    )


# ───────────────────────────── 1. a refund due only what was used is owing for good


@pytest.mark.parametrize("refunded", [PRO_PRICE // 2, PRO_PRICE])
def test_a_refund_due_only_what_was_used_is_not_owing_and_hold_ends_do_not_run_it_again(
    stripe_http, fake, make_account, service_headers, ledger, sql, dsn, welcome, refunded
):
    """1,200 of the 1,500 credits used, then a half (or full) refund: the 300 left go, the
    rest of the share was used and can never be taken. Nothing is held and nothing expired,
    so no hold end and no plan return can give the refund more: it is not owing, and a
    settle, release or expiry does not run its claw-back again (a first version of sql/123
    kept it owing, and ran it on every hold end, for the rest of the period)."""
    account = make_account()
    _, events = subscribe(stripe_http, fake, service_headers, account)
    deliver_all(stripe_http, fake, events)
    grant(ledger, account, 100)
    spend(ledger, account, 1_200 * MICRO)
    charge = paid_invoice(events)["charge"]
    deliver_all(stripe_http, fake, fake.refund(charge, amount=refunded))
    assert refund_row(sql, charge)[1]["credits"] == 300 * MICRO
    assert credits(ledger, account) == (welcome + 100 * MICRO, 0)
    assert owing(sql, account) == [False]

    holds = [hold_of(ledger, account, 10) for _ in range(3)]
    with counted(dsn) as (conn, run, calls):
        run("creditgate_release_reservation", {"reservation_id": holds[0]})
        run(
            "creditgate_record_usage",
            {"reservation_id": holds[1], "feature": "vm_minute", "quantity": 4, "idempotency_key": new_key()},
        )
        conn.execute(
            "UPDATE creditgate.reservations SET expires_at = now() - interval '1 second' WHERE id = %s", (holds[2],)
        )
        run("creditgate_run_maintenance", {"limit": 5000})
        assert calls("free_hold") >= 3
        assert calls("claw_back_invoice") == 0
        conn.commit()
    assert credits(ledger, account) == (welcome + 96 * MICRO, 0)
    assert refund_row(sql, charge)[1]["credits"] == 300 * MICRO
    assert_reconciled(ledger, account)


def test_a_refund_is_owing_while_a_hold_keeps_part_of_its_share_and_no_longer_after(
    stripe_http, fake, make_account, service_headers, ledger, sql, welcome
):
    """The flag still follows what may come back: held when the refund came, it is owing
    until the hold's end takes the rest of the share, then it is not."""
    account = make_account()
    _, events = subscribe(stripe_http, fake, service_headers, account)
    deliver_all(stripe_http, fake, events)
    charge = paid_invoice(events)["charge"]
    first, second = hold_of(ledger, account, 600), hold_of(ledger, account, 400)
    deliver_all(stripe_http, fake, fake.refund(charge, amount=PRO_PRICE // 2))  # 750 due, 500 unheld
    assert refund_row(sql, charge)[1]["credits"] == 500 * MICRO
    assert owing(sql, account) == [True]
    settle(ledger, first, 600)  # its call spent what it kept: 400 held, 250 still due
    assert owing(sql, account) == [True]
    settle(ledger, second, 300)  # 100 freed: taken, 150 due that was used
    assert refund_row(sql, charge)[1]["credits"] == 600 * MICRO
    assert credits(ledger, account) == (welcome, 0)
    assert owing(sql, account) == [False]
    assert_reconciled(ledger, account)


def test_a_full_refund_with_a_hold_stays_owing_for_a_return_to_the_plan(
    stripe_http, fake, make_account, service_headers, ledger, sql, welcome
):
    """Refunded in full while a hold keeps 1,000: the held part expires when the hold ends,
    and would come back with pro after a trip to business. The refund stays owing for that
    (and takes it on the return)."""
    account = make_account()
    sub, events = subscribe(stripe_http, fake, service_headers, account)
    deliver_all(stripe_http, fake, events)
    hold = hold_of(ledger, account, 1_000)
    deliver_all(stripe_http, fake, fake.refund(paid_invoice(events)["charge"]))
    ledger.release_reservation({"reservation_id": hold})
    assert credits(ledger, account) == (welcome, 0)
    assert owing(sql, account) == [True]
    # Another hold's end runs it again: nothing to take, still owing.
    ledger.release_reservation({"reservation_id": hold_of(ledger, account, 1)})
    assert owing(sql, account) == [True]
    to_plan(stripe_http, fake, sub, "business")
    to_plan(stripe_http, fake, sub, "pro")
    assert credits(ledger, account) == (welcome, 0)  # nothing of pro's allowance came back
    assert balance(ledger, account, "requests")[0] == 0
    assert owing(sql, account) == [False]
    assert_reconciled(ledger, account)


# ───────────────────── 2. what another call spends while a hold keeps the refund's part


@pytest.mark.parametrize("release_first", [True, False])
def test_spending_while_a_hold_keeps_the_refunds_part_does_not_change_what_the_refund_takes(
    stripe_http, fake, make_account, service_headers, ledger, sql, welcome, release_first
):
    """1,500 of allowance and 1,000 other credits; a hold keeps 1,000 of the allowance when
    90% of the invoice is refunded (1,350 due, the 500 unheld taken at once). Whether the
    user's next 1,000-credit call comes before or after the hold is released, the refund
    should end with its 1,350: the user keeps 150 of other credits either way."""
    account = make_account()
    _, events = subscribe(stripe_http, fake, service_headers, account)
    deliver_all(stripe_http, fake, events)
    grant(ledger, account, 1_000)
    charge = paid_invoice(events)["charge"]
    hold = hold_of(ledger, account, 1_000)
    deliver_all(stripe_http, fake, fake.refund(charge, amount=PRO_PRICE * 9 // 10))
    assert refund_row(sql, charge)[1]["credits"] == 500 * MICRO
    if release_first:
        ledger.release_reservation({"reservation_id": hold})
    spend(ledger, account, 1_000 * MICRO)
    if not release_first:
        ledger.release_reservation({"reservation_id": hold})
    assert_reconciled(ledger, account)
    assert credits(ledger, account) == (welcome + 150 * MICRO, 0)
    assert refund_row(sql, charge)[1]["credits"] == 1_350 * MICRO


def aside(sql, account) -> list[tuple[int, int]]:
    """(amount, remaining) of the parts of an allowance set aside for a refund."""
    return sql(
        "SELECT amount, remaining FROM creditgate.grants WHERE account_id = %s AND external_ref LIKE '%%:refund:%%' "
        "ORDER BY id",
        account,
    )


@pytest.mark.parametrize(("used", "taken"), [(1_000, 500), (400, 1_100)])
def test_the_holds_own_settle_may_spend_the_part_set_aside_and_the_refund_takes_the_rest(
    stripe_http, fake, make_account, service_headers, ledger, sql, welcome, used, taken
):
    """The 850 held of the refund's 1,350 is set aside when the refund comes; the hold made
    before it may still spend it. Settled for all of its 1,000, the call used 850 of it and
    150 of the allowance: nothing of the allowance is left to take. Settled for 400, the
    call used 400 of it: the other 450 and the allowance's unheld 150 go to the refund at
    the settle. The user's other 1,000 credits are untouched either way."""
    account = make_account()
    _, events = subscribe(stripe_http, fake, service_headers, account)
    deliver_all(stripe_http, fake, events)
    grant(ledger, account, 1_000)
    charge = paid_invoice(events)["charge"]
    hold = hold_of(ledger, account, 1_000)
    deliver_all(stripe_http, fake, fake.refund(charge, amount=PRO_PRICE * 9 // 10))
    assert refund_row(sql, charge)[1]["credits"] == 500 * MICRO
    assert aside(sql, account) == [(850 * MICRO, 850 * MICRO)]
    assert owing(sql, account) == [True]
    settle(ledger, hold, used)
    assert credits(ledger, account) == (welcome + 1_000 * MICRO, 0)
    assert refund_row(sql, charge)[1]["credits"] == taken * MICRO
    assert aside(sql, account) == [(850 * MICRO, 0)]
    # (A settle for all it held frees nothing and runs no claw-back; the next hold end does.)
    ledger.release_reservation({"reservation_id": hold_of(ledger, account, 1)})
    assert owing(sql, account) == [False]
    assert refund_row(sql, charge)[1]["credits"] == taken * MICRO
    assert_reconciled(ledger, account)


def test_a_round_trip_after_the_refund_set_a_part_aside_never_gives_that_part_back(
    stripe_http, fake, make_account, service_headers, ledger, sql, welcome
):
    """Half refunded while a hold keeps 1,000: 500 taken, 250 set aside. On business the
    hold settles for 100 (of the part set aside): the other 150 of it go to the refund at
    once, and the 750 left of pro's allowance expire. Back on pro, only those 750 come back
    (the part set aside is no allowance of the plan's any more), and the refund takes its
    last 100 from them: 650 of pro's 1,500 are the user's (1,500 less 750 refunded, less 100
    used)."""
    account = make_account()
    sub, events = subscribe(stripe_http, fake, service_headers, account)
    deliver_all(stripe_http, fake, events)
    charge = paid_invoice(events)["charge"]
    hold = hold_of(ledger, account, 1_000)
    deliver_all(stripe_http, fake, fake.refund(charge, amount=PRO_PRICE // 2))
    assert aside(sql, account) == [(250 * MICRO, 250 * MICRO)]
    to_plan(stripe_http, fake, sub, "business")
    settle(ledger, hold, 100)
    assert refund_row(sql, charge)[1]["credits"] == 650 * MICRO
    assert aside(sql, account) == [(250 * MICRO, 0)]
    assert owing(sql, account) == [True]
    to_plan(stripe_http, fake, sub, "pro")
    back = sql(
        "SELECT amount FROM creditgate.grants "
        "WHERE account_id = %s AND key = 'credits' AND external_ref LIKE '%%:back:%%'",
        account,
    )
    assert back == [(750 * MICRO,)]
    assert refund_row(sql, charge)[1]["credits"] == 750 * MICRO
    assert credits(ledger, account) == (welcome + 650 * MICRO, 0)
    assert owing(sql, account) == [False]
    assert_reconciled(ledger, account)


# ───────────────────────────────────── 3. locks: a hold end racing a refund's webhook


@pytest.mark.parametrize("first", ["release", "refund"])
def test_a_hold_end_racing_a_refund_waits_for_the_account_and_takes_the_same(
    stripe_http, fake, make_account, service_headers, ledger, sql, dsn, welcome, first
):
    """free_hold runs the owed refunds under the account's lock, as the refund's webhook
    does: whichever comes second waits for the first, and the ledger is the one of either
    order (750 of the allowance taken, 750 left), with no deadlock."""
    account = make_account()
    _, events = subscribe(stripe_http, fake, service_headers, account)
    deliver_all(stripe_http, fake, events)
    charge = paid_invoice(events)["charge"]
    hold = hold_of(ledger, account, 1_000)
    refund = fake.refund(charge, amount=PRO_PRICE // 2)
    answer: dict = {}
    with psycopg.connect(dsn) as conn:
        if first == "release":
            conn.execute(
                "SELECT public.creditgate_release_reservation(%s::jsonb)", (json.dumps({"reservation_id": hold}),)
            )
            second = threading.Thread(target=lambda: answer.update(r=deliver(stripe_http, fake, refund[0])))
        else:
            conn.execute("SELECT public.creditgate_apply_stripe_event(%s::jsonb)", (json.dumps(refund[0]),))
            second = threading.Thread(
                target=lambda: answer.update(r=ledger.release_reservation({"reservation_id": hold}))
            )
        second.start()
        for _ in range(200):  # until the second waits for the account's lock
            waiting = sql(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND "
                "(query LIKE '%%apply_stripe_event%%' OR query LIKE '%%release_reservation%%')"
            )
            if waiting[0][0]:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the second call did not wait for the account")
        conn.commit()
        second.join(20)
    assert "r" in answer
    if first == "release":
        assert answer["r"].status_code == 200
    else:  # the refund's event was applied in this test's session: the webhook records it handled
        deliver_all(stripe_http, fake, refund)
    assert credits(ledger, account) == (welcome + 750 * MICRO, 0)
    assert refund_row(sql, charge)[1]["credits"] == 750 * MICRO
    assert owing(sql, account) == [False]
    assert_reconciled(ledger, account)


# ─────────────────────────────────── 4. the probe every hold end makes, nothing owing


def test_the_owed_refunds_probe_is_an_index_lookup_on_owing_rows_only(dsn, make_account):
    """With many refunds none of which is owing, the probe free_hold makes reads the partial
    index of owing rows (empty for the account), not the table."""
    account = make_account()
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO creditgate.invoice_refunds (charge_id, invoice_id, account_id, amount_minor) "
            "SELECT 'ch_probe_' || g || '_' || %s, 'in_probe_' || g, %s, 100 FROM generate_series(1, 20000) g",
            (account, account),
        )
        conn.execute("ANALYZE creditgate.invoice_refunds")
        plan = conn.execute(
            "EXPLAIN (FORMAT JSON) SELECT invoice_id, min(charge_id) AS charge_id FROM creditgate.invoice_refunds "
            "WHERE account_id = %s AND owing GROUP BY invoice_id ORDER BY invoice_id",
            (account,),
        ).fetchone()[0]
        conn.rollback()
    text = json.dumps(plan)
    assert "invoice_refunds_owing" in text
    assert "Seq Scan" not in text


# ─────────────────────────── 5. the migration's UPDATE, on refunds made before it


def test_refunds_marked_owing_by_the_migration_take_a_held_part_given_back_before_it_at_a_later_hold_end(
    stripe_http, fake, make_account, service_headers, ledger, sql, welcome
):
    """A refund made before 123 whose hold then ended gave the held part back to the user.
    The migration marks it owing: the next hold end of the account, whenever it comes, takes
    it back (here 250, from the 1,000 the user had for days). A refund of an earlier period
    is only unmarked."""
    account = make_account()
    sub, events = subscribe(stripe_http, fake, service_headers, account)
    deliver_all(stripe_http, fake, events)
    charge = paid_invoice(events)["charge"]
    hold = hold_of(ledger, account, 1_000)
    deliver_all(stripe_http, fake, fake.refund(charge, amount=PRO_PRICE // 2))
    sql("UPDATE creditgate.invoice_refunds SET owing = false WHERE account_id = %s", account)  # as before 123
    sql(UNDO_SET_ASIDE, account, account)  # nor did it set the held part aside
    ledger.release_reservation({"reservation_id": hold})
    assert credits(ledger, account) == (welcome + 1_000 * MICRO, 0)  # the held 250 given back, as before

    sql(MARK_OLD_REFUNDS_OWING, account)
    assert owing(sql, account) == [True]
    ledger.release_reservation({"reservation_id": hold_of(ledger, account, 1)})
    assert credits(ledger, account) == (welcome + 750 * MICRO, 0)
    assert refund_row(sql, charge)[1]["credits"] == 750 * MICRO
    assert owing(sql, account) == [False]
    assert_reconciled(ledger, account)

    # An earlier period's refund: the next hold end takes nothing from the new period.
    renewal = fake.renew_subscription(sub)
    deliver_all(stripe_http, fake, renewal)
    renewed = credits(ledger, account)
    sql(MARK_OLD_REFUNDS_OWING, account)
    ledger.release_reservation({"reservation_id": hold_of(ledger, account, 1)})
    assert credits(ledger, account) == renewed
    assert owing(sql, account) == [False]
    assert balance(ledger, account, "requests")[0] == PRO["requests"]
    assert_reconciled(ledger, account)


# ─────────── 6. a returned allowance: the claw-back stopped at the first grant a hold covers


def test_a_refund_takes_the_unheld_part_of_a_returned_allowance_while_a_hold_keeps_the_rest(
    stripe_http, fake, make_account, service_headers, ledger, sql, welcome
):
    """pro -> business -> pro while a hold keeps 1,000 of pro's allowance: the 500 that
    expired on leaving came back as its own grant (':back:'), unheld. A half refund is due
    750 and must take those 500 at once. The claw-back walked the grants largest first and
    stopped at the first one with nothing unheld (the held 1,000), so it took nothing: the
    user could spend the 500 until the hold ended (and keep them, were it settled in full)."""
    account = make_account()
    sub, events = subscribe(stripe_http, fake, service_headers, account)
    deliver_all(stripe_http, fake, events)
    charge = paid_invoice(events)["charge"]
    hold = hold_of(ledger, account, 1_000)
    to_plan(stripe_http, fake, sub, "business")
    to_plan(stripe_http, fake, sub, "pro")
    assert credits(ledger, account) == (welcome + 500 * MICRO, 0)
    deliver_all(stripe_http, fake, fake.refund(charge, amount=PRO_PRICE // 2))
    assert (refund_row(sql, charge)[1] or {}).get("credits", 0) == 500 * MICRO
    assert credits(ledger, account) == (welcome, 0)
    settle(ledger, hold, 1_000)  # its call spends what it kept: nothing more to take
    assert credits(ledger, account) == (welcome, 0)
    assert_reconciled(ledger, account)
