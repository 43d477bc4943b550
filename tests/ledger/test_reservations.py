"""Reserve, settle, release, and debt: usage that happened is never lost."""

from __future__ import annotations

import uuid

import pytest

from functions.core.errors import ProblemError
from tests.conftest import MICRO, available, commit


def reserve(ledger, account: str, quantity: int, feature: str = "vm_minute") -> dict:
    return ledger.gate(
        {
            "account_id": account,
            "feature": feature,
            "mode": "reserve",
            "estimate": {"quantity": quantity},
            "idempotency_key": uuid.uuid4().hex,
        }
    )


def settle(ledger, reservation_id: str, quantity: int, feature: str = "vm_minute") -> dict:
    return ledger.record_usage(
        {
            "reservation_id": reservation_id,
            "feature": feature,
            "quantity": quantity,
            "idempotency_key": uuid.uuid4().hex,
        }
    )


def hold_10_then_owe_1(ledger, account: str, welcome: int) -> str:
    """A 10-credit hold stays open while other usage leaves 1 credit of debt; its id."""
    held = reserve(ledger, account, 10)
    other = reserve(ledger, account, 1)
    # Everything but the 10 held is unreserved once the small hold settles: one credit more is debt.
    settle(ledger, other["reservation"]["id"], welcome // MICRO - 9)
    assert balance_line(ledger, account)["debt"] == MICRO
    return held["reservation"]["id"]


def balance_line(ledger, account: str, key: str = "credits") -> dict:
    return next(line for line in ledger.balance(account)["balances"] if line["key"] == key)


class TestReserveThenSettle:
    def test_settle_charges_the_actual_cost_and_frees_the_rest(self, ledger, make_account, welcome):
        account = make_account("test_open")
        gate = reserve(ledger, account, 10)
        assert gate["reservation"]["amount"] == 10 * MICRO
        line = balance_line(ledger, account)
        assert (line["available"], line["reserved"]) == (welcome - 10 * MICRO, 10 * MICRO)

        usage = settle(ledger, gate["reservation"]["id"], 4)
        assert usage["cost"] == 4 * MICRO
        assert usage["reservation"] == {"id": gate["reservation"]["id"], "status": "settled", "released": 6 * MICRO}
        assert usage["overdraft"] is False
        line = balance_line(ledger, account)
        assert (line["available"], line["reserved"], line["debt"]) == (welcome - 4 * MICRO, 0, 0)
        assert ledger.reconcile(account)["ok"]

    def test_settle_above_the_hold_draws_from_the_balance_then_records_debt(self, ledger, make_account, welcome):
        account = make_account("test_open")
        gate = reserve(ledger, account, 5)
        credits = welcome // MICRO
        usage = settle(ledger, gate["reservation"]["id"], credits + 7)
        assert usage["cost"] == (credits + 7) * MICRO
        assert usage["overdraft"] is True
        assert usage["balance"] == {"key": "credits", "available": 0, "debt": 7 * MICRO}
        assert ledger.reconcile(account)["ok"], ledger.reconcile(account)

        with pytest.raises(ProblemError) as denied:
            ledger.gate({"account_id": account, "feature": "vm_minute", "mode": "check"})
        assert (denied.value.status, denied.value.code) == (402, "debt_outstanding")
        assert denied.value.fields["debt"] == "7"

        # The next grant pays the debt first.
        ledger.grant_credits(
            {
                "account_id": account,
                "amount": 10 * MICRO,
                "source": "adjustment",
                "reason": "top up",
                "idempotency_key": uuid.uuid4().hex,
            }
        )
        line = balance_line(ledger, account)
        assert (line["available"], line["debt"]) == (3 * MICRO, 0)
        assert ledger.gate({"account_id": account, "feature": "vm_minute", "mode": "check"})["allowed"]
        assert ledger.reconcile(account)["ok"]

    def test_a_second_settle_of_the_same_reservation_is_refused(self, ledger, make_account):
        account = make_account("test_open")
        gate = reserve(ledger, account, 3)
        settle(ledger, gate["reservation"]["id"], 1)
        with pytest.raises(ProblemError) as error:
            settle(ledger, gate["reservation"]["id"], 1)
        assert (error.value.status, error.value.code) == (409, "reservation_settled")

    def test_usage_after_release_is_still_recorded_and_charged(self, ledger, make_account, welcome):
        account = make_account("test_open")
        gate = reserve(ledger, account, 3)
        ledger.release_reservation({"reservation_id": gate["reservation"]["id"]})
        usage = settle(ledger, gate["reservation"]["id"], 2)
        assert usage["cost"] == 2 * MICRO
        assert usage["reservation"] == {"id": gate["reservation"]["id"], "status": "settled", "released": 0}
        assert available(ledger, account) == welcome - 2 * MICRO
        # The hold served that call: a second usage of it is refused, not charged again.
        with pytest.raises(ProblemError) as error:
            settle(ledger, gate["reservation"]["id"], 2)
        assert (error.value.status, error.value.code) == (409, "reservation_settled")
        assert available(ledger, account) == welcome - 2 * MICRO
        assert ledger.reconcile(account)["ok"]


class TestRelease:
    def test_release_frees_the_hold_and_twice_is_a_no_op(self, ledger, make_account, welcome):
        account = make_account("test_open")
        gate = reserve(ledger, account, 8)
        first = ledger.release_reservation({"reservation_id": gate["reservation"]["id"]})
        second = ledger.release_reservation({"reservation_id": gate["reservation"]["id"]})
        assert first == {"id": gate["reservation"]["id"], "status": "released", "released": 8 * MICRO}
        assert second["status"] == "released" and second["released"] == 0
        assert available(ledger, account) == welcome
        assert ledger.reconcile(account)["ok"]

    def test_release_after_debt_pays_the_debt_first(self, ledger, make_account, welcome):
        account = make_account("test_open")
        held = hold_10_then_owe_1(ledger, account, welcome)
        ledger.release_reservation({"reservation_id": held})
        line = balance_line(ledger, account)
        assert (line["available"], line["reserved"], line["debt"]) == (9 * MICRO, 0, 0)
        assert ledger.reconcile(account)["ok"], ledger.reconcile(account)

    @pytest.mark.parametrize(
        ("cost", "overdraft", "after"),
        [
            (3, False, (6, 0, 0)),  # the freed 10 pay the 1 of debt, 3 are charged, 6 stay
            (12, True, (0, 0, 3)),  # the freed 10 pay the 1 of debt and 9 of the 12; 3 are owed
        ],
    )
    def test_settling_while_in_debt_pays_the_debt_from_the_freed_hold_first(
        self, ledger, make_account, welcome, cost, overdraft, after
    ):
        account = make_account("test_open")
        held = hold_10_then_owe_1(ledger, account, welcome)
        usage = settle(ledger, held, cost)
        assert usage["overdraft"] is overdraft
        line = balance_line(ledger, account)
        assert (line["available"], line["reserved"], line["debt"]) == tuple(x * MICRO for x in after)
        assert ledger.reconcile(account)["ok"], ledger.reconcile(account)

    def test_unknown_reservation_is_404(self, ledger):
        with pytest.raises(ProblemError) as error:
            ledger.release_reservation({"reservation_id": str(uuid.uuid4())})
        assert (error.value.status, error.value.code) == (404, "reservation_not_found")


class TestCommit:
    def test_commit_refuses_when_short_and_changes_nothing(self, ledger, make_account, welcome):
        account = make_account("test_open")
        with pytest.raises(ProblemError) as error:
            commit(ledger, account, quantity=welcome // MICRO + 1)
        assert error.value.status == 402
        assert error.value.fields["required"] == str(welcome // MICRO + 1)
        assert [p["id"] for p in error.value.fields["packs"]] == ["starter", "growth", "pro"]
        assert available(ledger, account) == welcome
