"""Expiry that respects holds, grants that expire on time, plan round trips, and holds that
serve one usage call (sql/98_expiry_and_holds.sql)."""

from __future__ import annotations

import uuid

import pytest

from functions.core.errors import ProblemError
from tests.conftest import MICRO, available, commit, grant
from tests.ledger.test_periods import age


def reserve(ledger, account: str, credits: int) -> dict:
    """A hold of `credits` on the ai_message feature (1 credit per 5 messages on the free plan's rates)."""
    return ledger.gate(
        {
            "account_id": account,
            "feature": "ai_message",
            "mode": "reserve",
            "estimate": {"quantity": credits * 5},
            "idempotency_key": uuid.uuid4().hex,
        }
    )["reservation"]


def settle(ledger, reservation_id: str, credits: int) -> dict:
    return ledger.record_usage(
        {
            "reservation_id": reservation_id,
            "feature": "ai_message",
            "quantity": credits * 5,
            "idempotency_key": uuid.uuid4().hex,
        }
    )


def grants(sql, account: str) -> list[tuple[str, int]]:
    return sql(
        "SELECT source, remaining FROM creditgate.grants WHERE account_id = %s AND key = 'credits' ORDER BY id",
        account,
    )


@pytest.fixture(autouse=True)
def _rates(sql):
    # The helpers above assume ai_message costs 0.2 credits a message.
    assert sql("SELECT credits_per_unit FROM creditgate.features WHERE id = 'ai_message'") == [(MICRO // 5,)]


class TestHoldsAcrossExpiry:
    def test_a_hold_across_the_reset_is_paid_by_the_old_allowance(self, ledger, make_account, sql, welcome):
        account = make_account("free")  # a 100-credit allowance, then the welcome credit
        hold = reserve(ledger, account, 100)  # the allowance, all of it
        age(sql, account, 1)
        ledger.balance(account)  # the period rolls: the old allowance is held, so nothing of it goes
        settle(ledger, hold["id"], 100)
        # The call used what the old allowance held for it; the new allowance and the
        # welcome credit are untouched (they used to pay instead, and the held part expired).
        assert available(ledger, account) == 100 * MICRO + welcome
        assert ledger.reconcile(account)["ok"]

    def test_what_a_hold_left_of_the_old_allowance_expires_when_it_settles(self, ledger, make_account, sql, welcome):
        account = make_account("free")
        hold = reserve(ledger, account, 120)  # the allowance and 20 of the welcome credit
        age(sql, account, 1)
        ledger.balance(account)
        settle(ledger, hold["id"], 60)  # paid by the old allowance; its other 40 expire now
        assert available(ledger, account) == 100 * MICRO + welcome
        assert sorted(grants(sql, account)) == sorted(
            [("welcome", welcome), ("allowance", 0), ("allowance", 100 * MICRO)]
        )
        assert ledger.reconcile(account)["ok"]

    def test_a_plan_change_with_a_hold_open_takes_nothing_else(self, ledger, make_account, welcome):
        account = make_account("free")
        grant(ledger, account, 50)  # an adjustment, standing for a pack bought earlier
        hold = reserve(ledger, account, 100)
        ledger.change_plan({"account_id": account, "plan": "test_open"})  # a plan without allowance
        settle(ledger, hold["id"], 100)
        assert available(ledger, account) == welcome + 50 * MICRO
        assert ledger.reconcile(account)["ok"]

    def test_maintenance_has_no_more_work_while_a_hold_covers_an_expired_grant(self, ledger, make_account, sql):
        account = make_account("free")
        hold = reserve(ledger, account, 100)
        sql(
            "UPDATE creditgate.grants SET expires_at = now() - interval '1 second' "
            "WHERE account_id = %s AND source = 'allowance'",
            account,
        )
        ledger.run_maintenance({"limit": 5000})
        # The hold covers all that is left of the expired allowance: nothing is due for it.
        covered = sql(
            "SELECT count(*) FROM creditgate.grants g JOIN creditgate.balances b USING (account_id, key) "
            "WHERE g.account_id = %s AND g.live AND g.expires_at <= now() AND creditgate.expirable(g, b) > 0",
            account,
        )
        assert covered == [(0,)]
        ledger.release_reservation({"reservation_id": hold["id"]})
        assert ledger.reconcile(account)["ok"]


class TestNothingElseSpendsWhatAHoldKeeps:
    """The part of an expired grant that a hold made before the expiry keeps is that hold's:
    a commit, usage without a hold, or another hold spends the user's other credits."""

    def test_a_commit_after_the_reset_while_the_old_hold_is_open(self, ledger, make_account, sql, welcome):
        account = make_account("free")
        hold = reserve(ledger, account, 100)  # all of this period's allowance
        age(sql, account, 1)
        ledger.balance(account)  # the new period: the old allowance is expired, kept for the hold
        commit(ledger, account, feature="ai_message", quantity=100 * 5)  # paid by the new allowance
        ledger.release_reservation({"reservation_id": hold["id"]})  # the old allowance goes now
        assert available(ledger, account) == welcome
        assert ledger.reconcile(account)["ok"]

    def test_a_plan_change_then_a_commit_while_the_hold_is_open(self, ledger, make_account, welcome):
        account = make_account("free")
        hold = reserve(ledger, account, 100)
        ledger.change_plan({"account_id": account, "plan": "starter"})  # 500; free's 100 kept for the hold
        commit(ledger, account, feature="ai_message", quantity=100 * 5)
        ledger.release_reservation({"reservation_id": hold["id"]})
        assert available(ledger, account) == 400 * MICRO + welcome
        assert ledger.reconcile(account)["ok"]

    def test_a_hold_made_after_the_reset_is_paid_by_the_new_allowance(self, ledger, make_account, sql, welcome):
        account = make_account("free")
        old_hold = reserve(ledger, account, 100)
        age(sql, account, 1)
        new_hold = reserve(ledger, account, 50)  # made in the new period: the old allowance is not its
        ledger.release_reservation({"reservation_id": old_hold["id"]})
        settle(ledger, new_hold["id"], 50)
        assert available(ledger, account) == 50 * MICRO + welcome
        assert ledger.reconcile(account)["ok"]

    def test_an_expired_promo_under_a_hold_is_not_spent_by_a_commit(self, ledger, make_account, sql, welcome):
        account = make_account("test_open")  # the welcome credit only
        promo = grant(ledger, account, 10, source="promo", expires_at="2999-01-01T00:00:00Z")
        hold = reserve(ledger, account, 10)
        sql("UPDATE creditgate.grants SET expires_at = now() - interval '1 minute' WHERE id = %s", promo["grant_id"])
        commit(ledger, account, feature="ai_message", quantity=10 * 5)
        ledger.release_reservation({"reservation_id": hold["id"]})
        assert available(ledger, account) == welcome - 10 * MICRO
        expired = sql(
            "SELECT -sum(amount) FROM creditgate.ledger_entries WHERE grant_id = %s AND kind = 'expire'",
            promo["grant_id"],
        )
        assert expired == [(10 * MICRO,)]  # all of it expired, none of it spent
        assert ledger.reconcile(account)["ok"]


class TestEndingAHoldInDebt:
    """What a hold kept of an expired grant pays for its own call only, never for debt."""

    @pytest.fixture
    def in_debt_with_a_held_expired_promo(self, ledger, make_account, sql, welcome):
        account = make_account("test_open")  # the welcome credit only
        promo = grant(ledger, account, 3, source="promo", expires_at="2999-01-01T00:00:00Z")
        hold = reserve(ledger, account, 3)
        sql("UPDATE creditgate.grants SET expires_at = now() WHERE id = %s", promo["grant_id"])
        # Usage without a hold: the welcome credit, then 5 credits of debt.
        ledger.record_usage(
            {
                "account_id": account,
                "feature": "ai_message",
                "quantity": (welcome // MICRO + 5) * 5,
                "idempotency_key": uuid.uuid4().hex,
            }
        )
        return account, hold

    def debt(self, ledger, account):
        return next(b for b in ledger.balance(account)["balances"] if b["key"] == "credits")["debt"]

    def test_a_release_lets_it_expire(self, ledger, in_debt_with_a_held_expired_promo):
        account, hold = in_debt_with_a_held_expired_promo
        ledger.release_reservation({"reservation_id": hold["id"]})
        assert self.debt(ledger, account) == 5 * MICRO
        assert ledger.reconcile(account)["ok"]

    def test_a_settle_for_less_pays_only_the_call_from_it(self, ledger, in_debt_with_a_held_expired_promo):
        account, hold = in_debt_with_a_held_expired_promo
        settle(ledger, hold["id"], 1)  # 1 of the 3 held: the call; the other 2 expire
        assert self.debt(ledger, account) == 5 * MICRO
        assert ledger.reconcile(account)["ok"]


class TestGrantsExpireOnTime:
    def test_an_expired_promo_cannot_be_spent_before_maintenance_runs(self, ledger, make_account, sql, welcome):
        account = make_account("test_open")  # the welcome credit only
        promo = grant(ledger, account, 10, source="promo", expires_at="2999-01-01T00:00:00Z")
        sql("UPDATE creditgate.grants SET expires_at = now() - interval '1 minute' WHERE id = %s", promo["grant_id"])
        with pytest.raises(ProblemError) as refused:
            ledger.gate(
                {
                    "account_id": account,
                    "feature": "ai_message",
                    "mode": "commit",
                    "estimate": {"quantity": (welcome + 10 * MICRO) // (MICRO // 5)},
                    "idempotency_key": "all-of-it",
                }
            )
        assert (refused.value.status, refused.value.code) == (402, "insufficient_credits")
        assert available(ledger, account) == welcome
        expired = sql(
            "SELECT amount FROM creditgate.ledger_entries WHERE grant_id = %s AND kind = 'expire'", promo["grant_id"]
        )
        assert expired == [(-10 * MICRO,)]
        assert ledger.reconcile(account)["ok"]


class TestPlanRoundTrips:
    def test_coming_back_to_a_plan_in_the_same_period_brings_back_its_allowance(self, ledger, make_account, welcome):
        account = make_account("free")
        ledger.change_plan({"account_id": account, "plan": "starter"})
        ledger.change_plan({"account_id": account, "plan": "free"})
        assert available(ledger, account) == 100 * MICRO + welcome
        assert ledger.reconcile(account)["ok"]

    def test_a_round_trip_with_a_hold_open_keeps_the_whole_allowance(self, ledger, make_account, welcome):
        account = make_account("free")
        hold = reserve(ledger, account, 30)
        ledger.change_plan({"account_id": account, "plan": "starter"})
        ledger.change_plan({"account_id": account, "plan": "free"})
        ledger.release_reservation({"reservation_id": hold["id"]})  # nothing was used
        assert available(ledger, account) == 100 * MICRO + welcome
        ledger.change_plan({"account_id": account, "plan": "starter"})
        ledger.change_plan({"account_id": account, "plan": "free"})  # and again, with nothing held
        assert available(ledger, account) == 100 * MICRO + welcome
        assert ledger.reconcile(account)["ok"]

    def test_what_was_used_before_leaving_stays_used(self, ledger, make_account, sql, welcome):
        account = make_account("free")
        hold = reserve(ledger, account, 30)
        settle(ledger, hold["id"], 30)  # 30 of the free allowance
        for plan in ("starter", "free", "starter", "free"):
            ledger.change_plan({"account_id": account, "plan": plan})
        assert available(ledger, account) == 70 * MICRO + welcome
        # Every return is one grant, keyed by the one it replaces: replays add nothing.
        ledger.change_plan({"account_id": account, "plan": "free"})
        assert available(ledger, account) == 70 * MICRO + welcome
        assert ledger.reconcile(account)["ok"]


class TestReleasedHolds:
    def test_an_expired_hold_serves_one_usage_call(self, ledger, make_account, sql, welcome):
        account = make_account("free")
        hold = reserve(ledger, account, 5)
        sql("UPDATE creditgate.reservations SET expires_at = now() - interval '1 second' WHERE id = %s", hold["id"])
        ledger.run_maintenance({"limit": 5000})
        first = settle(ledger, hold["id"], 5)
        assert first["reservation"]["status"] == "settled" and first["cost"] == 5 * MICRO
        with pytest.raises(ProblemError) as refused:
            settle(ledger, hold["id"], 5)
        assert (refused.value.status, refused.value.code) == (409, "reservation_settled")
        assert available(ledger, account) == 95 * MICRO + welcome
        assert ledger.reconcile(account)["ok"]
