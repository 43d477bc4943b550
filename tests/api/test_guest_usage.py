"""POST /v1/usage for a guest's call (`guest_session_id`): priced like an account's, kept for
the operator's cost figures, and nothing charged."""

from __future__ import annotations

import threading
import uuid
from decimal import Decimal

import pytest

from tests.api.helpers import assert_problem, bearer, user_token

TOKENS = {"input_tokens": 1200, "output_tokens": 300}


def guest_usage(client, headers, session, **body):
    body = {
        "guest_session_id": session,
        "feature": "chat",
        "model": "gpt-4o-mini",
        "usage": TOKENS,
        "idempotency_key": uuid.uuid4().hex,
        **body,
    }
    return client.post("/v1/usage", json=body, headers=headers)


def new_session() -> str:
    return f"guest-{uuid.uuid4().hex}"


def money_rows(sql) -> tuple:
    """Everything a charge would move."""
    return sql(
        "SELECT (SELECT count(*) FROM creditgate.ledger_entries), (SELECT count(*) FROM creditgate.balances),"
        " (SELECT coalesce(sum(available), 0) FROM creditgate.balances)"
    )[0]


class TestPostGuestUsage:
    def test_priced_like_an_accounts_call_and_nothing_charged(self, client, service_headers, make_account, sql):
        session = new_session()
        gated = client.post("/v1/gate", json={"feature": "chat"}, headers={"X-Session-Id": session})
        assert gated.status_code == 200
        before = money_rows(sql)

        answer = guest_usage(client, service_headers, session)

        assert answer.status_code == 201, answer.text
        body = answer.json()
        assert (body["account_id"], body["guest_session_id"], body["cost"], body["balance"]) == (
            None,
            session,
            "0",
            None,
        )
        assert money_rows(sql) == before
        account_call = client.post(
            "/v1/usage",
            json={
                "account_id": make_account("pro"),
                "feature": "chat",
                "model": "gpt-4o-mini",
                "usage": TOKENS,
                "idempotency_key": uuid.uuid4().hex,
            },
            headers=service_headers,
        ).json()
        assert body["cost_usd"] == account_call["cost_usd"] and body["cost_usd"] != "0"
        assert sql(
            "SELECT account_id, model, input_tokens, output_tokens, cost, cost_pico_usd > 0"
            " FROM creditgate.usage_events WHERE id = %s",
            body["usage_id"],
        ) == [(f"guest:{session}", "gpt-4o-mini", 1200, 300, 0, True)]

    def test_counted_in_the_operators_cost(self, client, service_headers, sql):
        def cost() -> tuple[Decimal, Decimal]:
            kpis = client.get("/v1/admin/metrics?days=1", headers=service_headers).json()["kpis"]
            return Decimal(kpis["cost_usd"]), Decimal(kpis["guest_cost_usd"])

        before = cost()
        session = new_session()
        body = guest_usage(
            client, service_headers, session, usage={"input_tokens": 10**6, "output_tokens": 10**6}
        ).json()
        after = cost()
        assert Decimal(body["cost_usd"]) == Decimal("0.75")  # gpt-4o-mini: $0.15 + $0.60
        assert (after[0] - before[0], after[1] - before[1]) == (Decimal("0.75"), Decimal("0.75"))
        top = client.get("/v1/admin/metrics?days=1", headers=service_headers).json()["top_accounts"]
        assert not [row for row in top if row["account_id"].startswith("guest:")]

    def test_a_replay_answers_once_and_another_body_is_409(self, client, service_headers, sql):
        session, key = new_session(), uuid.uuid4().hex
        first = guest_usage(client, service_headers, session, idempotency_key=key)
        again = guest_usage(client, service_headers, session, idempotency_key=key)
        assert (first.status_code, again.status_code) == (201, 200)
        assert again.json() == {**first.json(), "replayed": True}
        other = guest_usage(
            client, service_headers, session, idempotency_key=key, usage={"input_tokens": 1, "output_tokens": 1}
        )
        assert_problem(other, 409, "idempotency_conflict")
        assert sql("SELECT count(*) FROM creditgate.usage_events WHERE account_id = %s", f"guest:{session}") == [(1,)]

    def test_a_retry_after_the_session_was_swept_is_still_a_replay(self, client, service_headers, ledger, sql):
        session, key = new_session(), uuid.uuid4().hex
        assert client.post("/v1/gate", json={"feature": "chat"}, headers={"X-Session-Id": session}).status_code == 200
        assert guest_usage(client, service_headers, session, idempotency_key=key).status_code == 201
        sql("UPDATE creditgate.guest_sessions SET expires_at = now() WHERE session_id = %s", session)
        ledger.run_maintenance({})
        assert sql("SELECT count(*) FROM creditgate.guest_sessions WHERE session_id = %s", session) == [(0,)]
        assert guest_usage(client, service_headers, session, idempotency_key=key).status_code == 200
        assert sql("SELECT count(*) FROM creditgate.usage_events WHERE account_id = %s", f"guest:{session}") == [(1,)]

    def test_kept_after_the_session_is_gone(self, client, service_headers, sql):
        session = new_session()  # never gated, or already swept by maintenance
        assert guest_usage(client, service_headers, session).status_code == 201
        assert sql("SELECT count(*) FROM creditgate.usage_events WHERE account_id = %s", f"guest:{session}") == [(1,)]

    @pytest.mark.parametrize(
        "change",
        [
            {"account_id": "someone"},
            {"user_id": "someone"},
            {"reservation_id": str(uuid.uuid4())},
            {"guest_session_id": "short"},
            {"guest_session_id": "has space in it"},
            {"guest_session_id": 12345678},
            {"model": "no-such-model-9"},
            {"usage": None},
            {"feature": "no_such_feature"},
        ],
    )
    def test_bad_input_is_refused_and_records_nothing(self, client, service_headers, sql, change):
        before = sql("SELECT count(*) FROM creditgate.usage_events")
        body = {k: v for k, v in change.items() if v is not None}
        response = (
            guest_usage(client, service_headers, new_session(), **body)
            if "usage" not in change
            else (
                client.post(
                    "/v1/usage",
                    json={
                        "guest_session_id": new_session(),
                        "feature": "chat",
                        "model": "gpt-4o-mini",
                        "idempotency_key": uuid.uuid4().hex,
                    },
                    headers=service_headers,
                )
            )
        )
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert sql("SELECT count(*) FROM creditgate.usage_events") == before

    def test_only_the_apps_server_reports_it(self, client, make_account):
        user = make_account("pro")
        response = guest_usage(client, bearer(user_token(user)), new_session())
        assert_problem(response, 403, "forbidden")
        assert guest_usage(client, {"X-Session-Id": new_session()}, new_session()).status_code in (401, 403)


class TestPostGuestUsageBatch:
    def test_guest_and_account_events_in_one_batch(self, client, service_headers, make_account, sql):
        session, account = new_session(), make_account("pro")
        events = [
            {
                "guest_session_id": session,
                "feature": "chat",
                "model": "gpt-4o-mini",
                "usage": TOKENS,
                "idempotency_key": "g1",
            },
            {
                "account_id": account,
                "feature": "chat",
                "model": "gpt-4o-mini",
                "usage": TOKENS,
                "idempotency_key": "a1",
            },
            {
                "guest_session_id": session,
                "feature": "chat",
                "model": "no-such-model-9",
                "usage": TOKENS,
                "idempotency_key": "g2",
            },
        ]
        results = client.post("/v1/usage/batch", json={"events": events}, headers=service_headers).json()["results"]
        assert results[0]["guest_session_id"] == session and results[0]["cost"] == "0"
        assert results[1]["account_id"] == account and results[1]["cost"] != "0"
        assert results[2]["code"] == "unknown_model"
        assert sql("SELECT count(*) FROM creditgate.usage_events WHERE account_id = %s", f"guest:{session}") == [(1,)]

    def test_two_batches_of_the_same_guest_events_in_opposite_orders_do_not_deadlock(self, ledger, sql):
        session = new_session()
        events = [
            {
                "guest_session_id": session,
                "feature": "chat",
                "model": "gpt-4o-mini",
                "usage": TOKENS,
                "idempotency_key": f"k{n:03d}",
            }
            for n in range(200)
        ]
        answers, errors = [], []
        start = threading.Barrier(2)

        def send(batch):
            start.wait()
            try:
                answers.append(ledger.record_usage_batch(batch))
            except Exception as error:  # a deadlock fails the whole batch
                errors.append(error)

        threads = [threading.Thread(target=send, args=(b,)) for b in (events, events[::-1])]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == [] and len(answers) == 2
        assert sql("SELECT count(*) FROM creditgate.usage_events WHERE account_id = %s", f"guest:{session}") == [(200,)]
