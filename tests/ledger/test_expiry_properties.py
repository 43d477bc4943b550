"""Property test of expiry with holds open: any sequence of grants (some of which expire),
holds, settles, releases, commits and usage leaves every grant holding exactly what a plain
model of the rules says, and the balance and reconcile agreeing.

The rules (sql/98_expiry_and_holds.sql): grants burn in order of priority, then expiry,
then id; a grant past its expiry is burned only by the settle of a hold made before it
expired; what of it no such hold covers expires."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from functions.core.errors import ProblemError
from tests.conftest import MICRO

NEVER = 10**9  # a promo's expiry before it is made to expire (2999 in the database)
ALLOWANCE = 100 * MICRO  # the test_allowance plan's credits per period
NO_EXPIRY = 10**10  # NULL sorts after every expiry

Op = st.one_of(
    st.tuples(st.just("promo"), st.integers(1, 30)),
    st.tuples(st.just("adjustment"), st.integers(1, 30)),
    st.tuples(st.just("expire"), st.integers(0, 5)),
    st.tuples(st.just("commit"), st.integers(1, 30)),
    st.tuples(st.just("reserve"), st.integers(1, 30)),
    st.tuples(st.just("settle"), st.integers(0, 40)),
    st.tuples(st.just("release"), st.integers(0, 3)),
    st.tuples(st.just("usage"), st.integers(1, 40)),
)


@dataclass
class Grant:
    id: int
    priority: int
    expires: int  # the step it expired at, NEVER, or NO_EXPIRY
    remaining: int

    def order(self) -> tuple[int, int, int]:
        return (self.priority, self.expires, self.id)


@dataclass
class Hold:
    id: str
    amount: int
    made: int  # the step it was made at


@dataclass
class Model:
    grants: list[Grant]
    available: int
    reserved: int = 0
    debt: int = 0
    step: int = 0
    holds: list[Hold] = field(default_factory=list)

    def live(self) -> list[Grant]:
        return sorted((g for g in self.grants if g.remaining > 0), key=Grant.order)

    def burn(self, amount: int, made: int | None) -> None:
        """Burn order over the grants not expired when `made` (now for a plain spend)."""
        since = self.step if made is None else made
        eligible = [g for g in self.live() if g.expires > since]
        for grant in eligible:
            take = min(grant.remaining, amount)
            grant.remaining -= take
            amount -= take
        assert amount == 0, "the model ran out of eligible grants"

    def expire(self) -> None:
        for grant in self.live():
            if grant.expires > self.step:
                continue
            upto = sum(o.remaining for o in self.live() if o.order() <= grant.order())
            held = sum(h.amount for h in self.holds if h.made < grant.expires)
            take = max(min(grant.remaining, self.available, upto - held), 0)
            grant.remaining -= take
            self.available -= take

    def consume(self, amount: int, freed: int, made: int | None) -> None:
        pay_debt = min(self.debt, freed)
        paid = min(self.available + freed - pay_debt, amount)
        self.reserved -= freed
        self.available += freed - pay_debt - paid
        self.debt += -pay_debt + (amount - paid)
        self.burn(pay_debt + paid, made)

    def release(self, freed: int) -> None:
        """A hold ends unpaid (the hold is already gone from `holds`): what it kept of
        expired grants expires; only the rest pays debt, from grants not expired."""
        self.reserved -= freed
        self.available += freed
        self.expire()
        pay = min(self.debt, self.available)
        self.debt -= pay
        self.available -= pay
        self.burn(pay, None)


def run(ledger, sql, account: str, model: Model, op: str, n: int) -> None:
    key = uuid.uuid4().hex
    if op in ("promo", "adjustment"):
        body = {"account_id": account, "amount": n * MICRO, "source": op, "reason": "p", "idempotency_key": key}
        if op == "promo":
            body["expires_at"] = "2999-01-01T00:00:00Z"
        answer = ledger.grant_credits(body)
        pay = min(model.debt, n * MICRO)
        model.debt -= pay
        model.available += n * MICRO - pay
        priority, expires = (20, NEVER) if op == "promo" else (30, NO_EXPIRY)
        model.grants.append(Grant(answer["grant_id"], priority, expires, n * MICRO - pay))
    elif op == "roll":
        roll(ledger, sql, account, model)
    elif op == "expire":
        promos = [g for g in model.grants if g.expires == NEVER]
        if promos:
            grant = promos[n % len(promos)]
            sql("UPDATE creditgate.grants SET expires_at = now() WHERE id = %s", grant.id)
            grant.expires = model.step
    elif op in ("commit", "reserve"):
        body = {
            "account_id": account,
            "feature": "vm_minute",
            "mode": op,
            "estimate": {"quantity": n},
            "idempotency_key": key,
        }
        try:
            answer = ledger.gate(body)
        except ProblemError as error:
            assert error.status == 402
            assert model.debt > 0 or model.available < n * MICRO
            return
        assert model.debt == 0 and model.available >= n * MICRO
        model.available -= n * MICRO
        if op == "commit":
            model.burn(n * MICRO, None)
        else:
            model.reserved += n * MICRO
            model.holds.append(Hold(answer["reservation"]["id"], n * MICRO, model.step))
    elif op == "settle" and model.holds:
        hold = model.holds.pop(n % len(model.holds))
        ledger.record_usage(
            {"reservation_id": hold.id, "feature": "vm_minute", "quantity": max(n, 1), "idempotency_key": key}
        )
        cost = max(n, 1) * MICRO
        model.consume(cost, min(cost, hold.amount), hold.made)  # the call's cost from its hold
        if hold.amount > cost:
            model.release(hold.amount - cost)  # the rest as an ended hold's
    elif op == "release" and model.holds:
        hold = model.holds.pop(n % len(model.holds))
        ledger.release_reservation({"reservation_id": hold.id})
        model.release(hold.amount)
    elif op == "usage":
        ledger.record_usage({"account_id": account, "feature": "vm_minute", "quantity": n, "idempotency_key": key})
        model.consume(n * MICRO, 0, None)


FUTURE = 10**8  # an allowance's expiry before its period ends: after any step, before a promo's


def roll(ledger, sql, account: str, model: Model) -> None:
    """The period ends: every time of the account moves a month back (periods, expiries, open
    holds), so what happened before still did; the next call rolls the period."""
    month = "interval '1 month'"
    sql(
        f"UPDATE creditgate.accounts SET period_anchor = period_anchor - {month}, "
        f"period_start = period_start - {month}, period_end = period_end - {month} WHERE id = %s",
        account,
    )
    # (Two steps: one period's new key is the next one's old key, and keys are unique.)
    sql("UPDATE creditgate.grants SET external_ref = external_ref || ':moving' WHERE account_id = %s", account)
    sql(
        f"UPDATE creditgate.grants SET expires_at = expires_at - {month}, "
        f"period_start = period_start - {month}, "
        "external_ref = CASE WHEN source = 'allowance' THEN 'allowance:' || plan_id || ':' || "
        f"to_char((period_start - {month}) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') || ':' || key "
        "ELSE left(external_ref, -length(':moving')) END WHERE account_id = %s",
        account,
    )
    sql(f"UPDATE creditgate.reservations SET created_at = created_at - {month} WHERE account_id = %s", account)
    ledger.balance(account)  # rolls: the old allowance expires (what holds keep stays), a new one comes
    for grant in model.grants:
        if grant.priority == 10 and grant.expires >= FUTURE and grant.expires < NEVER:
            grant.expires = model.step
    model.expire()
    (new_id,) = sql("SELECT max(id) FROM creditgate.grants WHERE account_id = %s AND source = 'allowance'", account)[0]
    pay = min(model.debt, ALLOWANCE)
    model.debt -= pay
    model.available += ALLOWANCE - pay
    model.grants.append(Grant(new_id, 10, FUTURE + model.step, ALLOWANCE - pay))


def check(ledger, sql, account: str, model: Model, where: str) -> None:
    line = next(b for b in ledger.balance(account)["balances"] if b["key"] == "credits")  # expires what is due
    model.expire()
    assert (line["available"], line["reserved"], line["debt"]) == (model.available, model.reserved, model.debt), where
    held = dict(sql("SELECT id, remaining FROM creditgate.grants WHERE account_id = %s AND key = 'credits'", account))
    assert held == {g.id: g.remaining for g in model.grants}, where
    report = ledger.reconcile(account)
    assert report["ok"], (where, report["problems"])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(Op, min_size=1, max_size=30))
# The cases the review of 98 found, always run: a commit, usage or a later hold's settle
# after a held promo expired, then the old hold released or settled.
@example(ops=[("promo", 10), ("reserve", 10), ("expire", 0), ("commit", 10), ("release", 0)])
@example(ops=[("promo", 10), ("reserve", 10), ("expire", 0), ("usage", 5), ("settle", 10)])
@example(ops=[("promo", 10), ("reserve", 10), ("expire", 0), ("reserve", 5), ("settle", 5), ("release", 0)])
# In debt when a hold of an expired grant is released: that part expires, it pays no debt.
@example(ops=[("promo", 1), ("reserve", 1), ("expire", 0), ("commit", 11), ("usage", 40)])
# In debt when a hold of an expired grant is settled for less: only the cost is paid from it.
@example(ops=[("promo", 3), ("reserve", 3), ("expire", 0), ("usage", 60), ("settle", 1)])
def test_every_grant_holds_what_the_rules_say(ledger, sql, make_account, welcome, ops):
    account = make_account("test_open")  # no allowance: the welcome credit, then what the ops grant
    (welcome_id,) = sql("SELECT id FROM creditgate.grants WHERE account_id = %s", account)[0]
    model = Model(grants=[Grant(welcome_id, 20, NO_EXPIRY, welcome)], available=welcome)
    for op, n in ops:
        model.step += 1
        run(ledger, sql, account, model, op, n)
        check(ledger, sql, account, model, f"after {op} {n} at step {model.step}")
    # Every hold ended: nothing of an expired grant is left, and nothing expired was spent
    # by anything but the holds that kept it (the per-grant check above).
    for hold in list(model.holds):
        model.step += 1
        ledger.release_reservation({"reservation_id": hold.id})
        model.holds.remove(hold)
        model.release(hold.amount)
        check(ledger, sql, account, model, f"release {hold.id}")
    assert all(g.remaining == 0 for g in model.grants if g.expires < NEVER)


@pytest.fixture
def allowance_plan(sql):
    """Every feature, 100 credits a period, no rate limit: the rolls of a real plan."""
    sql(
        """INSERT INTO creditgate.plans (id, name, price_minor, features, agents, allowances,
                                         rate_limit_per_minute, display_order)
           SELECT 'test_allowance', 'Test allowance', 99999700, array_agg(id), '{}',
                  jsonb_build_object('credits', %s::bigint), 0, 97
           FROM creditgate.features ON CONFLICT (id) DO UPDATE SET active = true""",
        ALLOWANCE,
    )
    return "test_allowance"


Rolling = st.one_of(Op, st.tuples(st.just("roll"), st.just(0)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(Rolling, min_size=1, max_size=25))
# A hold across a reset, paid or released after it; a commit after the reset while it is open.
@example(ops=[("reserve", 120), ("roll", 0), ("settle", 60), ("commit", 30)])
@example(ops=[("reserve", 100), ("roll", 0), ("commit", 100), ("release", 0)])
@example(ops=[("reserve", 100), ("roll", 0), ("reserve", 50), ("settle", 51), ("release", 0), ("roll", 0)])
def test_across_period_rolls_every_grant_holds_what_the_rules_say(
    ledger, sql, make_account, welcome, allowance_plan, ops
):
    account = make_account(allowance_plan)
    grants = sql("SELECT id, source FROM creditgate.grants WHERE account_id = %s ORDER BY id", account)
    model = Model(
        grants=[
            Grant(gid, 10, FUTURE, ALLOWANCE) if source == "allowance" else Grant(gid, 20, NO_EXPIRY, welcome)
            for gid, source in grants
        ],
        available=welcome + ALLOWANCE,
    )
    for op, n in ops:
        model.step += 1
        run(ledger, sql, account, model, op, n)
        check(ledger, sql, account, model, f"after {op} {n} at step {model.step}")
