"""The operator's alerts: a day's provider cost over `alert_daily_cost_usd`, and an IP
opening more guest sessions than `abuse_sessions_per_ip`, each recorded once a day by
maintenance and posted to the notices webhook as `alert.<kind>`."""

from __future__ import annotations

import uuid

import pytest

from functions.core.maintenance.run import run_maintenance
from tests.conftest import unique_ip
from tests.maintenance.helpers import drain
from tests.maintenance.test_notice_delivery import settings_for, webhook  # noqa: F401 - the fixture


@pytest.fixture
def quiet(ledger, sql):
    """No alert or notice of earlier tests pending, and the thresholds put back afterwards."""
    drain(ledger)
    sql("UPDATE creditgate.notices SET delivered_at = now() WHERE delivered_at IS NULL")
    before = sql("SELECT period_mode, alert_daily_cost_pico_usd FROM creditgate.settings")[0]
    yield
    ledger.rpc("creditgate_apply_settings", {"periods": before[0], "alert_daily_cost_pico_usd": before[1]})


def alerts(sql) -> list[tuple]:
    return sql(
        "SELECT kind, key, detail FROM creditgate.notices WHERE account_id = 'operator' "
        "AND period_start = date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' ORDER BY id"
    )


def test_a_days_cost_over_the_threshold_is_told_once(quiet, ledger, sql, make_account, webhook):  # noqa: F811
    sql("DELETE FROM creditgate.notices WHERE account_id = 'operator'")
    ledger.rpc("creditgate_apply_settings", {"alert_daily_cost_pico_usd": 1})  # any cost at all
    account = make_account("pro")
    ledger.record_usage(
        {
            "account_id": account,
            "feature": "chat",
            "model": "gpt-4o",
            "usage": {"input_tokens": 1000, "output_tokens": 1000},
            "idempotency_key": uuid.uuid4().hex,
        }
    )
    first = run_maintenance(ledger, settings_for(webhook.url))
    run_maintenance(ledger, settings_for(webhook.url))
    assert first["alerts"] >= 1  # other tests' guests may add abuse alerts of their own
    assert len([a for a in alerts(sql) if a[0] == "daily_cost"]) == 1
    sent = [b for b in webhook.bodies() if b["type"] == "alert.daily_cost"]
    assert len(sent) == 1 and sent[0]["account_id"] is None and "balance" not in sent[0]
    assert float(sent[0]["detail"]["cost_usd"]) > 0 and sent[0]["detail"]["threshold_usd"] == "0.000000000001"


def test_off_by_default(quiet, ledger, sql, make_account):
    sql("DELETE FROM creditgate.notices WHERE account_id = 'operator' AND kind = 'daily_cost'")
    ledger.rpc("creditgate_apply_settings", {"alert_daily_cost_pico_usd": 0})
    ledger.record_usage(
        {"account_id": make_account("pro"), "feature": "screenshot", "quantity": 1, "idempotency_key": "x"}
    )
    run_maintenance(ledger, None)
    assert [a for a in alerts(sql) if a[0] == "daily_cost"] == []


def test_guest_abuse_from_one_ip_is_told(quiet, ledger, sql, client):
    threshold = sql("SELECT abuse_sessions_per_ip FROM creditgate.settings")[0][0]
    ip = unique_ip()
    sql("DELETE FROM creditgate.guest_ip_days WHERE ip = %s::inet", ip)
    sql(
        "INSERT INTO creditgate.guest_ip_days (ip, day, exchanges, sessions) "
        "VALUES (%s::inet, (now() AT TIME ZONE 'UTC')::date, %s, %s)",
        ip,
        threshold + 1,
        threshold + 1,
    )
    run_maintenance(ledger, None)
    found = [a for a in alerts(sql) if a[0] == "guest_abuse" and a[1] == ip]
    assert len(found) == 1 and found[0][2]["sessions"] == threshold + 1


def test_no_account_may_be_called_operator(client, service_headers):
    response = client.put("/v1/accounts/operator", json={}, headers=service_headers)
    assert response.status_code == 422 and response.json()["code"] == "invalid_request"


class TestUnappliedStripeEvents:
    def test_an_invoice_paid_for_a_subscription_the_account_left_is_told(self, quiet, ledger, sql):
        event = f"evt_{uuid.uuid4().hex}"
        sql(
            "INSERT INTO creditgate.stripe_events (id, type, object_id, created, handled, outcome, payload)"
            " VALUES (%s, 'invoice.paid', 'in_x', 1, false, 'other_subscription',"
            ' \'{"data": {"object": {"amount_paid": 3900, "currency": "usd"}}}\')',
            event,
        )
        ledger.rpc("creditgate_record_operator_alerts", {})
        told = [a for a in alerts(sql) if a[0] == "stripe_unapplied" and a[1] == event]
        assert len(told) == 1 and (told[0][2]["outcome"], told[0][2]["amount_minor"]) == ("other_subscription", 3900)

    def test_is_offered_for_a_week_where_other_alerts_go_stale_in_a_day(self, quiet, ledger, sql):
        money, cost = f"evt_{uuid.uuid4().hex}", f"cost-{uuid.uuid4().hex}"
        sql(
            "INSERT INTO creditgate.notices (account_id, key, kind, period_start, created_at, detail) VALUES"
            " ('operator', %s, 'stripe_unapplied', now() - interval '2 days', now() - interval '2 days', '{}'),"
            " ('operator', %s, 'daily_cost', now() - interval '2 days', now() - interval '2 days', '{}')",
            money,
            cost,
        )
        leased = ledger.rpc("creditgate_lease_notices", {"limit": 1000})["notices"]
        assert [n["type"] for n in leased if n["key"] in (money, cost)] == ["alert.stripe_unapplied"]
        assert sql("SELECT gave_up_at IS NOT NULL FROM creditgate.notices WHERE key = %s", cost) == [(True,)]
        sql("UPDATE creditgate.notices SET delivered_at = now() WHERE key = %s", money)  # not left for later tests
