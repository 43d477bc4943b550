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
    # Open holds were made in the period that is now the one before (they stay open).
    sql(
        "UPDATE creditgate.reservations SET created_at = created_at - make_interval(months => %s) "
        "WHERE account_id = %s AND status = 'active'",
        months,
        account,
    )
    # Allowances are keyed by the period they belong to, so their keys move with the clock.
    sql(
        "UPDATE creditgate.grants SET expires_at = expires_at - make_interval(months => %s), "
        "period_start = period_start - make_interval(months => %s), "
        "external_ref = 'allowance:' || plan_id || ':' || to_char((period_start - make_interval(months => %s)) "
        "AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') || ':' || key "
        "|| coalesce(substring(external_ref from '(:(more|back):[0-9]+)$'), '') "
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


def used(ledger, account: str, key: str = "credits") -> int:
    return next(line["used_this_period"] for line in ledger.balance(account)["balances"] if line["key"] == key)


def counter(sql, account: str, key: str = "credits") -> int:
    """The stored counter, read without the balance call (which would roll an ended period)."""
    return sql("SELECT used_this_period FROM creditgate.balances WHERE account_id = %s AND key = %s", account, key)[0][
        0
    ]


def journal_used(sql, account: str, key: str = "credits") -> int:
    """What the journal says the account consumed since its current period began."""
    return sql(
        "SELECT coalesce(-sum(e.amount), 0) FROM creditgate.ledger_entries e "
        "JOIN creditgate.accounts a ON a.id = e.account_id "
        "WHERE e.account_id = %s AND e.key = %s AND e.kind = 'consume' AND e.created_at >= a.period_start",
        account,
        key,
    )[0][0]


def backdate_journal(sql, account: str, months: int) -> None:
    """Moves the account's journal lines back in time with its clock (tests only: the
    journal is append-only, so the trigger that says so is bypassed for this one update)."""
    sql("SET session_replication_role = replica")
    try:
        sql(
            "UPDATE creditgate.ledger_entries SET created_at = created_at - make_interval(months => %s) "
            "WHERE account_id = %s",
            months,
            account,
        )
    finally:
        sql("SET session_replication_role = DEFAULT")


class TestUsedThisPeriod:
    def test_every_charge_counts_and_a_reset_starts_again(self, ledger, make_account, sql):
        account = make_account("free")
        commit(ledger, account, feature="ai_message", quantity=100)  # 20 credits
        ledger.gate(
            {
                "account_id": account,
                "feature": "chat_tokens",
                "mode": "commit",
                "estimate": {"input_tokens": 300, "max_output_tokens": 200},
                "idempotency_key": "tokens-1",
            }
        )
        assert used(ledger, account) == 20 * MICRO == journal_used(sql, account)
        assert used(ledger, account, "tokens") == 500 * MICRO == journal_used(sql, account, "tokens")
        assert used(ledger, account, "requests") == MICRO  # chat_tokens counts one request
        backdate_journal(sql, account, 1)
        age(sql, account, 1)
        assert counter(sql, account) == 20 * MICRO  # recounted: the aged period still holds them
        commit(ledger, account, feature="ai_message", quantity=5)  # rolls the period, then 1 credit
        assert used(ledger, account) == MICRO == journal_used(sql, account)
        assert used(ledger, account, "tokens") == 0 and used(ledger, account, "requests") == 0

    def test_usage_beyond_the_balance_counts_in_full(self, ledger, make_account, sql, welcome):
        account = make_account("test_open")
        spend = welcome + 100 * MICRO
        ledger.record_usage(
            {"account_id": account, "feature": "vm_minute", "quantity": spend // MICRO, "idempotency_key": "u"}
        )
        assert used(ledger, account) == spend == journal_used(sql, account)

    def test_moving_the_period_recounts_from_the_journal(self, ledger, make_account, sql):
        account = make_account("free")
        commit(ledger, account, feature="ai_message", quantity=100)
        start = sql("SELECT period_start FROM creditgate.accounts WHERE id = %s", account)[0][0]
        # As Stripe's invoice.paid does: the period moves without a charge in between.
        sql("UPDATE creditgate.accounts SET period_start = now() + interval '1 second' WHERE id = %s", account)
        assert counter(sql, account) == 0
        sql("UPDATE creditgate.accounts SET period_start = %s WHERE id = %s", start, account)
        assert used(ledger, account) == 20 * MICRO == journal_used(sql, account)

    def test_reconcile_reports_a_counter_that_disagrees_with_the_journal(self, ledger, make_account, sql):
        account = make_account("free")
        commit(ledger, account, feature="ai_message", quantity=100)
        assert ledger.reconcile(account)["ok"]
        drift = (
            "UPDATE creditgate.balances SET used_this_period = used_this_period + %s "
            "WHERE account_id = %s AND key = 'credits'"
        )
        sql(drift, 1, account)
        try:
            problems = ledger.reconcile(account)["problems"]
        finally:
            sql(drift, -1, account)  # other tests reconcile every balance
        assert [p["problem"] for p in problems] == [f"used_this_period_{20 * MICRO + 1}_but_journal_says_{20 * MICRO}"]

    def test_runway_is_the_credits_left_at_this_periods_daily_spend_over_at_least_a_week(
        self, ledger, make_account, sql, welcome
    ):
        account = make_account("free")
        assert ledger.balance(account)["runway_days"] is None  # nothing spent yet
        commit(ledger, account, feature="ai_message", quantity=350)  # 70 credits on the first day
        left = welcome + 30 * MICRO
        assert ledger.balance(account)["runway_days"] == round(left / (70 * MICRO / 7), 1)
        # Ten days into the period the same spend is 7 credits a day.
        sql(
            "UPDATE creditgate.accounts SET period_anchor = period_anchor - interval '10 days', "
            "period_start = period_start - interval '10 days' WHERE id = %s",
            account,
        )
        assert ledger.balance(account)["runway_days"] == round(left / (7 * MICRO), 1)

    def test_a_call_that_began_before_the_period_belongs_to_the_period_before(self, ledger, make_account, dsn, sql):
        import psycopg
        from psycopg.types.json import Jsonb

        account = make_account("free")
        with psycopg.connect(dsn) as call:
            call.execute("SELECT now()")  # the call's transaction begins: its lines are dated now
            with psycopg.connect(dsn, autocommit=True) as other:  # meanwhile a new period opens
                other.execute(
                    "UPDATE creditgate.accounts SET period_start = clock_timestamp() WHERE id = %s", [account]
                )
            answer = call.execute(
                "SELECT public.creditgate_gate(%s)",
                [
                    Jsonb(
                        {
                            "account_id": account,
                            "feature": "ai_message",
                            "mode": "commit",
                            "estimate": {"quantity": 100},
                            "idempotency_key": "late",
                        }
                    )
                ],
            ).fetchone()[0]
            call.commit()
        assert answer["allowed"] and answer["charged"] == 20 * MICRO
        assert used(ledger, account) == 0 == journal_used(sql, account)
        assert ledger.reconcile(account)["ok"]


class TestCalendarPeriods:
    def test_new_accounts_reset_on_the_first_of_the_month(self, ledger, make_account, sql):
        ledger.rpc("creditgate_apply_settings", {"periods": "calendar"})
        try:
            account = make_account("free")
        finally:
            ledger.rpc("creditgate_apply_settings", {"periods": "signup"})
        start, end, anchor = sql(
            "SELECT period_start, period_end, period_anchor FROM creditgate.accounts WHERE id = %s", account
        )[0]
        first = sql("SELECT date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'")[0][0]
        assert start == anchor == first
        assert end == sql("SELECT %s::timestamptz + interval '1 month'", first)[0][0]
        assert used(ledger, account) == 0 and counter(sql, account) == 0
        # The whole allowance for the rest of this month, and the next one on the 1st.
        assert sql(
            "SELECT amount FROM creditgate.grants WHERE account_id = %s AND source = 'allowance' AND key = 'credits'",
            account,
        ) == [(100 * MICRO,)]
        age(sql, account, 1)
        ledger.balance(account)
        assert sql("SELECT period_start FROM creditgate.accounts WHERE id = %s", account)[0][0] == first
        assert ledger.reconcile(account)["ok"]

    def test_the_catalog_sets_the_mode(self, ledger, tmp_path, sql):
        from functions.core.catalog import DEFAULT_CATALOG, apply_catalog

        calendar = tmp_path / "catalog.toml"
        calendar.write_text(DEFAULT_CATALOG.read_text().replace('periods = "signup"', 'periods = "calendar"'))
        test_plans = [r[0] for r in sql("SELECT id FROM creditgate.plans WHERE id LIKE 'test\\_%%' AND active")]
        assert "test_open" in test_plans
        try:
            assert apply_catalog(ledger, calendar)["periods"] == "calendar"
        finally:
            assert apply_catalog(ledger)["periods"] == "signup"
            # Applying a catalog retires plans it does not list: the suite's own test plans.
            sql("UPDATE creditgate.plans SET active = true WHERE id = ANY(%s)", test_plans)
        assert sql("SELECT period_mode FROM creditgate.settings") == [("signup",)]
