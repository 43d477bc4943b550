"""Property tests of the ledger's invariants: any sequence of operations leaves every
balance reconciled and equal to a plain model of what should have happened."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from functions.core.errors import ProblemError
from tests.conftest import MICRO

Op = st.one_of(
    st.tuples(st.just("grant"), st.integers(1, 40)),
    st.tuples(st.just("commit"), st.integers(1, 30)),
    st.tuples(st.just("reserve"), st.integers(1, 30)),
    st.tuples(st.just("settle"), st.integers(0, 60)),
    st.tuples(st.just("release"), st.integers(0, 3)),
    st.tuples(st.just("usage"), st.integers(1, 60)),
    st.tuples(st.just("replay"), st.integers(0, 5)),
)


@dataclass
class Model:
    available: int
    reserved: int = 0
    debt: int = 0
    used: int = 0  # consumed this period
    holds: list[tuple[str, int]] = field(default_factory=list)
    answers: list[tuple[dict, dict]] = field(default_factory=list)

    def take(self, amount: int) -> None:
        self.used += amount
        paid = min(self.available, amount)
        self.available -= paid
        self.debt += amount - paid

    def free(self, amount: int) -> None:
        pay = min(self.debt, amount)
        self.debt -= pay
        self.reserved -= amount
        self.available += amount - pay


def run(ledger, account: str, model: Model, op: str, n: int) -> None:
    key = uuid.uuid4().hex
    if op == "grant":
        ledger.grant_credits(
            {"account_id": account, "amount": n * MICRO, "source": "adjustment", "reason": "p", "idempotency_key": key}
        )
        pay = min(model.debt, n * MICRO)
        model.debt -= pay
        model.available += n * MICRO - pay
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
        model.used += n * MICRO if op == "commit" else 0
        if op == "reserve":
            model.reserved += n * MICRO
            model.holds.append((answer["reservation"]["id"], n * MICRO))
        model.answers.append((body, answer))
    elif op == "settle" and model.holds:
        reservation, amount = model.holds.pop(0)
        ledger.record_usage(
            {"reservation_id": reservation, "feature": "vm_minute", "quantity": max(n, 1), "idempotency_key": key}
        )
        model.free(amount)
        model.take(max(n, 1) * MICRO)
    elif op == "release" and model.holds:
        reservation, amount = model.holds.pop(n % len(model.holds))
        ledger.release_reservation({"reservation_id": reservation})
        model.free(amount)
    elif op == "usage":
        ledger.record_usage({"account_id": account, "feature": "vm_minute", "quantity": n, "idempotency_key": key})
        model.take(n * MICRO)
    elif op == "replay" and model.answers:
        body, answer = model.answers[n % len(model.answers)]
        assert ledger.gate(body) == answer


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(Op, min_size=1, max_size=25))
def test_any_sequence_keeps_every_invariant(ledger, make_account, welcome, ops):
    account = make_account("test_open")
    model = Model(available=welcome)
    for op, n in ops:
        run(ledger, account, model, op, n)
        report = ledger.reconcile(account)
        assert report["ok"], (op, n, report["problems"])
    line = next(b for b in ledger.balance(account)["balances"] if b["key"] == "credits")
    assert (line["available"], line["reserved"], line["debt"]) == (model.available, model.reserved, model.debt)
    assert line["used_this_period"] == model.used
    assert model.debt == 0 or model.available == 0
