"""Bad input gets a clear 4xx problem+json and changes nothing, in any table."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from tests.api.helpers import assert_problem


@pytest.fixture
def snapshot(sql):
    """A fingerprint of every creditgate table's full content, but the operator's denial
    counter: an unknown model is counted there on purpose (sql/113), after the refusal."""

    def take() -> dict[str, str]:
        tables = [r[0] for r in sql("SELECT tablename FROM pg_tables WHERE schemaname = 'creditgate' ORDER BY 1")]
        tables.remove("denial_days")
        return {
            t: sql(
                f"SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, ',' ORDER BY x::text)), '') "
                f"FROM creditgate.{t} x"
            )[0][0]
            for t in tables
        }

    return take


@pytest.fixture
def account(make_account):
    return make_account("pro")


def gate(account, **overrides):
    body = {
        "account_id": account,
        "feature": "chat",
        "model": "gpt-4o-mini",
        "idempotency_key": "bad-1",
        "estimate": {"input_tokens": 100, "max_output_tokens": 100},
    }
    body.update(overrides)
    return body


def usage(account, **overrides):
    body = {
        "account_id": account,
        "feature": "chat",
        "model": "gpt-4o-mini",
        "idempotency_key": "bad-2",
        "usage": {"input_tokens": 100, "output_tokens": 100},
    }
    body.update(overrides)
    return body


BAD_JSON = [
    ("gate", "negative tokens", lambda a: gate(a, estimate={"input_tokens": -1, "max_output_tokens": 10})),
    ("gate", "fractional tokens", lambda a: gate(a, estimate={"input_tokens": 1.5, "max_output_tokens": 10})),
    ("gate", "10^30 tokens", lambda a: gate(a, estimate={"input_tokens": 10**30, "max_output_tokens": 1})),
    ("gate", "tokens as a string", lambda a: gate(a, estimate={"input_tokens": "100", "max_output_tokens": 1})),
    ("gate", "tokens as a bool", lambda a: gate(a, estimate={"input_tokens": True, "max_output_tokens": 1})),
    ("gate", "unknown field", lambda a: gate(a, priority={"high": 1})),
    ("gate", "feature of the wrong type", lambda a: gate(a, feature=["chat"])),
    ("gate", "SQL in the feature", lambda a: gate(a, feature="chat'; DROP TABLE creditgate.accounts; --")),
    ("gate", "SQL in the model", lambda a: gate(a, model="x' OR '1'='1")),
    ("gate", "SQL in the account", lambda a: gate("a'); DELETE FROM creditgate.grants; --")),
    ("gate", "missing idempotency key", lambda a: {k: v for k, v in gate(a).items() if k != "idempotency_key"}),
    ("gate", "unknown mode", lambda a: gate(a, mode="steal")),
    ("gate", "ttl out of range", lambda a: gate(a, ttl_seconds=10**9)),
    ("gate", "quantity zero", lambda a: gate(a, feature="screenshot", model=None, estimate={"quantity": 0})),
    ("usage", "negative output", lambda a: usage(a, usage={"input_tokens": 1, "output_tokens": -5})),
    (
        "usage",
        "cached above input",
        lambda a: usage(a, usage={"input_tokens": 1, "output_tokens": 1, "cached_input_tokens": 2}),
    ),
    ("usage", "10^30 tokens", lambda a: usage(a, usage={"input_tokens": 10**30, "output_tokens": 1})),
    ("usage", "no account", lambda a: {k: v for k, v in usage(a).items() if k != "account_id"}),
    ("usage", "missing idempotency key", lambda a: {k: v for k, v in usage(a).items() if k != "idempotency_key"}),
    (
        "usage",
        "raw usage with NaN-like garbage",
        lambda a: usage(a, usage=None, usage_format="openai", raw_usage={"prompt_tokens": "lots"}),
    ),
    ("usage", "not a uuid reservation", lambda a: usage(a, reservation_id="1; DROP TABLE x")),
    ("usage", "huge metadata", lambda a: usage(a, metadata={"blob": "x" * 20_000})),
    ("usage", "unknown model", lambda a: usage(a, model="gpt-404")),
    ("usage", "unknown feature", lambda a: usage(a, feature="teleport")),
    # A call priced by tokens that names no tokens would be charged 0.
    ("gate", "commit by tokens without an estimate", lambda a: gate(a, mode="commit", estimate=None)),
    ("gate", "reserve by tokens with a quantity", lambda a: gate(a, estimate={"quantity": 2})),
    (
        "gate",
        "commit on chat_tokens with an empty estimate",
        lambda a: gate(a, feature="chat_tokens", mode="commit", estimate={}),
    ),
    ("gate", "commit by model without a model", lambda a: gate(a, mode="commit", model=None)),
    (
        "gate",
        "commit on chat_tokens without an estimate",
        lambda a: gate(a, feature="chat_tokens", mode="commit", estimate=None),
    ),
    ("usage", "usage by tokens without token counts", lambda a: usage(a, usage=None)),
    ("usage", "usage by tokens with only a quantity", lambda a: usage(a, usage=None, quantity=5)),
    ("usage", "usage by tokens on chat_tokens without counts", lambda a: usage(a, feature="chat_tokens", usage=None)),
]
PATHS = {"gate": "/v1/gate", "usage": "/v1/usage"}


class TestBadBodies:
    @pytest.mark.parametrize("where, name, build", BAD_JSON, ids=[f"{w}: {n}" for w, n, _ in BAD_JSON])
    def test_is_refused_and_changes_nothing(self, client, service_headers, account, snapshot, where, name, build):
        body = {k: v for k, v in build(account).items() if v is not None}
        before = snapshot()
        response = client.post(PATHS[where], json=body, headers=service_headers)
        assert 400 <= response.status_code < 500, (response.status_code, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        problem = response.json()
        assert problem["code"] in {"invalid_request", "unknown_model", "unknown_feature", "account_not_found"}
        assert snapshot() == before

    @pytest.mark.parametrize(
        "raw",
        [
            b'{"account_id": "x", "feature": "chat", "estimate": {"input_tokens": NaN, "max_output_tokens": 1}}',
            b'{"account_id": "x", "feature": "chat", "estimate": {"input_tokens": Infinity, "max_output_tokens": 1}}',
            b'{"feature": ',
            b"[1, 2, 3]",
            b'"chat"',
            b"",
        ],
    )
    def test_malformed_json_is_422(self, client, service_headers, snapshot, raw):
        before = snapshot()
        response = client.post("/v1/gate", content=raw, headers={**service_headers, "Content-Type": "application/json"})
        assert_problem(response, 422, "invalid_request")
        assert snapshot() == before

    def test_a_2mb_body_is_413(self, client, service_headers, account, snapshot):
        before = snapshot()
        body = json.dumps(usage(account, metadata={"blob": "x" * 2_000_000}))
        response = client.post(
            "/v1/usage", content=body, headers={**service_headers, "Content-Type": "application/json"}
        )
        assert_problem(response, 413, "payload_too_large")
        assert snapshot() == before

    def test_a_streamed_2mb_body_is_413(self, client, service_headers, account, snapshot):
        before = snapshot()
        chunk = json.dumps(usage(account, metadata={"blob": "x" * 2_000_000})).encode()

        def stream():  # no Content-Length: the body arrives in pieces
            for start in range(0, len(chunk), 65_536):
                yield chunk[start : start + 65_536]

        response = client.post(
            "/v1/usage", content=stream(), headers={**service_headers, "Content-Type": "application/json"}
        )
        assert_problem(response, 413, "payload_too_large")
        assert snapshot() == before


class TestDeepBodies:
    def test_a_body_nested_hundreds_deep_is_422_not_500(self, client, service_headers, account, snapshot):
        before = snapshot()
        depth = 700  # deep enough to have overflowed a recursive walk, within what json parses
        body = json.dumps(usage(account)).removesuffix("}") + ', "metadata": {"x": ' + "[" * depth + "]" * depth + "}}"
        response = client.post(
            "/v1/usage", content=body, headers={**service_headers, "Content-Type": "application/json"}
        )
        assert_problem(response, 422, "invalid_request")
        assert snapshot() == before

    def test_a_body_too_deep_for_the_json_parser_is_422(self, client, service_headers, account, snapshot):
        before = snapshot()
        body = '{"feature": ' + "[" * 200_000 + "]" * 200_000 + "}"
        response = client.post(
            "/v1/gate", content=body, headers={**service_headers, "Content-Type": "application/json"}
        )
        assert_problem(response, 422, "invalid_request")
        assert snapshot() == before


class TestNulCharacters:
    """PostgreSQL text cannot hold U+0000: refused up front, never a database error."""

    @pytest.mark.parametrize(
        "method,path,body,headers",
        [
            (
                "post",
                "/v1/accounts/{a}/grants",
                {"amount": "1", "source": "promo", "reason": "a\x00b"},
                {"Idempotency-Key": "n"},
            ),
            ("post", "/v1/usage", "usage:metadata", {}),
            ("post", "/v1/usage", "usage:metadata-key", {}),
            ("post", "/v1/usage", "usage:session", {}),
            ("put", "/v1/accounts/nul-account", {"plan": "free", "email": "a\x00@example.com"}, {}),
        ],
    )
    def test_text_with_nul_is_422(self, client, service_headers, account, snapshot, method, path, body, headers):
        body = (
            {
                "usage:metadata": lambda: usage(account, metadata={"note": "a\x00b"}),
                "usage:metadata-key": lambda: usage(account, metadata={"a\x00": 1}),
                "usage:session": lambda: usage(account, session_id="s\x00"),
            }.get(body, lambda: body)()
            if isinstance(body, str)
            else body
        )
        before = snapshot()
        response = getattr(client, method)(path.format(a=account), json=body, headers={**service_headers, **headers})
        assert_problem(response, 422, "invalid_request")
        assert "NUL" in response.text
        assert snapshot() == before

    def test_a_value_the_database_refuses_is_422_not_500(self, ledger, account, snapshot):
        """The safety net under the schemas: SQLSTATE class 22 from an RPC is bad input."""
        from functions.core.errors import ProblemError

        before = snapshot()
        with pytest.raises(ProblemError) as refused:
            ledger.rpc(
                "creditgate_grant_credits",
                {"account_id": account, "amount": "lots", "source": "promo", "idempotency_key": "x", "reason": "x"},
            )
        assert (refused.value.status, refused.value.code) == (422, "invalid_request")
        assert snapshot() == before


class TestTimesPostgresCannotTake:
    """Python takes UTC offsets up to ±23:59, PostgreSQL up to ±15:59: times go to the
    database in UTC, and one that cannot be said in UTC is 422."""

    def test_a_far_offset_is_the_same_instant(self, client, service_headers, account):
        answer = client.get(
            "/v1/usage",
            params={"account_id": account, "to": "2024-12-05T06:58:43-18:26"},
            headers=service_headers,
        )
        assert answer.status_code == 200, answer.text

    def test_usage_and_grants_with_far_offsets_are_recorded(self, client, service_headers, account, sql):
        when = (datetime.now(UTC) - timedelta(days=2)).replace(microsecond=0)
        far = when.astimezone(timezone(timedelta(hours=18)))
        recorded = client.post("/v1/usage", json=usage(account, occurred_at=far.isoformat()), headers=service_headers)
        assert recorded.status_code == 201, recorded.text
        assert sql("SELECT created_at FROM creditgate.usage_events WHERE id = %s", recorded.json()["usage_id"]) == [
            (when,)
        ]
        granted = client.post(
            f"/v1/accounts/{account}/grants",
            json={"amount": "1", "source": "promo", "reason": "r", "expires_at": "2999-01-01T00:00:00-18:59"},
            headers={**service_headers, "Idempotency-Key": "far-offset"},
        )
        assert granted.status_code == 201, granted.text

    def test_a_time_postgres_takes_reaches_it_as_sent(self, account):
        """Replays hash the request as sent: converting every time would turn a retry sent
        before an upgrade into a 409."""
        from functions.core.metering.schemas import UsageRequest

        when = (datetime.now(UTC) - timedelta(days=1)).astimezone(timezone(timedelta(hours=5)))
        sent = UsageRequest.model_validate(usage(account, occurred_at=when.isoformat())).to_rpc()
        assert sent["occurred_at"] == when.isoformat()

    def test_a_time_before_year_one_in_utc_is_422(self, client, service_headers, account, snapshot):
        before = snapshot()
        answer = client.get(
            "/v1/usage",
            params={"account_id": account, "from": "0001-01-01T00:00:00+18:00"},
            headers=service_headers,
        )
        assert_problem(answer, 422, "invalid_request")
        assert snapshot() == before


class TestBadAdminInput:
    @pytest.mark.parametrize(
        "amount",
        ["abc", "-5", "0", "1e400", "0.0000001", "NaN", None, True, [1]]
        # What Decimal() alone would take: "1_000" for "1.000" would grant a thousand times more.
        + ["1_000", "\u0661\u0662", " 1 ", "+1", "1e2", ".5", "1."],
    )
    def test_grant_amounts(self, client, service_headers, account, snapshot, amount):
        before = snapshot()
        response = client.post(
            f"/v1/accounts/{account}/grants",
            headers={**service_headers, "Idempotency-Key": "g"},
            json={"amount": amount, "source": "promo", "reason": "x"},
        )
        assert_problem(response, 422, "invalid_request")
        assert snapshot() == before

    def test_grant_needs_an_idempotency_key(self, client, service_headers, account, snapshot):
        before = snapshot()
        response = client.post(
            f"/v1/accounts/{account}/grants",
            headers=service_headers,
            json={"amount": "5", "source": "promo", "reason": "x"},
        )
        assert_problem(response, 422, "invalid_request")
        assert snapshot() == before

    def test_unknown_plan_and_bad_account_ids(self, client, service_headers, snapshot):
        before = snapshot()
        assert_problem(
            client.put("/v1/accounts/new-one", json={"plan": "platinum"}, headers=service_headers), 422, "unknown_plan"
        )
        assert_problem(client.put("/v1/accounts/bad%20id'--", json={}, headers=service_headers), 422, "invalid_request")
        # Guest sessions' rows live under "guest:<session>": no account may take that name.
        assert_problem(
            client.put("/v1/accounts/guest:abcdefgh", json={}, headers=service_headers), 422, "invalid_request"
        )
        assert snapshot() == before


class TestSqlInStoredText:
    def test_sql_in_metadata_is_stored_as_text(self, client, service_headers, account, sql):
        evil = "'); DROP TABLE creditgate.accounts; --"
        response = client.post(
            "/v1/usage", headers=service_headers, json=usage(account, idempotency_key="evil", metadata={"note": evil})
        )
        assert response.status_code == 201
        stored = sql("SELECT metadata->>'note' FROM creditgate.usage_events WHERE id = %s", response.json()["usage_id"])
        assert stored == [(evil,)]
        assert sql("SELECT to_regclass('creditgate.accounts') IS NOT NULL") == [(True,)]
