"""A reserved call holds its request as it holds its credits (sql/108_request_holds.sql):
settling counts it, releasing or expiring the hold gives it back, and a hold can never let
an account past its quota."""

from __future__ import annotations

import threading
import uuid

import pytest

from functions.core.errors import ProblemError
from tests.conftest import MICRO
from tests.maintenance.helpers import drain


def reserve(ledger, account: str) -> dict:
    return ledger.gate(
        {
            "account_id": account,
            "feature": "chat",
            "model": "gpt-4o-mini",
            "mode": "reserve",
            "estimate": {"input_tokens": 100, "max_output_tokens": 100},
            "idempotency_key": uuid.uuid4().hex,
        }
    )["reservation"]


def settle(ledger, account: str, hold_id: str) -> dict:
    return ledger.record_usage(
        {
            "account_id": account,
            "reservation_id": hold_id,
            "feature": "chat",
            "model": "gpt-4o-mini",
            "usage": {"input_tokens": 50, "output_tokens": 50},
            "idempotency_key": uuid.uuid4().hex,
        }
    )


def requests(ledger, account: str) -> dict:
    line = next(b for b in ledger.balance(account)["balances"] if b["key"] == "requests")
    return {k: line[k] for k in ("available", "reserved", "used_this_period", "debt")}


def request_hold(sql, hold_id: str):
    rows = sql("SELECT id, key, amount, status FROM creditgate.reservations WHERE parent_id = %s", hold_id)
    return rows[0] if rows else None


def assert_reconciled(ledger, account: str) -> None:
    answer = ledger.reconcile(account)
    assert answer["ok"], answer


class TestReserve:
    def test_holds_one_request(self, ledger, two_request_account, sql):
        hold = reserve(ledger, two_request_account)
        assert requests(ledger, two_request_account) == {
            "available": MICRO,
            "reserved": MICRO,
            "used_this_period": 0,
            "debt": 0,
        }
        _, key, amount, status = request_hold(sql, hold["id"])
        assert (key, amount, status) == ("requests", MICRO, "active")
        assert_reconciled(ledger, two_request_account)

    def test_open_holds_cannot_pass_the_quota(self, ledger, two_request_account):
        reserve(ledger, two_request_account)
        reserve(ledger, two_request_account)
        with pytest.raises(ProblemError) as denied:
            reserve(ledger, two_request_account)
        assert denied.value.code == "quota_exhausted"
        assert_reconciled(ledger, two_request_account)

    def test_concurrent_reserves_take_exactly_the_quota(self, ledger, two_request_account):
        allowed, refused = [], []

        def one() -> None:
            try:
                allowed.append(reserve(ledger, two_request_account))
            except ProblemError as error:
                refused.append(error.code)

        threads = [threading.Thread(target=one) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(allowed) == 2 and refused == ["quota_exhausted"] * 14
        assert requests(ledger, two_request_account)["reserved"] == 2 * MICRO
        assert_reconciled(ledger, two_request_account)


class TestSettle:
    def test_counts_the_held_request(self, ledger, two_request_account, sql):
        hold = reserve(ledger, two_request_account)
        answer = settle(ledger, two_request_account, hold["id"])
        assert answer["overdraft"] is False
        assert requests(ledger, two_request_account) == {
            "available": MICRO,
            "reserved": 0,
            "used_this_period": MICRO,
            "debt": 0,
        }
        assert request_hold(sql, hold["id"])[3] == "settled"
        assert_reconciled(ledger, two_request_account)

    def test_of_a_released_hold_counts_the_request_once(self, ledger, two_request_account):
        hold = reserve(ledger, two_request_account)
        ledger.release_reservation({"reservation_id": hold["id"]})
        settle(ledger, two_request_account, hold["id"])
        with pytest.raises(ProblemError) as again:
            settle(ledger, two_request_account, hold["id"])
        assert again.value.code == "reservation_settled"
        assert requests(ledger, two_request_account)["used_this_period"] == MICRO
        assert requests(ledger, two_request_account)["available"] == MICRO
        assert_reconciled(ledger, two_request_account)

    def test_of_a_released_hold_past_the_quota_is_debt(self, ledger, two_request_account):
        first = reserve(ledger, two_request_account)
        ledger.release_reservation({"reservation_id": first["id"]})
        reserve(ledger, two_request_account)
        reserve(ledger, two_request_account)  # the quota is held by two open calls now
        answer = settle(ledger, two_request_account, first["id"])  # the first call happened after all
        assert answer["overdraft"] is True
        assert requests(ledger, two_request_account)["debt"] == MICRO
        assert_reconciled(ledger, two_request_account)

    def test_of_a_hold_made_before_requests_were_held_counts_nothing_more(self, ledger, two_request_account, sql):
        """A hold from before sql/108 counted its request at the gate and has no request hold."""
        hold = reserve(ledger, two_request_account)
        _, _, amount, _ = request_hold(sql, hold["id"])
        # Turn it into such a hold: the request consumed from its hold, the request hold gone.
        sql(
            """SELECT creditgate.consume(account_id, key, amount, NULL, amount, created_at)
               FROM creditgate.reservations WHERE parent_id = %s""",
            hold["id"],
        )
        sql("DELETE FROM creditgate.reservations WHERE parent_id = %s", hold["id"])
        assert requests(ledger, two_request_account)["used_this_period"] == amount

        settle(ledger, two_request_account, hold["id"])

        assert requests(ledger, two_request_account)["used_this_period"] == amount
        assert_reconciled(ledger, two_request_account)


class TestRelease:
    def test_gives_the_request_back(self, ledger, two_request_account, sql):
        for _ in range(5):  # a failing model: every call released
            hold = reserve(ledger, two_request_account)
            ledger.release_reservation({"reservation_id": hold["id"]})
            assert request_hold(sql, hold["id"])[3] == "released"
        assert requests(ledger, two_request_account) == {
            "available": 2 * MICRO,
            "reserved": 0,
            "used_this_period": 0,
            "debt": 0,
        }
        reserve(ledger, two_request_account)
        reserve(ledger, two_request_account)
        assert_reconciled(ledger, two_request_account)

    def test_twice_gives_it_back_once(self, ledger, two_request_account):
        hold = reserve(ledger, two_request_account)
        ledger.release_reservation({"reservation_id": hold["id"]})
        assert ledger.release_reservation({"reservation_id": hold["id"]})["released"] == 0
        assert requests(ledger, two_request_account)["available"] == 2 * MICRO
        assert_reconciled(ledger, two_request_account)

    def test_the_request_hold_cannot_be_named(self, ledger, two_request_account, sql):
        hold = reserve(ledger, two_request_account)
        request_hold_id = str(request_hold(sql, hold["id"])[0])
        with pytest.raises(ProblemError) as released:
            ledger.release_reservation({"reservation_id": request_hold_id})
        assert released.value.code == "reservation_not_found"
        with pytest.raises(ProblemError) as settled:
            settle(ledger, two_request_account, request_hold_id)
        assert settled.value.code == "reservation_not_found"
        assert request_hold(sql, hold["id"])[3] == "active"


class TestExpiry:
    def test_maintenance_gives_the_request_back_and_counts_one_hold(self, ledger, two_request_account, sql):
        drain(ledger)
        hold = reserve(ledger, two_request_account)
        sql("UPDATE creditgate.reservations SET expires_at = now() - interval '1 second' WHERE id = %s", hold["id"])
        sql(
            "UPDATE creditgate.reservations SET expires_at = now() - interval '1 second' WHERE parent_id = %s",
            hold["id"],
        )

        assert ledger.run_maintenance({})["reservations_expired"] == 1

        assert request_hold(sql, hold["id"])[3] == "expired"
        assert requests(ledger, two_request_account)["available"] == 2 * MICRO
        assert requests(ledger, two_request_account)["reserved"] == 0
        assert_reconciled(ledger, two_request_account)
