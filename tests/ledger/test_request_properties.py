"""Property test of the `requests` quota under holds (sql/108_request_holds.sql): any
sequence of reserves, commits, usage, settles (of open, released and expired holds),
releases, expiries and replays leaves the quota equal to a plain model of the rules, and
every balance reconciled.

The rules: a reserve holds one request and a commit takes one, both refused while none is
available; usage without a hold counts one, as debt when none is left; settling an open
hold counts its request; releasing or expiring it gives the request back (paying debt
first); settling a hold that was released or expired counts the request as usage."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from functions.core.errors import ProblemError
from tests.conftest import MICRO

QUOTA = 2  # requests a period: small, so sequences run out of it and into debt often

Op = st.one_of(
    st.tuples(st.just("reserve"), st.just(0)),
    st.tuples(st.just("commit"), st.just(0)),
    st.tuples(st.just("usage"), st.just(0)),
    st.tuples(st.just("usage"), st.just(1)),  # twice as likely: debt with holds open
    st.tuples(st.just("settle"), st.integers(0, 5)),
    st.tuples(st.just("release"), st.integers(0, 5)),
    st.tuples(st.just("expire"), st.integers(0, 5)),
    st.tuples(st.just("settle_ended"), st.integers(0, 5)),
    st.tuples(st.just("replay"), st.integers(0, 5)),
)


@dataclass
class Quota:
    available: int = QUOTA
    reserved: int = 0
    debt: int = 0
    used: int = 0
    open: list[str] = field(default_factory=list)  # holds still active
    ended: list[str] = field(default_factory=list)  # released or expired, never settled
    settled: list[tuple[dict, dict]] = field(default_factory=list)  # (usage body, answer)

    def count(self) -> None:
        """One request used without a hold: from what is available, else as debt."""
        self.used += 1
        if self.available:
            self.available -= 1
        else:
            self.debt += 1

    def give_back(self) -> None:
        self.reserved -= 1
        if self.debt:
            self.debt -= 1
        else:
            self.available += 1


@pytest.fixture
def quota_plan(sql):
    sql(
        """INSERT INTO creditgate.plans (id, name, price_minor, features, agents, allowances,
                                         rate_limit_per_minute, display_order)
           SELECT 'test_quota_requests', 'Quota of requests', 99999700, array_agg(id), '{}',
                  jsonb_build_object('credits', 1000 * %s::bigint, 'requests', %s * %s::bigint), 0, 97
           FROM creditgate.features
           ON CONFLICT (id) DO UPDATE SET active = true""",
        MICRO,
        QUOTA,
        MICRO,
    )
    return "test_quota_requests"


def gate(ledger, account: str, mode: str) -> dict:
    return ledger.gate(
        {
            "account_id": account,
            "feature": "chat",
            "model": "gpt-4o-mini",
            "mode": mode,
            "estimate": {"input_tokens": 100, "max_output_tokens": 100},
            "idempotency_key": uuid.uuid4().hex,
        }
    )


def settle_body(hold: str) -> dict:
    return {
        "reservation_id": hold,
        "feature": "chat",
        "model": "gpt-4o-mini",
        "usage": {"input_tokens": 50, "output_tokens": 50},
        "idempotency_key": uuid.uuid4().hex,
    }


def run(ledger, sql, account: str, quota: Quota, op: str, n: int) -> None:
    if op in ("reserve", "commit"):
        try:
            answer = gate(ledger, account, op)
        except ProblemError as error:
            assert (error.status, error.code) == (402, "quota_exhausted")
            assert quota.available == 0
            return
        assert quota.available > 0
        quota.available -= 1
        if op == "reserve":
            quota.reserved += 1
            quota.open.append(answer["reservation"]["id"])
        else:
            quota.used += 1
    elif op == "usage":
        ledger.record_usage(
            {
                "account_id": account,
                "feature": "chat",
                "model": "gpt-4o-mini",
                "usage": {"input_tokens": 10, "output_tokens": 10},
                "idempotency_key": uuid.uuid4().hex,
            }
        )
        quota.count()
    elif op == "settle" and quota.open:
        hold = quota.open.pop(n % len(quota.open))
        body = settle_body(hold)
        quota.settled.append((body, ledger.record_usage(body)))
        quota.reserved -= 1
        quota.used += 1
    elif op in ("release", "expire") and quota.open:
        hold = quota.open.pop(n % len(quota.open))
        if op == "release":
            ledger.release_reservation({"reservation_id": hold})
        else:
            sql(
                "UPDATE creditgate.reservations SET expires_at = now() WHERE id = %s OR parent_id = %s",
                hold,
                hold,
            )
            ledger.run_maintenance({"limit": 5000})
        quota.give_back()
        quota.ended.append(hold)
    elif op == "settle_ended" and quota.ended:
        # The call was under way when its hold ended: it happened, so it counts.
        hold = quota.ended.pop(n % len(quota.ended))
        body = settle_body(hold)
        quota.settled.append((body, ledger.record_usage(body)))
        quota.count()
    elif op == "replay" and quota.settled:
        body, answer = quota.settled[n % len(quota.settled)]
        assert ledger.record_usage(body) == {**answer, "replayed": True}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(Op, min_size=4, max_size=20))
def test_the_request_quota_follows_its_rules_through_any_sequence(ledger, sql, make_account, quota_plan, ops):
    account = make_account(quota_plan)
    quota = Quota()
    for op, n in ops:
        run(ledger, sql, account, quota, op, n)
        report = ledger.reconcile(account)
        assert report["ok"], (op, n, report["problems"])
    line = next(b for b in ledger.balance(account)["balances"] if b["key"] == "requests")
    assert (line["available"], line["reserved"], line["debt"], line["used_this_period"]) == (
        quota.available * MICRO,
        quota.reserved * MICRO,
        quota.debt * MICRO,
        quota.used * MICRO,
    )
    assert quota.debt == 0 or quota.available == 0
    holds = sql(
        "SELECT count(*) FILTER (WHERE status = 'active') FROM creditgate.reservations r"
        " WHERE account_id = %s AND key = 'requests'",
        account,
    )
    assert holds == [(len(quota.open),)]
