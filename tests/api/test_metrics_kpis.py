"""The `kpis` of GET /v1/admin/metrics: MRR and ARR, churn, conversion, margin and tokens per
account per plan. The database is shared, so each test compares before and after or uses
plans of its own."""

from __future__ import annotations

import math
import uuid
from decimal import ROUND_HALF_UP, Decimal

import pytest
from fastapi.testclient import TestClient

from tests.api.helpers import assert_problem
from tests.conftest import grant, unique_ip


def kpis(client, headers, days: int = 1) -> dict:
    response = client.get(f"/v1/admin/metrics?days={days}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["kpis"]


def ratio(numerator: int, denominator: int) -> str:
    """As PostgreSQL's round(…, 4) writes it."""
    return str((Decimal(numerator) / Decimal(denominator)).quantize(Decimal("0.0001"), ROUND_HALF_UP))


def add_plan(sql, name: str, price_minor: int, interval: str = "month", features: tuple[str, ...] = ()) -> str:
    """A plan of this test alone. No allowance, and features only when a test needs them, so
    no other test's upgrade suggestions change."""
    plan = f"{name}_{uuid.uuid4().hex[:8]}"
    sql(
        """INSERT INTO creditgate.plans (id, name, price_minor, billing_interval, features, display_order)
           VALUES (%s, %s, %s, %s, %s, 97)""",
        plan,
        plan,
        price_minor,
        interval,
        list(features),
    )
    return plan


def move(client, headers, account: str, plan: str) -> None:
    response = client.put(f"/v1/accounts/{account}/plan", json={"plan": plan}, headers=headers)
    assert response.status_code == 200, response.text


def test_mrr_counts_monthly_and_a_twelfth_of_yearly_prices(client, service_headers, make_account, sql):
    monthly = add_plan(sql, "test_kpi_monthly", 1000)
    yearly = add_plan(sql, "test_kpi_yearly", 12011, "year")
    before = kpis(client, service_headers)
    make_account(monthly)
    on_yearly = make_account(yearly)
    make_account("free")
    after = kpis(client, service_headers)
    assert after["mrr_minor"] - before["mrr_minor"] == 1000 + 1000  # 12011 / 12, rounded down
    assert after["arr_minor"] == 12 * after["mrr_minor"]
    assert after["mrr_minor_by_billing"]["local"] - before["mrr_minor_by_billing"]["local"] == 2000
    assert after["mrr_minor_by_billing"]["stripe"] == before["mrr_minor_by_billing"]["stripe"]
    assert after["paying_accounts"] - before["paying_accounts"] == 2

    move(client, service_headers, on_yearly, "free")
    left = kpis(client, service_headers)
    assert left["mrr_minor"] - before["mrr_minor"] == 1000
    assert left["paying_accounts"] - before["paying_accounts"] == 1


def test_churn_is_paid_to_free_over_the_accounts_paying_when_the_window_began(
    client, service_headers, make_account, sql
):
    before = kpis(client, service_headers, days=7)
    paying_for_a_while = make_account("pro")
    sql(
        "UPDATE creditgate.account_changes SET at = now() - interval '10 days' WHERE account_id = %s",
        paying_for_a_while,
    )
    came_and_went = make_account("free")
    move(client, service_headers, came_and_went, "pro")
    stepped_down = make_account("business")
    sql("UPDATE creditgate.account_changes SET at = now() - interval '10 days' WHERE account_id = %s", stepped_down)

    move(client, service_headers, paying_for_a_while, "free")
    move(client, service_headers, came_and_went, "free")
    move(client, service_headers, stepped_down, "starter")  # cheaper, still paying: no churn
    after = kpis(client, service_headers, days=7)

    assert after["churned"] - before["churned"] == 2
    assert after["paying_accounts_at_start"] - before["paying_accounts_at_start"] == 2
    # Of the two that left, only one was paying when the window began: the rate is of those.
    assert after["churned_from_start"] - before["churned_from_start"] == 1
    assert after["churn_rate"] == ratio(after["churned_from_start"], after["paying_accounts_at_start"])


def test_conversion_counts_guests_new_accounts_and_free_to_paid_once_each(
    client, service_headers, make_account, settings, ledger
):
    from functions.local import build_app

    before = kpis(client, service_headers)["conversion"]
    behind_a_proxy = build_app(settings=settings.model_copy(update={"trusted_proxy_hops": 1}), ledger=ledger)
    with TestClient(behind_a_proxy) as proxied:  # guests are counted by their address
        guest = {"X-Session-Id": f"guest-{uuid.uuid4().hex}", "X-Forwarded-For": unique_ip()}
        assert proxied.post("/v1/gate", json={"feature": "chat"}, headers=guest).status_code == 200
    converted = make_account("free")
    for plan in ("pro", "free", "starter"):  # converted twice: one account
        move(client, service_headers, converted, plan)
    move(client, service_headers, make_account("starter"), "pro")  # paid to paid
    after = kpis(client, service_headers)["conversion"]
    assert after["guest_sessions"] - before["guest_sessions"] == 1
    assert after["new_accounts"] - before["new_accounts"] == 2
    assert after["free_to_paid"] - before["free_to_paid"] == 1


def chat(client, headers, account: str, input_tokens: int, output_tokens: int) -> None:
    response = client.post(
        "/v1/usage",
        headers=headers,
        json={
            "account_id": account,
            "feature": "chat",
            "model": "gpt-4o-mini",
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
            "idempotency_key": uuid.uuid4().hex,
        },
    )
    assert response.status_code in (200, 201), response.text


def buy_pack(client, headers, account: str, pack: str) -> None:
    started = client.post(
        "/v1/checkout",
        json={"account_id": account, "pack": pack},
        headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert started.status_code == 201, started.text
    path = started.json()["checkout_url"].removeprefix("http://testserver")
    assert client.post(path, follow_redirects=False).status_code == 303


def test_margin_is_revenue_less_provider_cost(client, service_headers, make_account, ledger):
    account = make_account("pro")
    grant(ledger, account, 1000)
    before = kpis(client, service_headers)
    buy_pack(client, service_headers, account, "growth")  # $49.00
    chat(client, service_headers, account, 1_000_000, 1_000_000)  # $0.15 + $0.60 at the provider
    after = kpis(client, service_headers)

    assert after["revenue_minor"] - before["revenue_minor"] == 4900
    assert Decimal(after["cost_usd"]) - Decimal(before["cost_usd"]) == Decimal("0.75")
    assert after["cost_minor"] == math.ceil(Decimal(after["cost_usd"]) * 100)
    assert after["margin_minor"] == after["revenue_minor"] - after["cost_minor"]
    assert after["margin_share"] == ratio(after["margin_minor"], after["revenue_minor"])


def test_without_usd_there_is_no_margin(client, service_headers, sql):
    sql("UPDATE creditgate.settings SET currency = 'eur'")
    try:
        answer = kpis(client, service_headers)
    finally:
        sql("UPDATE creditgate.settings SET currency = 'usd'")
    assert (answer["cost_minor"], answer["margin_minor"], answer["margin_share"]) == (None, None, None)
    assert Decimal(answer["cost_usd"]) >= 0 and isinstance(answer["revenue_minor"], int)


def test_tokens_per_account_by_plan(client, service_headers, make_account, sql):
    plan = add_plan(sql, "test_kpi_tokens", 99999700, features=("chat",))
    heavy, light = make_account(plan), make_account(plan)
    make_account(plan)  # used nothing: not counted
    chat(client, service_headers, heavy, 700, 300)
    chat(client, service_headers, light, 100, 1)
    by_plan = kpis(client, service_headers)["tokens_per_account_by_plan"]
    assert by_plan[plan] == {"accounts": 2, "avg_tokens": 550}  # 1101 / 2, rounded down


@pytest.mark.parametrize("days", ["0", "367", "-1", "a-month"])
def test_the_window_stays_between_1_and_366_days(client, service_headers, days):
    for good in (1, 366):
        assert "mrr_minor" in kpis(client, service_headers, days=good)
    assert_problem(client.get(f"/v1/admin/metrics?days={days}", headers=service_headers), 422, "invalid_request")


def test_top_models_counts_a_model_under_its_catalog_name(client, service_headers, make_account):
    def requests(model: str) -> int:
        top = client.get("/v1/admin/metrics?days=1", headers=service_headers).json()["top_models"]
        return next((row["requests"] for row in top if row["model"] == model), 0)

    account = make_account("pro")
    before = requests("gpt-4o-mini")
    for name in ("gpt-4o-mini", "openai/gpt-4o-mini", "GPT-4o-mini"):
        answer = client.post(
            "/v1/usage",
            json={
                "account_id": account,
                "feature": "chat",
                "model": name,
                "usage": {"input_tokens": 10, "output_tokens": 10},
                "idempotency_key": uuid.uuid4().hex,
            },
            headers=service_headers,
        )
        assert answer.status_code == 201, answer.text
    assert requests("gpt-4o-mini") == before + 3
    assert requests("openai/gpt-4o-mini") == requests("GPT-4o-mini") == 0
