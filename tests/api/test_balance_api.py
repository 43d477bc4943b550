"""GET /v1/balance, /v1/transactions, /v1/usage, /v1/orders, /v1/catalog, /v1/prices, /v1/health, /openapi.json."""

from __future__ import annotations

import uuid
from decimal import Decimal

from tests.api.helpers import assert_problem, bearer, user_token


def spend(client, headers, account, quantity, feature="ai_message", model=None):
    body = {"account_id": account, "feature": feature, "quantity": quantity, "idempotency_key": uuid.uuid4().hex}
    if model:
        body.update(model=model, usage={"input_tokens": 1000, "output_tokens": 1000})
        body.pop("quantity")
    response = client.post("/v1/usage", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


class TestGetBalance:
    def test_shape_and_thresholds(self, client, service_headers, make_account):
        account = make_account("free")
        spend(client, service_headers, account, 400)  # 80 of the 100-credit allowance (0.2 each)
        body = client.get(f"/v1/balance?account_id={account}", headers=service_headers).json()
        assert body["plan"] == {"id": "free", "name": "Free"}
        credits = body["balances"][0]
        assert credits["key"] == "credits"
        assert credits["available"] == "70" and credits["allowance"] == "100"
        assert credits["used_this_period"] == "80" and credits["percent_used"] == 80.0
        assert credits["status"] == "warning"
        assert credits["resets_at"] > credits["period_start"]
        assert {line["key"] for line in body["balances"]} >= {"credits", "requests", "tokens"}
        spend(client, service_headers, account, 60)
        credits = client.get(f"/v1/balance?account_id={account}", headers=service_headers).json()["balances"][0]
        assert credits["status"] == "critical" and credits["percent_used"] == 92.0

    def test_user_reads_own_balance_and_not_others(self, client, make_account):
        user = str(uuid.uuid4())
        mine = client.get("/v1/balance", headers=bearer(user_token(user)))
        assert mine.status_code == 200 and mine.json()["account_id"] == user
        other = make_account()
        assert_problem(
            client.get(f"/v1/balance?account_id={other}", headers=bearer(user_token(user))), 403, "forbidden"
        )

    def test_guests_have_no_balance(self, client):
        assert_problem(client.get("/v1/balance", headers={"X-Session-Id": "guest-session-1"}), 403, "forbidden")

    def test_unknown_account_is_404(self, client, service_headers):
        assert_problem(client.get("/v1/balance?account_id=ghost", headers=service_headers), 404, "account_not_found")


class TestGetTransactions:
    def test_lines_sum_to_available_plus_reserved_minus_debt(self, client, service_headers, make_account):
        account = make_account("free")
        client.post(
            "/v1/gate",
            headers=service_headers,
            json={
                "account_id": account,
                "feature": "chat",
                "model": "gpt-4o",
                "idempotency_key": "hold",
                "estimate": {"input_tokens": 1000, "max_output_tokens": 1000},
            },
        )
        for _ in range(3):
            spend(client, service_headers, account, 5)
        items, cursor = [], None
        while True:
            page = client.get(
                # The first page's link as API.md writes it: `cursor=` empty.
                f"/v1/transactions?account_id={account}&limit=2&cursor={cursor or ''}",
                headers=service_headers,
            ).json()
            items += page["items"]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert [i["id"] for i in items] == sorted((i["id"] for i in items), reverse=True)
        credits = [i for i in items if i["key"] == "credits"]
        line = client.get(f"/v1/balance?account_id={account}", headers=service_headers).json()["balances"][0]
        total = sum(Decimal(i["amount"]) for i in credits)
        assert total == Decimal(line["available"]) + Decimal(line["reserved"]) - Decimal(line["debt"])
        assert Decimal(credits[0]["balance_after"]) == total
        assert {i["kind"] for i in credits} == {"grant", "consume"}

    def test_lines_say_what_they_were_for(self, client, service_headers, make_account):
        account = make_account("free")
        spend(client, service_headers, account, 0, feature="chat", model="gpt-4o-mini")
        spend(client, service_headers, account, 5)
        items = client.get(f"/v1/transactions?account_id={account}&key=credits", headers=service_headers).json()[
            "items"
        ]
        charges = [(i["feature"], i["model"]) for i in items if i["kind"] == "consume"]
        assert charges == [("ai_message", None), ("chat", "gpt-4o-mini")]
        grants = {i["source"]: i["reason"] for i in items if i["kind"] == "grant"}
        assert grants["welcome"] == "welcome credit"
        assert all(i["feature"] is None for i in items if i["kind"] == "grant")


class TestGetUsageSummary:
    def test_groups_by_a_metadata_field(self, client, service_headers, make_account):
        account = make_account("pro")
        for workflow in ("beams", "beams", "slabs", None):
            body = {"account_id": account, "feature": "ai_message", "quantity": 5, "idempotency_key": uuid.uuid4().hex}
            if workflow:
                body["metadata"] = {"workflow_id": workflow, "discipline": "structural"}
            assert client.post("/v1/usage", json=body, headers=service_headers).status_code == 201
        summary = client.get(
            f"/v1/usage?account_id={account}&group_by=metadata.workflow_id", headers=service_headers
        ).json()
        assert summary["group_by"] == "metadata.workflow_id"
        assert [(i["group"], i["requests"], i["cost"]) for i in summary["items"]] == [
            ("", 1, "1"),
            ("beams", 2, "2"),
            ("slabs", 1, "1"),
        ]
        for bad in ("metadata.", "metadata.a b", "metadata." + "x" * 65, "meta.workflow_id", "metadata.x;drop"):
            response = client.get(f"/v1/usage?account_id={account}&group_by={bad}", headers=service_headers)
            assert_problem(response, 422, "invalid_request")

    def test_groups_by_model_and_feature(self, client, service_headers, make_account):
        account = make_account("pro")
        spend(client, service_headers, account, 0, feature="chat", model="gpt-4o-mini")
        spend(client, service_headers, account, 0, feature="chat", model="gpt-4o-mini")
        spend(client, service_headers, account, 2, feature="screenshot")
        by_model = client.get(f"/v1/usage?account_id={account}&group_by=model", headers=service_headers).json()
        groups = {g["group"]: g for g in by_model["items"]}
        assert groups["gpt-4o-mini"]["requests"] == 2 and groups["gpt-4o-mini"]["input_tokens"] == 2000
        assert groups["gpt-4o-mini"]["cost_usd"] == "0.0015"
        assert by_model["totals"]["requests"] == 3
        by_feature = client.get(f"/v1/usage?account_id={account}&group_by=feature", headers=service_headers).json()
        assert {g["group"] for g in by_feature["items"]} == {"chat", "screenshot"}

    def test_cost_is_credits_and_other_keys_are_shown_by_key(self, client, service_headers, make_account):
        account = make_account("pro")
        chat = spend(client, service_headers, account, 0, feature="chat", model="gpt-4o-mini")
        spend(client, service_headers, account, 0, feature="chat_tokens", model="gpt-4o-mini")  # 2000 tokens
        summary = client.get(f"/v1/usage?account_id={account}&group_by=feature", headers=service_headers).json()
        groups = {g["group"]: g for g in summary["items"]}
        assert groups["chat"]["cost"] == chat["cost"] and groups["chat"]["other_keys"] == {}
        assert groups["chat_tokens"]["cost"] == "0" and groups["chat_tokens"]["other_keys"] == {"tokens": "2000"}
        assert summary["totals"]["cost"] == chat["cost"] and summary["totals"]["other_keys"] == {"tokens": "2000"}
        assert_problem(
            client.get(f"/v1/usage?account_id={account}&group_by=planet", headers=service_headers),
            422,
            "invalid_request",
        )


class TestPublicReads:
    def test_catalog(self, client):
        body = client.get("/v1/catalog").json()
        plans = {p["id"]: p for p in body["plans"]}
        assert plans["pro"]["price"] == "39.00" and plans["pro"]["allowances"]["credits"] == "1500"
        assert [p["id"] for p in body["packs"]] == ["starter", "growth", "pro"]
        assert body["packs"][1]["bonus_credits"] == "500"
        features = {f["id"]: f for f in body["features"]}
        assert features["screenshot"]["pricing"] == {"mode": "per_unit", "credits_per_unit": "0.5"}
        assert features["quests"]["kind"] == "access" and len(body["agents"]) == 13

    def test_a_pack_says_how_much_of_each_action_it_buys(self, client):
        growth = next(p for p in client.get("/v1/catalog").json()["packs"] if p["id"] == "growth")
        # 6,000 + 500 bonus credits at the shipped rates: 1 a VM minute (about 108 hours),
        # 0.5 a screenshot, 0.1 an API call, 0.2 an AI message, 1 an uploaded MB.
        assert growth["buys"] == {
            "vm_minute": 6500,
            "screenshot": 13000,
            "api_call": 65000,
            "ai_message": 32500,
            "file_upload_mb": 6500,
        }

    def test_prices(self, client):
        body = client.get("/v1/prices").json()
        assert len(body["items"]) >= 30 and body["credits_per_usd"] == 100 and body["markup"] == "1.5"
        mini = next(p for p in body["items"] if p["model"] == "gpt-4o-mini")
        assert (mini["input_per_mtok"], mini["output_per_mtok"], mini["cached_input_per_mtok"]) == (
            "0.15",
            "0.6",
            "0.075",
        )
        assert {p["provider"] for p in body["items"]} >= {"openai", "anthropic", "gemini", "xai", "mistral"}

    def test_health(self, client):
        assert client.get("/v1/health").json() == {
            "status": "ok",
            "database": "ok",
            "schema_version": client.get("/v1/health").json()["schema_version"],
        }
        # The last migration by number ("100_…" sorts before "99_…" as text).
        from functions.core.database import migrations

        assert client.get("/v1/health").json()["schema_version"] == migrations()[-1].stem

    def test_health_is_503_when_the_database_is_down(self, settings):
        from fastapi.testclient import TestClient

        from functions.core.ledger.postgres import PostgresLedger
        from functions.local import build_app

        dead = PostgresLedger("postgresql://postgres@127.0.0.1:1/postgres?connect_timeout=1", wait_seconds=1)
        with TestClient(build_app(settings=settings, ledger=dead)) as client:
            response = client.get("/v1/health")
        assert_problem(response, 503, "database_unavailable")
        assert response.json()["database"] == "unreachable"

    def test_openapi_describes_every_path(self, client):
        paths = client.get("/openapi.json").json()["paths"]
        for path in [
            "/v1/gate",
            "/v1/entitlements",
            "/v1/reservations/{reservation_id}/release",
            "/v1/usage",
            "/v1/usage/batch",
            "/v1/balance",
            "/v1/transactions",
            "/v1/orders",
            "/v1/catalog",
            "/v1/prices",
            "/v1/health",
            "/v1/accounts/{account_id}",
            "/v1/accounts/{account_id}/plan",
            "/v1/accounts/{account_id}/members/{user_id}",
            "/v1/accounts/{account_id}/grants",
            "/v1/admin/metrics",
        ]:
            assert path in paths, path
        gate = paths["/v1/gate"]["post"]
        assert {"200", "401", "402", "403", "404", "409", "422", "429"} <= gate["responses"].keys()

    def test_openapi_describes_errors_as_the_problems_they_are(self, client):
        document = client.get("/openapi.json").json()
        assert "HTTPValidationError" not in str(document)
        problem = document["components"]["schemas"]["Problem"]
        assert {"type", "title", "status", "detail", "code"} <= set(problem["required"])
        for path, operations in document["paths"].items():
            for method, operation in operations.items():
                for status, response in operation["responses"].items():
                    if status[0] in "45":
                        assert list(response.get("content", {})) == ["application/problem+json"], (path, method, status)
        usage = document["paths"]["/v1/usage"]["post"]["responses"]
        assert {"200", "201", "409"} <= usage.keys()  # a replay answers 200
        # And a real error is what the document says.
        response = client.post("/v1/gate", json={})
        assert response.headers["content-type"].startswith("application/problem+json")
        assert set(problem["required"]) <= response.json().keys()


class TestBalanceFunctionOpenapi:
    def test_the_balance_function_documents_every_function(self):
        from fastapi.testclient import TestClient

        from functions.balance import app

        paths = TestClient(app).get("/openapi.json").json()["paths"]
        assert {"/v1/gate", "/v1/usage", "/v1/accounts/{account_id}", "/v1/balance"} <= paths.keys()
