"""POST /v1/usage and /v1/usage/batch: pricing, provider usage formats, replays."""

from __future__ import annotations

import math
import tomllib
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from tests.api.helpers import assert_problem, bearer, user_token

CATALOG = tomllib.loads((Path(__file__).resolve().parents[2] / "catalog.toml").read_text())
MODELS = {m["model"]: m for m in CATALOG["models"]}


def expected_cost(model: str, input_tokens=0, output_tokens=0, cached=0, reasoning=0, cache_write=0) -> str:
    """The price list applied by hand: tokens x USD per Mtok, in credits, rounded up to a micro-credit."""
    p = {k: Decimal(v) for k, v in MODELS[model].items() if k.endswith("per_mtok")}
    long = MODELS[model].get("long_context_threshold") and input_tokens > MODELS[model]["long_context_threshold"]
    rate = (lambda k: p.get(f"long_context_{k}", p.get(k))) if long else p.get
    usd = (
        (input_tokens - cached - cache_write) * rate("input_per_mtok")
        + cached * (rate("cached_input_per_mtok") or rate("input_per_mtok"))
        + cache_write * (rate("cache_write_per_mtok") or rate("input_per_mtok"))
        + (output_tokens - reasoning) * rate("output_per_mtok")
        + reasoning * (p.get("reasoning_per_mtok") or rate("output_per_mtok"))
    ) / 1_000_000
    credits = usd * CATALOG["settings"]["credits_per_usd"] * Decimal(CATALOG["settings"]["markup"])
    micro = math.ceil(credits * 1_000_000)
    return format((Decimal(micro) / 1_000_000).normalize(), "f")


def post_usage(client, headers, account, **body):
    body = {"account_id": account, "feature": "chat", "idempotency_key": uuid.uuid4().hex, **body}
    return client.post("/v1/usage", json=body, headers=headers)


class TestPostUsagePricing:
    @pytest.mark.parametrize(
        "model, usage",
        [
            ("gpt-4o-mini", {"input_tokens": 10_000, "output_tokens": 2_000}),
            (
                "gpt-4o-mini",
                {"input_tokens": 10_000, "output_tokens": 2_000, "cached_input_tokens": 4_000, "reasoning_tokens": 500},
            ),
            ("o3", {"input_tokens": 3_000, "output_tokens": 9_000, "reasoning_tokens": 8_000}),
            (
                "claude-sonnet-4-5",
                {
                    "input_tokens": 8_000,
                    "output_tokens": 800,
                    "cached_input_tokens": 5_000,
                    "cache_write_tokens": 2_000,
                },
            ),
            ("gemini/gemini-2.5-pro", {"input_tokens": 250_000, "output_tokens": 1_000, "cached_input_tokens": 50_000}),
            ("gemini/gemini-2.5-pro", {"input_tokens": 150_000, "output_tokens": 1_000}),
            ("deepseek/deepseek-chat", {"input_tokens": 1, "output_tokens": 1}),
        ],
    )
    def test_cost_is_tokens_times_the_models_prices(self, client, service_headers, make_account, model, usage):
        account = make_account("pro")
        response = post_usage(client, service_headers, account, model=model, usage=usage)
        assert response.status_code == 201, response.text
        keys = {
            "input_tokens": "input_tokens",
            "output_tokens": "output_tokens",
            "cached_input_tokens": "cached",
            "reasoning_tokens": "reasoning",
            "cache_write_tokens": "cache_write",
        }
        assert response.json()["cost"] == expected_cost(model, **{keys[k]: v for k, v in usage.items()})

    def test_bare_provider_model_names_find_their_price(self, client, service_headers, make_account):
        account = make_account("pro")
        response = post_usage(
            client,
            service_headers,
            account,
            model="gemini-2.5-flash",
            usage={"input_tokens": 1000, "output_tokens": 1000},
        )
        assert response.json()["cost"] == expected_cost("gemini/gemini-2.5-flash", 1000, 1000)

    @pytest.mark.parametrize(
        "sent, priced_as",
        [
            ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),  # what OpenAI returns as response.model
            ("openai/gpt-4o-mini", "gpt-4o-mini"),  # a gateway's provider prefix
            ("GPT-4o-mini", "gpt-4o-mini"),
            ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),  # Anthropic's dated id
            ("claude-haiku-4-5@20251001", "claude-haiku-4-5"),  # Vertex AI's
            ("claude-3-7-sonnet-20250219", "claude-3-7-sonnet-20250219"),  # listed as is: the exact name wins
            ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),  # a snapshot priced unlike gpt-4o is listed
            ("gemini-2.0-flash-001", "gemini/gemini-2.0-flash"),  # Google's stable version (Vertex AI)
            ("models/gemini-2.0-flash-001", "gemini/gemini-2.0-flash"),  # the Gemini API's modelVersion
            ("anthropic.claude-haiku-4-5-20251001-v1:0", "claude-haiku-4-5"),  # Amazon Bedrock's model id
            ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5"),  # a Bedrock inference profile
        ],
    )
    def test_names_providers_send_back_are_priced_as_the_model_they_name(
        self, client, service_headers, make_account, sent, priced_as
    ):
        account = make_account("pro")
        response = post_usage(
            client, service_headers, account, model=sent, usage={"input_tokens": 1000, "output_tokens": 1000}
        )
        assert response.status_code == 201, response.text
        assert response.json()["cost"] == expected_cost(priced_as, 1000, 1000)

    def test_a_name_several_providers_serve_needs_the_provider(self, client, service_headers, make_account):
        account = make_account("pro")
        tokens = {"input_tokens": 1000, "output_tokens": 1000}
        ambiguous = post_usage(client, service_headers, account, model="gpt-oss-120b", usage=tokens)
        assert_problem(ambiguous, 422, "unknown_model")  # groq's and cerebras's prices differ
        groq = post_usage(client, service_headers, account, model="gpt-oss-120b", provider="groq", usage=tokens)
        assert groq.json()["cost"] == expected_cost("groq/openai/gpt-oss-120b", 1000, 1000)

    def test_a_commit_at_the_gate_keeps_its_provider_cost(self, client, service_headers, make_account, sql):
        account = make_account("pro")
        body = {
            "account_id": account,
            "feature": "chat",
            "model": "gpt-4o-mini",
            "mode": "commit",
            "estimate": {"input_tokens": 1000, "max_output_tokens": 1000},
            "idempotency_key": uuid.uuid4().hex,
        }
        committed = client.post("/v1/gate", json=body, headers=service_headers).json()
        reported = post_usage(
            client, service_headers, account, model="gpt-4o-mini", usage={"input_tokens": 1000, "output_tokens": 1000}
        ).json()
        rows = sql(
            "SELECT cost_pico_usd, price_id IS NOT NULL FROM creditgate.usage_events WHERE id = ANY(%s::uuid[]) "
            "ORDER BY created_at",
            [committed["usage_id"], reported["usage_id"]],
        )
        assert rows[0] == rows[1] and rows[0][0] > 0  # the same call, the same provider cost, either way

    @pytest.mark.parametrize(
        "model",
        ["gpt-404-2024-07-18", "gemini-0.9-flash-001", "anthropic.claude-404-v1:0", "gpt-4.1-mini.x", "gpt-4-001"],
    )
    def test_a_versioned_name_of_an_unknown_model_is_still_unknown(self, client, service_headers, make_account, model):
        account = make_account("pro")
        response = post_usage(
            client, service_headers, account, model=model, usage={"input_tokens": 1, "output_tokens": 1}
        )
        assert_problem(response, 422, "unknown_model")

    def test_cost_usd_is_the_provider_cost(self, client, service_headers, make_account):
        account = make_account("pro")
        body = post_usage(
            client,
            service_headers,
            account,
            model="gpt-4o-mini",
            usage={"input_tokens": 1_000_000, "output_tokens": 1_000_000},
        ).json()
        assert body["cost_usd"] == "0.75" and body["cost"] == "112.5"

    def test_unknown_model_is_422_and_nothing_is_recorded(self, client, service_headers, make_account, sql):
        account = make_account("pro")
        response = post_usage(
            client, service_headers, account, model="no-such-model", usage={"input_tokens": 10, "output_tokens": 10}
        )
        assert_problem(response, 422, "unknown_model")
        assert sql("SELECT count(*) FROM creditgate.usage_events WHERE account_id = %s", account) == [(0,)]

    def test_per_unit_and_token_features(self, client, service_headers, make_account):
        account = make_account("pro")
        shot = post_usage(client, service_headers, account, feature="screenshot", quantity=3).json()
        assert shot["cost"] == "1.5" and shot["balance"]["key"] == "credits"
        tokens = post_usage(
            client,
            service_headers,
            account,
            feature="chat_tokens",
            model="gpt-4o",
            usage={"input_tokens": 700, "output_tokens": 300},
        ).json()
        assert tokens["cost"] == "1000" and tokens["balance"]["key"] == "tokens"
        goal = post_usage(client, service_headers, account, feature="generate_goal").json()
        assert goal["cost"] == "3" and goal["balance"] == {"key": "goal_generation", "available": "17", "debt": "0"}


RAW = [
    (
        "openai",
        "gpt-4o-mini",
        {
            "prompt_tokens": 5000,
            "completion_tokens": 1200,
            "total_tokens": 6200,
            "prompt_tokens_details": {"cached_tokens": 3000, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 400, "audio_tokens": 0},
        },
        {"input_tokens": 5000, "output_tokens": 1200, "cached_input_tokens": 3000, "reasoning_tokens": 400},
    ),
    (
        "openai_responses",
        "o4-mini",
        {
            "input_tokens": 5000,
            "input_tokens_details": {"cached_tokens": 1000},
            "output_tokens": 2200,
            "output_tokens_details": {"reasoning_tokens": 2000},
            "total_tokens": 7200,
        },
        {"input_tokens": 5000, "output_tokens": 2200, "cached_input_tokens": 1000, "reasoning_tokens": 2000},
    ),
    (
        "anthropic",
        "claude-sonnet-4-5",
        {
            "input_tokens": 1000,
            "cache_read_input_tokens": 5000,
            "cache_creation_input_tokens": 2000,
            "output_tokens": 800,
        },
        {"input_tokens": 8000, "output_tokens": 800, "cached_input_tokens": 5000, "cache_write_tokens": 2000},
    ),
    (
        "gemini",
        "gemini/gemini-2.5-flash",
        {
            "promptTokenCount": 4000,
            "cachedContentTokenCount": 1500,
            "candidatesTokenCount": 600,
            "thoughtsTokenCount": 900,
            "totalTokenCount": 5500,
        },
        {"input_tokens": 4000, "output_tokens": 1500, "cached_input_tokens": 1500, "reasoning_tokens": 900},
    ),
]


class TestPostUsageRawFormats:
    @pytest.mark.parametrize("usage_format, model, raw, canonical", RAW, ids=[r[0] for r in RAW])
    def test_raw_usage_costs_what_its_canonical_equivalent_costs(
        self, client, service_headers, make_account, usage_format, model, raw, canonical
    ):
        account = make_account("pro")
        from_raw = post_usage(client, service_headers, account, model=model, raw_usage=raw, usage_format=usage_format)
        from_canonical = post_usage(client, service_headers, account, model=model, usage=canonical)
        assert from_raw.status_code == 201, from_raw.text
        assert from_raw.json()["cost"] == from_canonical.json()["cost"]
        assert from_raw.json()["cost"] == expected_cost(
            model,
            canonical["input_tokens"],
            canonical["output_tokens"],
            canonical.get("cached_input_tokens", 0),
            canonical.get("reasoning_tokens", 0),
            canonical.get("cache_write_tokens", 0),
        )

    def test_gemini_usage_that_lost_its_prompt_count_is_422_and_not_recorded(
        self, client, service_headers, make_account, sql
    ):
        account = make_account("pro")
        raw = {"usageMetadata": {"candidatesTokenCount": 100, "totalTokenCount": 5100}}
        response = post_usage(
            client, service_headers, account, model="gemini-2.5-flash", raw_usage=raw, usage_format="gemini"
        )
        assert_problem(response, 422, "invalid_request")
        assert "promptTokenCount" in response.json()["detail"]
        assert sql("SELECT count(*) FROM creditgate.usage_events WHERE account_id = %s", account)[0][0] == 0

    def test_raw_usage_needs_its_format(self, client, service_headers, make_account):
        account = make_account("pro")
        response = post_usage(client, service_headers, account, model="gpt-4o", raw_usage={"prompt_tokens": 1})
        assert_problem(response, 422, "invalid_request")


class TestPostUsageSettlement:
    def test_replay_returns_200_and_the_same_body(self, client, service_headers, make_account):
        account = make_account("pro")
        body = {"account_id": account, "feature": "screenshot", "quantity": 2, "idempotency_key": "u-1"}
        first = client.post("/v1/usage", json=body, headers=service_headers)
        again = client.post("/v1/usage", json=body, headers=service_headers)
        assert (first.status_code, again.status_code) == (201, 200)
        assert again.json() == {**first.json(), "replayed": True}
        conflict = client.post("/v1/usage", json={**body, "quantity": 3}, headers=service_headers)
        assert_problem(conflict, 409, "idempotency_conflict")

    def test_settling_a_reservation_by_id_alone(self, client, service_headers, make_account):
        account = make_account("free")
        gate = client.post(
            "/v1/gate",
            headers=service_headers,
            json={
                "account_id": account,
                "feature": "chat",
                "model": "gpt-4o-mini",
                "idempotency_key": "g-1",
                "estimate": {"input_tokens": 1200, "max_output_tokens": 800},
            },
        ).json()
        usage = client.post(
            "/v1/usage",
            headers=service_headers,
            json={
                "reservation_id": gate["reservation"]["id"],
                "feature": "chat",
                "model": "gpt-4o-mini",
                "idempotency_key": "g-1",
                "usage": {"input_tokens": 1200, "output_tokens": 100},
            },
        )
        assert usage.status_code == 201, usage.text
        body = usage.json()
        assert body["reservation"]["status"] == "settled"
        assert Decimal(body["reservation"]["released"]) + Decimal(body["cost"]) == Decimal("0.099")

    def test_users_cannot_report_usage(self, client, make_account):
        response = client.post(
            "/v1/usage",
            headers=bearer(user_token()),
            json={"feature": "chat", "idempotency_key": "x", "account_id": make_account()},
        )
        assert_problem(response, 403, "forbidden")


class TestPostUsageBatch:
    def test_events_are_independent_and_idempotent(self, client, service_headers, make_account):
        account = make_account("pro")
        events = [
            {"account_id": account, "feature": "screenshot", "quantity": 1, "idempotency_key": "b-1"},
            {"account_id": account, "feature": "screenshot", "quantity": -1, "idempotency_key": "b-2"},
            {
                "account_id": account,
                "feature": "chat",
                "model": "nope",
                "usage": {"input_tokens": 1, "output_tokens": 1},
                "idempotency_key": "b-3",
            },
            {"account_id": "no-such-account", "feature": "screenshot", "idempotency_key": "b-4"},
            {"account_id": account, "feature": "api_call", "quantity": 10, "idempotency_key": "b-5"},
        ]
        results = client.post("/v1/usage/batch", json={"events": events}, headers=service_headers).json()["results"]
        assert [r.get("code") or "ok" for r in results] == [
            "ok",
            "invalid_request",
            "unknown_model",
            "account_not_found",
            "ok",
        ]
        assert results[0]["cost"] == "0.5" and results[4]["cost"] == "1"
        again = client.post("/v1/usage/batch", json={"events": [events[0], events[4]]}, headers=service_headers)
        assert [r["replayed"] for r in again.json()["results"]] == [True, True]

    def test_an_event_that_is_not_an_object_or_holds_nul_fails_alone(self, client, service_headers, make_account):
        account = make_account("pro")
        ok = {"account_id": account, "feature": "screenshot", "quantity": 1, "idempotency_key": "nul-ok"}
        nul = {**ok, "idempotency_key": "nul-bad", "metadata": {"note": "a\x00b"}}
        missing = {**ok, "account_id": "no-such-account", "idempotency_key": "nul-404"}
        response = client.post(
            "/v1/usage/batch", json={"events": [ok, "not an object", nul, missing]}, headers=service_headers
        )
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert [r.get("code") or "ok" for r in results] == [
            "ok",
            "invalid_request",
            "invalid_request",
            "account_not_found",
        ]
        # Titled as the same problem of POST /v1/usage.
        single = client.post("/v1/usage", json=missing, headers=service_headers).json()
        assert results[3]["title"] == single["title"] and results[3]["type"] == single["type"]

    def test_more_than_1000_events_is_422(self, client, service_headers):
        events = [{"account_id": "a", "feature": "chat", "idempotency_key": str(n)} for n in range(1001)]
        assert_problem(
            client.post("/v1/usage/batch", json={"events": events}, headers=service_headers), 422, "invalid_request"
        )


class TestBatchRpcDataErrors:
    def test_a_value_the_database_cannot_hold_fails_only_its_event(self, ledger, make_account):
        account = make_account("pro")
        results = ledger.record_usage_batch(
            [
                {"account_id": account, "feature": "screenshot", "quantity": 1, "idempotency_key": "ok-1"},
                {
                    "account_id": account,
                    "feature": "chat",
                    "model": "gpt-4o",
                    "idempotency_key": "huge",
                    "usage": {"input_tokens": 10**20, "output_tokens": 1},
                },
            ]
        )
        assert "usage_id" in results[0]
        assert results[1]["error"]["status"] == 422 and results[1]["error"]["code"] == "invalid_request"


class TestPostUsageOccurredAt:
    """Usage reported late or backfilled is dated when it happened, charged as things are now."""

    def test_the_usage_row_is_dated_then(self, client, service_headers, make_account, sql):
        account = make_account("pro")
        when = (datetime.now(UTC) - timedelta(days=3)).replace(microsecond=0)
        answer = post_usage(
            client, service_headers, account, feature="ai_message", quantity=5, occurred_at=when.isoformat()
        )
        assert answer.status_code == 201, answer.text
        (dated,) = sql("SELECT created_at FROM creditgate.usage_events WHERE id = %s", answer.json()["usage_id"])[0]
        assert dated == when
        by_day = client.get(
            f"/v1/usage?account_id={account}&group_by=day&from={(when - timedelta(days=1)).date()}",
            headers=service_headers,
        ).json()
        assert [item["group"] for item in by_day["items"]] == [str(when.date())]
        balance = client.get(f"/v1/balance?account_id={account}", headers=service_headers).json()["balances"][0]
        assert balance["used_this_period"] == "1"  # charged now: 5 × 0.2

    @pytest.mark.parametrize(
        "occurred_at",
        [
            (datetime.now(UTC) + timedelta(hours=1)).isoformat(),  # the future
            (datetime.now(UTC) - timedelta(days=91)).isoformat(),  # too far back
            "2026-11-20T10:00:00",  # no time zone
            "yesterday",
        ],
    )
    def test_out_of_range_or_unzoned_is_422(self, client, service_headers, make_account, occurred_at):
        response = post_usage(
            client, service_headers, make_account(), feature="ai_message", quantity=1, occurred_at=occurred_at
        )
        assert_problem(response, 422, "invalid_request")
