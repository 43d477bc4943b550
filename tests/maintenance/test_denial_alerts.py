"""Denials the operator is told about (sql/113): a model refused as unknown_model, once a
day per model (`alert.unpriced_model`), and a day's insufficient_credits, debt_outstanding
and quota_exhausted reaching `alert_daily_denials` (`alert.denials`). The gate and usage
count a denial with one more call after it; a success makes no extra call, and a counter
that fails leaves the answer as it was."""

from __future__ import annotations

import logging
import uuid

import psycopg
import pytest
from fastapi.testclient import TestClient

from functions.core.errors import ProblemError
from functions.core.ledger.postgres import PostgresLedger
from functions.core.maintenance.run import run_maintenance
from functions.local import build_app
from tests.maintenance.helpers import drain
from tests.maintenance.test_notice_delivery import settings_for, webhook  # noqa: F401 - the fixture
from tests.maintenance.test_operator_alerts import alerts

TODAY = "(now() AT TIME ZONE 'UTC')::date"


class Recording(PostgresLedger):
    """The suite's database, with the RPCs it was asked for kept in order, and the ones
    named in `failing` raising as an unreachable counter would."""

    def __init__(self, dsn: str, failing: frozenset[str] = frozenset()) -> None:
        super().__init__(dsn, max_size=2)
        self.calls: list[str] = []
        self.failing = failing

    def rpc(self, name, request=None):
        self.calls.append(name)
        if name in self.failing:
            raise RuntimeError(f"{name} is down")
        return super().rpc(name, request)


@pytest.fixture
def quiet(ledger, sql):
    """No alert or notice of earlier tests pending, and the settings put back afterwards."""
    drain(ledger)
    sql("UPDATE creditgate.notices SET delivered_at = now() WHERE delivered_at IS NULL")
    before = sql(
        "SELECT period_mode, alert_daily_cost_pico_usd, allowance_notice_percents, alert_daily_denials"
        " FROM creditgate.settings"
    )[0]
    yield
    keys = ("periods", "alert_daily_cost_pico_usd", "allowance_notices", "alert_daily_denials")
    ledger.rpc("creditgate_apply_settings", dict(zip(keys, before, strict=True)))


@pytest.fixture
def recording(dsn, settings):
    """A client whose ledger records its calls, and one whose denial counter is down."""

    def make(failing: frozenset[str] = frozenset(), **changes) -> tuple[TestClient, Recording]:
        ledger = Recording(dsn, failing)
        made.append(ledger)
        client = TestClient(build_app(settings=settings.model_copy(update=changes), ledger=ledger))
        return client, ledger

    made: list[Recording] = []
    yield make
    for ledger in made:
        ledger.close()


def counted(sql, code: str, detail: str = "") -> int:
    rows = sql(
        f"SELECT denials FROM creditgate.denial_days WHERE day = {TODAY} AND code = %s AND detail = %s", code, detail
    )
    return rows[0][0] if rows else 0


def short_today(sql) -> int:
    return sql(
        f"SELECT coalesce(sum(denials), 0) FROM creditgate.denial_days WHERE day = {TODAY} AND code <> 'unknown_model'"
    )[0][0]


def too_big(account: str, **extra) -> dict:
    """More than a free account's 150 credits."""
    return {
        "account_id": account,
        "feature": "chat",
        "model": "gpt-4o",
        "estimate": {"input_tokens": 10**7, "max_output_tokens": 10**6},
        "idempotency_key": uuid.uuid4().hex,
        **extra,
    }


def unpriced(account: str, model: str) -> dict:
    return too_big(account, model=model, estimate={"input_tokens": 10, "max_output_tokens": 10})


def test_an_unpriced_model_is_told_once_a_day(quiet, client, service_headers, make_account, ledger, sql, webhook):  # noqa: F811
    account, model = make_account("pro"), f"no-price-{uuid.uuid4().hex[:8]}"
    gate = client.post("/v1/gate", json=unpriced(account, model), headers=service_headers)
    usage = client.post(
        "/v1/usage",
        json={
            "account_id": account,
            "feature": "chat",
            "model": model,
            "usage": {"input_tokens": 10, "output_tokens": 10},
            "idempotency_key": uuid.uuid4().hex,
        },
        headers=service_headers,
    )
    assert (gate.status_code, gate.json()["code"]) == (422, "unknown_model")
    assert (usage.status_code, usage.json()["code"]) == (422, "unknown_model")
    assert counted(sql, "unknown_model", model) == 2

    first = run_maintenance(ledger, settings_for(webhook.url))
    run_maintenance(ledger, settings_for(webhook.url))
    assert first["alerts"] >= 1
    found = [a for a in alerts(sql) if a[0] == "unpriced_model" and a[1] == model]
    assert found == [("unpriced_model", model, {"model": model, "refusals": 2})]
    sent = [b for b in webhook.bodies() if b["type"] == "alert.unpriced_model" and b["key"] == model]
    assert len(sent) == 1 and sent[0]["account_id"] is None and sent[0]["detail"]["model"] == model


def test_running_short_is_told_when_the_days_denials_reach_the_threshold(
    quiet, client, service_headers, make_account, ledger, sql
):
    sql("DELETE FROM creditgate.notices WHERE account_id = 'operator' AND kind = 'denials'")
    account = make_account("free")

    def deny() -> None:
        response = client.post("/v1/gate", json=too_big(account), headers=service_headers)
        assert (response.status_code, response.json()["code"]) == (402, "insufficient_credits")

    deny()
    threshold = short_today(sql) + 2  # other tests' denials of today count too
    answer = ledger.rpc("creditgate_apply_settings", {"alert_daily_denials": threshold})
    assert answer["alert_daily_denials"] == threshold

    deny()  # one short of it
    run_maintenance(ledger, None)
    assert [a for a in alerts(sql) if a[0] == "denials"] == []

    deny()  # at it
    run_maintenance(ledger, None)
    run_maintenance(ledger, None)
    found = [a for a in alerts(sql) if a[0] == "denials"]
    assert len(found) == 1 and found[0][1] == "denials"
    detail = found[0][2]
    assert detail["denials"] == threshold and detail["threshold"] == threshold
    assert detail["insufficient_credits"] + detail["debt_outstanding"] + detail["quota_exhausted"] == threshold


def test_zero_is_off(quiet, client, service_headers, make_account, ledger, sql):
    sql("DELETE FROM creditgate.notices WHERE account_id = 'operator' AND kind = 'denials'")
    assert ledger.rpc("creditgate_apply_settings", {"alert_daily_denials": 0})["alert_daily_denials"] == 0
    before = counted(sql, "insufficient_credits")
    account = make_account("free")
    for _ in range(3):
        assert client.post("/v1/gate", json=too_big(account), headers=service_headers).status_code == 402
    run_maintenance(ledger, None)
    assert counted(sql, "insufficient_credits") == before + 3  # counted all the same
    assert [a for a in alerts(sql) if a[0] == "denials"] == []


def test_a_success_makes_one_call_and_only_counted_denials_a_second(recording, service_headers, make_account, sql):
    client, ledger = recording()
    account = make_account("free")
    rows = f"SELECT code, detail, denials FROM creditgate.denial_days WHERE day = {TODAY} ORDER BY 1, 2"
    before = sql(rows)

    ledger.calls.clear()
    allowed = client.post("/v1/gate", json=too_big(account, estimate={"input_tokens": 10}), headers=service_headers)
    assert allowed.status_code == 200, allowed.text
    assert ledger.calls == ["creditgate_gate"]
    assert sql(rows) == before

    ledger.calls.clear()  # access, and a guest's limit, are not denials the operator hears of
    locked = client.post("/v1/gate", json=too_big(account, agent="builder"), headers=service_headers)
    assert locked.json()["code"] == "agent_not_in_plan"
    guest = {"X-Session-Id": f"guest-{uuid.uuid4().hex}"}
    codes = [client.post("/v1/gate", json={"feature": "chat"}, headers=guest).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    assert "creditgate_record_denial" not in ledger.calls and sql(rows) == before

    ledger.calls.clear()
    short = client.post("/v1/gate", json=too_big(account), headers=service_headers)
    assert short.status_code == 402
    assert ledger.calls == ["creditgate_gate", "creditgate_record_denial"]


def test_the_answer_stands_when_counting_fails(recording, client, service_headers, make_account, caplog):
    broken, ledger = recording(frozenset({"creditgate_record_denial"}))
    account = make_account("free")
    usage = {
        "account_id": account,
        "feature": "chat",
        "model": "no-such-model",
        "usage": {"input_tokens": 10, "output_tokens": 10},
        "idempotency_key": uuid.uuid4().hex,
    }
    with caplog.at_level(logging.ERROR, logger="creditgate.denials"):
        for path, body in (
            ("/v1/gate", too_big(account)),
            ("/v1/gate", unpriced(account, "no-such-model")),
            ("/v1/usage", usage),
        ):
            ledger.calls.clear()
            expected = client.post(path, json=body, headers=service_headers)
            got = broken.post(path, json=body, headers=service_headers)
            assert ledger.calls[-1] == "creditgate_record_denial"  # tried, and failed
            assert got.status_code == expected.status_code and got.status_code in (402, 422)
            assert got.json() == expected.json()
            assert got.headers["content-type"] == expected.headers["content-type"]
    assert len([r for r in caplog.records if "could not count" in r.getMessage()]) == 3


def test_the_emergency_switch_counts_what_it_lets_through(recording, service_headers, make_account, sql):
    monitor, _ = recording(enforcement="monitor")
    before = counted(sql, "insufficient_credits")
    answer = monitor.post("/v1/gate", json=too_big(make_account("free")), headers=service_headers)
    assert answer.status_code == 200 and answer.json()["not_enforced"]["code"] == "insufficient_credits"
    assert counted(sql, "insufficient_credits") == before + 1


def test_the_counter_is_the_service_roles_and_bounded(ledger, dsn, sql):
    signature = "public.creditgate_record_denial(jsonb)"
    for role, allowed in (("anon", False), ("authenticated", False), ("service_role", True)):
        assert sql("SELECT has_function_privilege(%s, %s, 'EXECUTE')", role, signature) == [(allowed,)]
    with psycopg.connect(dsn) as conn:
        for role in ("anon", "authenticated"):
            conn.execute(f"SET LOCAL ROLE {role}")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute('SELECT public.creditgate_record_denial(\'{"code": "quota_exhausted"}\')')
            conn.rollback()
    with pytest.raises(ProblemError) as refused:
        ledger.rpc("creditgate_record_denial", {"code": "rate_limited"})
    assert refused.value.code == "invalid_request"

    # Past 100 models a day, the rest are counted together (detail ''), never told one by one.
    filler = [f"filler-{uuid.uuid4().hex[:8]}-{n}" for n in range(100)]
    sql(
        f"INSERT INTO creditgate.denial_days (day, code, detail, denials)"
        f" SELECT {TODAY}, 'unknown_model', m, 1 FROM unnest(%s::text[]) m ON CONFLICT DO NOTHING",
        filler,
    )
    try:
        extra = f"one-too-many-{uuid.uuid4().hex[:8]}"
        assert ledger.rpc("creditgate_record_denial", {"code": "unknown_model", "model": extra})["detail"] == ""
        assert counted(sql, "unknown_model", extra) == 0
    finally:
        sql("DELETE FROM creditgate.denial_days WHERE detail = ANY(%s)", filler)


def test_old_counts_are_pruned_by_maintenance(quiet, ledger, sql):
    old, kept = f"old-{uuid.uuid4().hex[:8]}", f"kept-{uuid.uuid4().hex[:8]}"
    sql(
        "INSERT INTO creditgate.denial_days (day, code, detail, denials)"
        f" VALUES ({TODAY} - 91, 'unknown_model', %s, 1), ({TODAY} - 90, 'unknown_model', %s, 1)",
        old,
        kept,
    )
    try:
        run_maintenance(ledger, None)
        left = sql("SELECT detail FROM creditgate.denial_days WHERE detail = ANY(%s)", [old, kept])
        assert left == [(kept,)]
    finally:
        sql("DELETE FROM creditgate.denial_days WHERE detail = ANY(%s)", [old, kept])
