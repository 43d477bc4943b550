"""Allowances reset as ledger movements on each account's own anchor, lazily on first use."""

from __future__ import annotations

from tests.conftest import MICRO, available, commit


def age(sql, account: str, months: int) -> None:
    """Moves an account's clock back: its anchor and current period start `months` earlier."""
    sql(
        "UPDATE creditgate.accounts SET period_anchor = period_anchor - make_interval(months => %s), "
        "period_start = period_start - make_interval(months => %s), "
        "period_end = period_end - make_interval(months => %s) WHERE id = %s",
        months,
        months,
        months,
        account,
    )
    # Allowances are keyed by the period they belong to, so their keys move with the clock.
    sql(
        "UPDATE creditgate.grants SET expires_at = expires_at - make_interval(months => %s), "
        "period_start = period_start - make_interval(months => %s), "
        "external_ref = 'allowance:' || plan_id || ':' || to_char((period_start - make_interval(months => %s)) "
        "AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') || ':' || key "
        "WHERE account_id = %s AND source = 'allowance'",
        months,
        months,
        months,
        account,
    )


class TestLazyRollover:
    def test_the_first_call_after_period_end_expires_the_old_allowance_and_grants_the_new(
        self, ledger, make_account, sql, welcome
    ):
        account = make_account("free")
        commit(ledger, account, feature="ai_message", quantity=100)  # 20 of the 100-credit allowance
        age(sql, account, 1)
        answer = commit(ledger, account, feature="ai_message", quantity=5)  # 1 credit, in the new period
        assert answer["allowed"]
        assert available(ledger, account) == welcome + 100 * MICRO - MICRO
        kinds = [
            (line["kind"], line["amount"])
            for line in ledger.transactions({"account_id": account, "key": "credits", "limit": 10})["items"]
        ]
        assert ("expire", -80 * MICRO) in kinds and ("grant", 100 * MICRO) in kinds
        assert ledger.reconcile(account)["ok"]

    def test_three_missed_months_grant_only_the_current_period_once(self, ledger, make_account, sql):
        account = make_account("free")
        age(sql, account, 3)
        for _ in range(3):
            ledger.balance(account)
        grants = sql(
            "SELECT count(*) FROM creditgate.grants WHERE account_id = %s AND source = 'allowance' AND key = 'credits'",
            account,
        )
        assert grants == [(2,)]  # the first period's and the current one's: none for the missed two
        start, end = sql("SELECT period_start, period_end FROM creditgate.accounts WHERE id = %s", account)[0]
        assert start <= sql("SELECT now()")[0][0] < end
        assert ledger.reconcile(account)["ok"]

    def test_a_reservation_across_the_reset_keeps_its_hold(self, ledger, make_account, sql, welcome):
        account = make_account("free")
        reservation = ledger.gate(
            {
                "account_id": account,
                "feature": "ai_message",
                "mode": "reserve",
                "estimate": {"quantity": 500},
                "idempotency_key": "r",
            }
        )["reservation"]
        age(sql, account, 1)
        ledger.balance(account)  # rolls: the held 100 credits cannot expire while reserved
        assert ledger.reconcile(account)["ok"]
        ledger.release_reservation({"reservation_id": reservation["id"]})  # now the old allowance expires
        assert available(ledger, account) == welcome + 100 * MICRO
        assert ledger.reconcile(account)["ok"]
