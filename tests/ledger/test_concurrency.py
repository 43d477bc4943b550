"""Money under concurrency: the guarded UPDATE inside one RPC is the only gate."""

from __future__ import annotations

import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from functions.core.errors import ProblemError
from tests.conftest import MICRO, available, commit


def outcome(call) -> str:
    try:
        call()
        return "ok"
    except ProblemError as error:
        return error.code


class TestCommitGateUnderContention:
    def test_64_concurrent_commits_on_one_account_spend_exactly_the_balance(self, ledger, make_account, welcome):
        account = make_account("test_open")
        cost = MICRO  # vm_minute: 1 credit per unit
        n = welcome // cost
        assert 0 < n < 64
        with ThreadPoolExecutor(64) as pool:
            results = Counter(pool.map(lambda _: outcome(lambda: commit(ledger, account)), range(64)))
        assert results == {"ok": n, "insufficient_credits": 64 - n}
        assert available(ledger, account) == 0
        assert ledger.reconcile(account)["ok"], ledger.reconcile(account)
        # Every success is one journal line and one usage row: nothing recorded twice or lost.
        history = ledger.transactions({"account_id": account, "limit": 200})["items"]
        assert sum(1 for line in history if line["kind"] == "consume") == n

    def test_500_accounts_in_parallel_each_spend_exactly_their_balance(self, ledger, make_account, welcome):
        accounts = [make_account("test_open") for _ in range(500)]
        units = welcome // MICRO * 2 // 5  # 3 attempts a account, exactly 2 fit
        assert 2 * units * MICRO <= welcome < 3 * units * MICRO
        calls = [a for a in accounts for _ in range(3)]
        with ThreadPoolExecutor(32) as pool:
            results = Counter(pool.map(lambda a: outcome(lambda: commit(ledger, a, quantity=units)), calls))
        assert results == {"ok": 1000, "insufficient_credits": 500}
        leftover = welcome - 2 * units * MICRO
        assert all(available(ledger, a) == leftover for a in accounts[:50])
        report = ledger.reconcile()
        assert report["ok"], report["problems"][:5]


class TestReplays:
    def test_32_concurrent_replays_debit_once_and_return_the_first_answer(self, ledger, make_account, welcome):
        account = make_account("test_open")
        key = uuid.uuid4().hex
        with ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(lambda _: commit(ledger, account, quantity=3, key=key), range(32)))
        assert all(answer == answers[0] for answer in answers)
        assert answers[0]["charged"] == 3 * MICRO
        assert available(ledger, account) == welcome - 3 * MICRO
        assert ledger.reconcile(account)["ok"]

    def test_same_key_with_another_body_is_a_conflict_and_changes_nothing(self, ledger, make_account, welcome):
        account = make_account("test_open")
        key = uuid.uuid4().hex
        commit(ledger, account, quantity=2, key=key)
        with pytest.raises(ProblemError) as error:
            commit(ledger, account, quantity=5, key=key)
        assert (error.value.status, error.value.code) == (409, "idempotency_conflict")
        assert available(ledger, account) == welcome - 2 * MICRO

    def test_32_concurrent_usage_replays_record_once(self, ledger, make_account, welcome):
        account = make_account("test_open")
        body = {"account_id": account, "feature": "screenshot", "quantity": 4, "idempotency_key": uuid.uuid4().hex}
        with ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(lambda _: ledger.record_usage(body), range(32)))
        first = [a for a in answers if not a.get("replayed")]
        assert len(first) == 1
        assert {a["usage_id"] for a in answers} == {first[0]["usage_id"]}
        assert available(ledger, account) == welcome - 2 * MICRO

    def test_a_denied_call_leaves_its_key_free_for_a_retry(self, ledger, make_account, welcome):
        account = make_account("test_open")
        key = uuid.uuid4().hex
        too_many = welcome // MICRO + 1
        with pytest.raises(ProblemError):
            commit(ledger, account, quantity=too_many, key=key)
        assert commit(ledger, account, quantity=1, key=key)["charged"] == MICRO
