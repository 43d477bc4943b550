"""Grants and burn order: priority, then soonest expiry, then oldest."""

from __future__ import annotations

from tests.conftest import MICRO, available, commit, grant


def remaining_by_source(sql, account: str) -> dict[str, int]:
    rows = sql(
        "SELECT source, sum(remaining) FROM creditgate.grants WHERE account_id = %s AND key = 'credits' "
        "GROUP BY source",
        account,
    )
    return {source: int(total) for source, total in rows}


class TestBurnOrder:
    def test_an_expiring_allowance_is_used_before_purchased_credits(self, ledger, make_account, sql):
        account = make_account("free")  # 100 credits of allowance expiring at period end + welcome
        sql(
            "INSERT INTO creditgate.grants (account_id, key, source, amount, remaining, priority, external_ref) "
            "VALUES (%s, 'credits', 'purchase', 0 + 500000000, 500000000, 30, 'test-pack')",
            account,
        )
        sql(
            "UPDATE creditgate.balances SET available = available + 500000000 "
            "WHERE account_id = %s AND key = 'credits'",
            account,
        )
        sql(
            "INSERT INTO creditgate.ledger_entries (account_id, key, kind, amount, balance_after, source) "
            "SELECT %s, 'credits', 'grant', 500000000, available + reserved - debt, 'purchase' "
            "FROM creditgate.balances WHERE account_id = %s AND key = 'credits'",
            account,
            account,
        )
        before = remaining_by_source(sql, account)
        commit(ledger, account, feature="ai_message", quantity=100)  # 0.2 credits each: 20 credits
        after = remaining_by_source(sql, account)
        assert before["allowance"] - after["allowance"] == 20 * MICRO
        assert after["purchase"] == before["purchase"] == 500 * MICRO
        assert after["welcome"] == before["welcome"]
        assert ledger.reconcile(account)["ok"]

    def test_sooner_expiry_burns_first_within_a_priority(self, ledger, make_account, sql, welcome):
        account = make_account("test_open")
        late = grant(ledger, account, 5, source="promo", expires_at="2999-01-01T00:00:00Z")
        soon = grant(ledger, account, 5, source="promo", expires_at="2998-01-01T00:00:00Z")
        commit(ledger, account, quantity=6)
        rows = dict(
            sql("SELECT id, remaining FROM creditgate.grants WHERE id IN (%s, %s)", late["grant_id"], soon["grant_id"])
        )
        assert rows[soon["grant_id"]] == 0
        assert rows[late["grant_id"]] == 4 * MICRO
        assert available(ledger, account) == welcome + 4 * MICRO


class TestWelcomeCredit:
    def test_welcome_credit_exists_once_however_often_the_account_is_ensured(self, ledger, make_account, sql):
        account = make_account("free")
        answers = [ledger.ensure_account({"account_id": account, "plan": "free"}) for _ in range(5)]
        assert [a["created"] for a in answers] == [False] * 5
        assert sql("SELECT count(*) FROM creditgate.grants WHERE account_id = %s AND source = 'welcome'", account) == [
            (1,)
        ]
        assert sql(
            "SELECT count(*) FROM creditgate.grants WHERE account_id = %s AND source = 'allowance' AND key = 'credits'",
            account,
        ) == [(1,)]

    def test_concurrent_first_use_creates_one_account(self, ledger, sql):
        import uuid
        from concurrent.futures import ThreadPoolExecutor

        account = f"race-{uuid.uuid4().hex[:8]}"
        with ThreadPoolExecutor(16) as pool:
            created = list(pool.map(lambda _: ledger.ensure_account({"account_id": account})["created"], range(16)))
        assert created.count(True) == 1
        assert sql("SELECT count(*) FROM creditgate.grants WHERE account_id = %s AND source = 'welcome'", account) == [
            (1,)
        ]


class TestGrantIdempotency:
    def test_an_external_ref_grants_once(self, ledger, make_account, welcome):
        account = make_account("test_open")
        body = {
            "account_id": account,
            "amount": 7 * MICRO,
            "source": "promo",
            "reason": "launch",
            "idempotency_key": "promo-launch",
        }
        first = ledger.grant_credits(body)
        again = ledger.grant_credits(body)
        assert again["replayed"] is True and again["grant_id"] == first["grant_id"]
        assert available(ledger, account) == welcome + 7 * MICRO
