"""Maintenance rolls periods: each due allowance once, even with two runs at once,
after missed months, and in bounded batches."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import psycopg

from tests.conftest import MICRO
from tests.maintenance.helpers import ZERO, counts, current_allowances, drain, move_back

FREE_KEYS = {"credits": 1, "requests": 1, "tokens": 1}  # the free plan's allowances


def test_two_runs_at_once_grant_each_due_allowance_once(ledger, make_account, sql):
    drain(ledger)
    accounts = [make_account("free") for _ in range(30)]
    for account in accounts:
        move_back(sql, account, "1 month 5 days")

    start = threading.Barrier(2)

    def run(_):
        start.wait()
        return ledger.run_maintenance({"limit": 500})

    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(run, range(2))

    assert first["allowances_granted"] + second["allowances_granted"] == 30 * len(FREE_KEYS)
    assert first["accounts"] + second["accounts"] == 30
    for account in accounts:
        assert current_allowances(sql, account) == FREE_KEYS
    third = ledger.run_maintenance({"limit": 500})
    assert counts(third) == ZERO and third["accounts"] == 0 and third["more"] is False
    assert ledger.reconcile()["ok"], ledger.reconcile()


def test_three_missed_months_grant_only_the_current_period_once(ledger, make_account, sql):
    drain(ledger)
    account = make_account("free")
    move_back(sql, account, "3 months 10 days")

    answer = ledger.run_maintenance({})

    assert answer["allowances_granted"] == len(FREE_KEYS)
    assert answer["grants_expired"] == len(FREE_KEYS)  # the allowance of three months ago
    assert current_allowances(sql, account) == FREE_KEYS
    [(start, end, anchor, now)] = sql(
        "SELECT period_start, period_end, period_anchor, now() FROM creditgate.accounts WHERE id = %s", account
    )
    assert start <= now < end
    [(months,)] = sql("SELECT %s::timestamptz = %s::timestamptz + interval '3 months'", start, anchor)
    assert months, "the current period counts whole months from the signup anchor"
    # Welcome credit (50) plus one allowance (100): the missed periods granted nothing.
    credits = next(b for b in ledger.balance(account)["balances"] if b["key"] == "credits")
    assert credits["available"] == 150 * MICRO
    assert counts(ledger.run_maintenance({})) == ZERO
    assert ledger.reconcile(account)["ok"], ledger.reconcile(account)


def test_bounded_runs_report_more_and_finish_the_rest(ledger, make_account, sql):
    drain(ledger)
    accounts = [make_account("free") for _ in range(5)]
    for account in accounts:
        move_back(sql, account, "1 month 2 days")

    runs = [ledger.run_maintenance({"limit": 2})]
    while runs[-1]["more"]:
        assert len(runs) < 10
        runs.append(ledger.run_maintenance({"limit": 2}))

    assert [r["accounts"] for r in runs] == [2, 2, 1]
    assert [r["more"] for r in runs] == [True, True, False]
    assert sum(r["allowances_granted"] for r in runs) == 5 * len(FREE_KEYS)
    for account in accounts:
        assert current_allowances(sql, account) == FREE_KEYS


def test_an_account_in_use_is_skipped_not_waited_for(ledger, make_account, sql, dsn):
    drain(ledger)
    busy, free = make_account("free"), make_account("free")
    move_back(sql, busy, "1 month 3 days")
    move_back(sql, free, "1 month 3 days")

    with psycopg.connect(dsn) as holder:
        # The lock a gate or usage call holds while it works on the account.
        holder.execute("SELECT 1 FROM creditgate.accounts WHERE id = %s FOR NO KEY UPDATE", [busy])
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(ledger.run_maintenance, {}).result(timeout=20)
        assert answer["accounts"] == 1 and answer["more"] is True
        assert current_allowances(sql, free) == FREE_KEYS
        assert sql("SELECT period_end <= now() FROM creditgate.accounts WHERE id = %s", busy) == [(True,)]
        holder.rollback()

    answer = ledger.run_maintenance({})
    assert answer["accounts"] == 1 and answer["allowances_granted"] == len(FREE_KEYS)
    assert current_allowances(sql, busy) == FREE_KEYS


def test_stripe_billed_periods_only_expire_until_invoice_paid(ledger, make_account, sql):
    drain(ledger)
    account = make_account("free")
    sql("UPDATE creditgate.accounts SET billing_source = 'stripe' WHERE id = %s", account)
    move_back(sql, account, "1 month 1 day")
    [(old_start,)] = sql("SELECT period_start FROM creditgate.accounts WHERE id = %s", account)

    answer = ledger.run_maintenance({})

    assert answer["allowances_granted"] == 0
    assert answer["grants_expired"] == len(FREE_KEYS)
    assert sql("SELECT period_start FROM creditgate.accounts WHERE id = %s", account) == [(old_start,)]
    # Not picked up again on every run while the subscription stays unpaid.
    again = ledger.run_maintenance({})
    assert counts(again) == ZERO and again["accounts"] == 0 and again["more"] is False
    assert ledger.reconcile(account)["ok"]


def test_a_promo_grant_expires_mid_period(ledger, make_account, sql):
    drain(ledger)
    account = make_account("free")
    ledger.grant_credits(
        {
            "account_id": account,
            "amount": 5 * MICRO,
            "source": "promo",
            "reason": "launch week",
            "idempotency_key": "promo-1",
            "expires_at": "2999-01-01T00:00:00Z",
        }
    )
    sql(
        "UPDATE creditgate.grants SET expires_at = now() - interval '1 minute' WHERE account_id = %s"
        " AND source = 'promo'",
        account,
    )

    answer = ledger.run_maintenance({})

    assert answer["grants_expired"] == 1 and answer["allowances_granted"] == 0
    credits = next(b for b in ledger.balance(account)["balances"] if b["key"] == "credits")
    assert credits["available"] == 150 * MICRO
    assert ledger.reconcile(account)["ok"]


def test_limit_must_be_a_whole_number_in_range(ledger):
    import pytest

    from functions.core.errors import ProblemError

    for bad in (0, 5001, 2.5, "10", None):
        with pytest.raises(ProblemError) as caught:
            ledger.run_maintenance({"limit": bad})
        assert caught.value.status == 422 and caught.value.code == "invalid_request"
