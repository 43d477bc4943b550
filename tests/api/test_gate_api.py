"""POST /v1/gate, GET /v1/entitlements, POST /v1/reservations/{id}/release."""

from __future__ import annotations

import ipaddress
import uuid

import pytest
from fastapi.testclient import TestClient

from functions.local import build_app
from tests.api.helpers import assert_problem, bearer, user_token
from tests.conftest import unique_ip


def gate_body(account: str | None, **extra) -> dict:
    body = {
        "feature": "chat",
        "model": "gpt-4o-mini",
        "estimate": {"input_tokens": 1200, "max_output_tokens": 800},
        "idempotency_key": uuid.uuid4().hex,
        **extra,
    }
    if account:
        body["account_id"] = account
    return body


class TestPostGate:
    def test_reserve_answers_with_the_contract_shape(self, client, service_headers, make_account):
        account = make_account("free")
        response = client.post("/v1/gate", json=gate_body(account), headers=service_headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["allowed"] is True and body["plan"] == "free" and body["mode"] == "reserve"
        # 1200 x 0.15 + 800 x 0.6 USD/Mtok = 0.00066 USD -> x 100 credits/USD x 1.5 markup
        assert body["cost_estimate"] == "0.099"
        assert body["reservation"]["amount"] == "0.099" and body["reservation"]["id"]
        assert set(body["balance"]) == {"key", "available"} and body["balance"]["key"] == "credits"
        assert body["warnings"] == []

    def test_replay_returns_the_first_answer(self, client, service_headers, make_account):
        account = make_account("free")
        body = gate_body(account)
        first = client.post("/v1/gate", json=body, headers=service_headers).json()
        again = client.post("/v1/gate", json=body, headers=service_headers).json()
        assert again == first

    def test_locked_agent_is_403_with_upgrade_to(self, client, service_headers, make_account):
        account = make_account("free")
        response = client.post("/v1/gate", json=gate_body(account, agent="builder"), headers=service_headers)
        body = assert_problem(response, 403, "agent_not_in_plan")
        assert body["allowed"] is False and body["upgrade_to"][0] == "starter"

    def test_locked_feature_is_403_with_upgrade_to(self, client, service_headers, make_account):
        account = make_account("free")
        body = {"account_id": account, "feature": "generate_goal", "mode": "check"}
        problem = assert_problem(
            client.post("/v1/gate", json=body, headers=service_headers), 403, "feature_not_in_plan"
        )
        assert problem["upgrade_to"] == ["pro", "business", "enterprise"]

    def test_unknown_model_is_422_never_free(self, client, service_headers, make_account):
        account = make_account("free")
        response = client.post("/v1/gate", json=gate_body(account, model="gpt-9-imaginary"), headers=service_headers)
        assert_problem(response, 422, "unknown_model")

    def test_unknown_feature_and_account(self, client, service_headers, make_account):
        account = make_account("free")
        assert_problem(
            client.post("/v1/gate", json={"account_id": account, "feature": "nope"}, headers=service_headers),
            422,
            "unknown_feature",
        )
        assert_problem(
            client.post("/v1/gate", json={"account_id": "missing-account", "feature": "chat"}, headers=service_headers),
            404,
            "account_not_found",
        )

    def test_insufficient_credits_lists_packs(self, client, service_headers, make_account):
        account = make_account("free")
        body = gate_body(account, estimate={"input_tokens": 900_000_000, "max_output_tokens": 0})
        problem = assert_problem(
            client.post("/v1/gate", json=body, headers=service_headers), 402, "insufficient_credits"
        )
        assert problem["required"] == "20250" and problem["available"] == "150"
        assert problem["packs"][1] == {
            "id": "growth",
            "name": "Growth",
            "price": "49.00",
            "currency": "usd",
            "key": "credits",
            "credits": "6000",
            "bonus_credits": "500",
        }

    def test_rate_limit_is_429_with_retry_after(self, client, service_headers, make_account):
        account = make_account("free")  # 10 requests a minute
        statuses = []
        for _ in range(21):
            response = client.post("/v1/gate", json={"account_id": account, "feature": "chat"}, headers=service_headers)
            statuses.append(response.status_code)
            if response.status_code == 429:
                body = assert_problem(response, 429, "rate_limited")
                assert 1 <= body["retry_after"] <= 60
                assert response.headers["Retry-After"] == str(body["retry_after"])
                break
        assert statuses[-1] == 429 and statuses.count(200) >= 10

    def test_service_key_must_name_the_account(self, client, service_headers):
        assert_problem(
            client.post("/v1/gate", json={"feature": "chat"}, headers=service_headers), 422, "invalid_request"
        )


class TestGateAsUser:
    def test_first_use_of_a_user_token_creates_the_account(self, client):
        user = str(uuid.uuid4())
        response = client.post("/v1/gate", json={"feature": "chat"}, headers=bearer(user_token(user)))
        assert response.status_code == 200, response.text
        assert response.json()["account_id"] == user and response.json()["plan"] == "free"

    def test_a_user_cannot_act_for_another_account(self, client, make_account):
        other = make_account("free")
        response = client.post("/v1/gate", json={"feature": "chat", "account_id": other}, headers=bearer(user_token()))
        assert_problem(response, 403, "forbidden")

    def test_a_member_acts_for_the_org_account(self, client, service_headers, make_account):
        org = make_account("pro", owner="org")
        user = str(uuid.uuid4())
        client.put(f"/v1/accounts/{org}/members/{user}", json={"role": "member"}, headers=service_headers)
        response = client.post(
            "/v1/gate", json={"feature": "generate_goal"}, headers={**bearer(user_token(user)), "X-Account-Id": org}
        )
        assert response.status_code == 200, response.text
        assert response.json()["account_id"] == org

    def test_expired_and_forged_tokens_are_401(self, client):
        assert_problem(
            client.post("/v1/gate", json={"feature": "chat"}, headers=bearer(user_token(exp_in=-60))),
            401,
            "unauthenticated",
        )
        forged = user_token(secret="not-the-project-secret-not-the-project-secret")
        assert_problem(
            client.post("/v1/gate", json={"feature": "chat"}, headers=bearer(forged)), 401, "unauthenticated"
        )
        assert_problem(
            client.post("/v1/gate", json={"feature": "chat"}, headers=bearer(user_token(aud="other"))),
            401,
            "unauthenticated",
        )
        assert_problem(
            client.post("/v1/gate", json={"feature": "chat"}, headers=bearer("cg_wrong_service_key")),
            401,
            "unauthenticated",
        )
        assert_problem(client.post("/v1/gate", json={"feature": "chat"}), 401, "unauthenticated")


class TestGateNamesTheUser:
    """A commit's usage row says which member made the call, for usage by user."""

    def commit(self, client, headers, account, **extra):
        body = gate_body(account, mode="commit", **extra)
        response = client.post("/v1/gate", json=body, headers=headers)
        assert response.status_code == 200, response.text
        return response.json()["usage_id"]

    def test_a_service_key_names_the_member(self, client, service_headers, make_account, sql):
        org = make_account("pro", owner="org")
        usage_id = self.commit(client, service_headers, org, user_id="member-7")
        assert sql("SELECT user_id FROM creditgate.usage_events WHERE id = %s", usage_id) == [("member-7",)]
        summary = client.get(f"/v1/usage?account_id={org}&group_by=user", headers=service_headers).json()
        assert [item["group"] for item in summary["items"]] == ["member-7"]

    def test_a_users_token_names_its_own_user(self, client, service_headers, make_account, sql):
        org = make_account("pro", owner="org")
        user = str(uuid.uuid4())
        client.put(f"/v1/accounts/{org}/members/{user}", json={"role": "member"}, headers=service_headers)
        headers = {**bearer(user_token(user)), "X-Account-Id": org}
        usage_id = self.commit(client, headers, None, user_id="someone-else")
        assert sql("SELECT user_id FROM creditgate.usage_events WHERE id = %s", usage_id) == [(user,)]

    def test_a_long_user_id_is_422(self, client, service_headers, make_account):
        response = client.post(
            "/v1/gate", json=gate_body(make_account("free"), mode="commit", user_id="u" * 129), headers=service_headers
        )
        assert_problem(response, 422, "invalid_request")


class TestGateAsGuest:
    def test_guests_get_the_configured_exchanges_per_session(self, client):
        session = {"X-Session-Id": f"guest-{uuid.uuid4().hex}"}
        answers = [
            client.post("/v1/gate", json={"feature": "chat", "agent": "commander"}, headers=session) for _ in range(4)
        ]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert answers[0].json()["plan"] == "anonymous"
        body = assert_problem(answers[3], 429, "guest_limit_reached")
        assert body["scope"] == "session" and body["retry_after"] > 0 and body["upgrade_to"]

    def test_a_check_does_not_spend_an_exchange(self, client):
        session = {"X-Session-Id": f"guest-{uuid.uuid4().hex}"}
        for _ in range(5):
            assert (
                client.post("/v1/gate", json={"feature": "chat", "mode": "check"}, headers=session).status_code == 200
            )

    def test_a_replay_is_its_first_answer_not_another_request(self, client, sql):
        limit = sql("SELECT rate_limit_per_minute FROM creditgate.plans WHERE id = 'anonymous'")[0][0]
        session = {"X-Session-Id": f"guest-{uuid.uuid4().hex}"}
        body = {"feature": "chat", "mode": "check"}
        commit = {"feature": "chat", "mode": "commit", "idempotency_key": "one-exchange"}
        first = client.post("/v1/gate", json=commit, headers=session)
        replays = [client.post("/v1/gate", json=commit, headers=session) for _ in range(limit + 1)]
        assert {r.status_code for r in replays} == {200} and {r.json()["cost_estimate"] for r in replays} == {
            first.json()["cost_estimate"]
        }
        assert client.post("/v1/gate", json=body, headers=session).status_code == 200

    def test_the_anonymous_plans_rate_limit_applies_per_session(self, client, sql):
        limit = sql("SELECT rate_limit_per_minute FROM creditgate.plans WHERE id = 'anonymous'")[0][0]
        assert limit > 0
        for _ in range(2):  # a minute boundary between the calls can spoil one attempt, not two
            session = {"X-Session-Id": f"guest-{uuid.uuid4().hex}"}
            answers = [
                client.post("/v1/gate", json={"feature": "chat", "mode": "check"}, headers=session)
                for _ in range(limit + 1)
            ]
            if answers[-1].status_code == 429:
                break
        assert [a.status_code for a in answers] == [200] * limit + [429]
        body = assert_problem(answers[-1], 429, "rate_limited")
        assert body["limit"] == limit and answers[-1].headers["Retry-After"]

    @staticmethod
    def guest_calls(settings, ledger, headers_of) -> list:
        """24 guest chats behind one trusted proxy hop, 3 each from 8 sessions, with the
        headers headers_of(n) gives the n-th session (a fresh X-Session-Id is added)."""
        app = build_app(settings=settings.model_copy(update={"trusted_proxy_hops": 1}), ledger=ledger)
        answers = []
        with TestClient(app) as client:
            for n in range(8):
                for _ in range(3):
                    session = ("X-Session-Id", f"guest-{n}-{uuid.uuid4().hex[:12]}")
                    answers.append(client.post("/v1/gate", json={"feature": "chat"}, headers=[session, *headers_of(n)]))
        return answers

    def test_guests_are_capped_per_ip_across_sessions(self, settings, ledger):
        ip = unique_ip()
        answers = self.guest_calls(settings, ledger, lambda n: [("X-Forwarded-For", f"203.0.113.9, {ip}")])
        statuses = [a.status_code for a in answers]
        assert statuses.count(200) == 20 and statuses.count(429) == 4
        assert {a.json()["scope"] for a in answers if a.status_code == 429} == {"ip"}

    def test_a_forged_first_header_line_does_not_hide_the_proxys(self, settings, ledger):
        """A proxy that adds its own X-Forwarded-For line leaves the client's line first."""
        real = unique_ip()
        answers = self.guest_calls(
            settings,
            ledger,
            # The client's own line, different each time, then the proxy's.
            lambda n: [("X-Forwarded-For", unique_ip()), ("X-Forwarded-For", real)],
        )
        statuses = [a.status_code for a in answers]
        assert statuses.count(200) == 20 and statuses.count(429) == 4

    def test_one_ipv6_network_is_one_client(self, settings, ledger):
        """Fresh addresses inside one /64 do not buy fresh guest allowances."""
        network = f"2001:db8:{uuid.uuid4().hex[:4]}:{uuid.uuid4().hex[:4]}"
        answers = self.guest_calls(
            settings, ledger, lambda n: [("X-Forwarded-For", f"{network}:{uuid.uuid4().hex[:4]}::{n + 1}")]
        )
        statuses = [a.status_code for a in answers]
        assert statuses.count(200) == 20 and statuses.count(429) == 4

    def test_a_guests_answer_names_the_model_asked_for(self, client):
        answer = client.post(
            "/v1/gate",
            json={"feature": "chat", "model": "gpt-4o-mini"},
            headers={"X-Session-Id": f"guest-{uuid.uuid4().hex}"},
        )
        assert answer.status_code == 200 and answer.json()["model"] == "gpt-4o-mini"

    def test_a_locked_agent_is_refused_to_guests(self, client):
        response = client.post(
            "/v1/gate",
            json={"feature": "chat", "agent": "builder"},
            headers={"X-Session-Id": f"guest-{uuid.uuid4().hex}"},
        )
        assert_problem(response, 403, "agent_not_in_plan")

    def test_a_malformed_session_id_is_422(self, client):
        assert_problem(
            client.post("/v1/gate", json={"feature": "chat"}, headers={"X-Session-Id": "x"}), 401, "unauthenticated"
        )


class TestGateBadEstimates:
    @pytest.mark.parametrize(
        ("estimate", "detail"),
        [
            ({"quantity": -2}, "estimate.quantity: Input should be greater than or equal to 1"),
            ({"input_tokens": -1}, "estimate.input_tokens: Input should be greater than or equal to 0"),
            (
                {"quantity": 2, "input_tokens": 1},
                "estimate: Value error, an estimate names tokens or a quantity, not both",
            ),
            ({}, "estimate: Value error, an estimate names input_tokens, max_output_tokens or quantity"),
            ({"input_tokens": 5, "quantity": None}, "estimate.quantity: Input should be a valid integer"),
        ],
    )
    def test_the_detail_names_the_field_and_the_rule(self, client, service_headers, estimate, detail):
        body = {
            "account_id": "someone",
            "feature": "chat",
            "mode": "commit",
            "estimate": estimate,
            "idempotency_key": "k",
        }
        answer = assert_problem(client.post("/v1/gate", json=body, headers=service_headers), 422, "invalid_request")
        assert answer["detail"] == detail


class TestEntitlements:
    def test_free_account_sees_locked_agents_and_features(self, client, service_headers, make_account):
        account = make_account("free")
        body = client.get(f"/v1/entitlements?account_id={account}", headers=service_headers).json()
        assert body["plan"]["id"] == "free"
        assert body["agents"]["commander"]["allowed"] is True
        assert body["agents"]["builder"] == {
            "allowed": False,
            "name": body["agents"]["builder"]["name"],
            "reason": "agent_not_in_plan",
            "upgrade_to": ["starter", "pro", "business"],
        }
        assert body["features"]["quests"]["allowed"] is False

    def test_guest_entitlements_are_the_anonymous_plan(self, client):
        body = client.get("/v1/entitlements", headers={"X-Session-Id": f"guest-{uuid.uuid4().hex}"}).json()
        assert body["plan"]["id"] == "anonymous" and body["agents"]["connector"]["allowed"] is True

    def test_a_guest_sees_its_exchanges_left_and_the_limit_when_it_is_reached(self, client, sql):
        session = {"X-Session-Id": f"guest-{uuid.uuid4().hex}"}
        limit = sql("SELECT guest_exchanges_per_session FROM creditgate.settings")[0][0]
        fresh = client.get("/v1/entitlements", headers=session).json()
        assert fresh["guest"] == {"exchanges_left": limit} and fresh["features"]["chat"]["allowed"] is True
        client.post("/v1/gate", json={"feature": "chat"}, headers=session)
        assert client.get("/v1/entitlements", headers=session).json()["guest"] == {"exchanges_left": limit - 1}
        for _ in range(limit - 1):
            client.post("/v1/gate", json={"feature": "chat"}, headers=session)
        assert client.post("/v1/gate", json={"feature": "chat", "mode": "check"}, headers=session).status_code == 429

        used_up = client.get("/v1/entitlements", headers=session).json()
        assert used_up["guest"] == {"exchanges_left": 0, "scope": "session"}
        assert used_up["features"]["chat"]["allowed"] is False
        assert used_up["features"]["chat"]["reason"] == "guest_limit_reached"
        assert used_up["features"]["chat"]["upgrade_to"]
        assert used_up["features"]["quests"]["reason"] == "feature_not_in_plan"  # never in the plan
        open_agent = next(a for a, v in fresh["agents"].items() if v["allowed"])
        assert used_up["agents"][open_agent]["reason"] == "guest_limit_reached"

    def test_a_guest_whose_address_is_used_up_sees_it(self, settings, ledger, sql):
        app = build_app(settings=settings.model_copy(update={"trusted_proxy_hops": 1}), ledger=ledger)
        ip = unique_ip()
        per_ip = sql("SELECT guest_exchanges_per_ip_per_day FROM creditgate.settings")[0][0]
        sql(
            "INSERT INTO creditgate.guest_ip_days (ip, day, exchanges, sessions)"
            " VALUES (%s::inet, (now() AT TIME ZONE 'UTC')::date, %s, 9)",
            str(ipaddress.IPv6Network((ip, 64), strict=False)),  # as guests' addresses are counted
            per_ip,
        )
        with TestClient(app) as client:
            headers = {"X-Session-Id": f"guest-{uuid.uuid4().hex}", "X-Forwarded-For": ip}
            body = client.get("/v1/entitlements", headers=headers).json()
            assert client.post("/v1/gate", json={"feature": "chat"}, headers=headers).status_code == 429
        assert body["guest"] == {"exchanges_left": 0, "scope": "ip"}
        assert body["features"]["chat"]["reason"] == "guest_limit_reached"

    def test_an_account_has_no_guest_part(self, client, service_headers, make_account):
        body = client.get(f"/v1/entitlements?account_id={make_account('free')}", headers=service_headers).json()
        assert "guest" not in body


class TestRelease:
    def test_release_twice_is_a_no_op(self, client, service_headers, make_account):
        account = make_account("free")
        reservation = client.post("/v1/gate", json=gate_body(account), headers=service_headers).json()["reservation"]
        first = client.post(f"/v1/reservations/{reservation['id']}/release", headers=service_headers)
        second = client.post(f"/v1/reservations/{reservation['id']}/release", headers=service_headers)
        assert first.json() == {"id": reservation["id"], "status": "released", "released": "0.099"}
        assert second.status_code == 200 and second.json()["released"] == "0"

    def test_users_cannot_release(self, client):
        response = client.post(f"/v1/reservations/{uuid.uuid4()}/release", headers=bearer(user_token()))
        assert_problem(response, 403, "forbidden")


class TestEnforcementOff:
    """CREDITGATE_ENFORCEMENT=monitor, the emergency switch: running short of credits or
    quota is not denied (it is said), a commit is recorded as usage (debt where short);
    plan access, a disputed account, rate limits and guests stay enforced."""

    @pytest.fixture
    def monitor(self, settings, ledger):
        app = build_app(settings=settings.model_copy(update={"enforcement": "monitor"}), ledger=ledger)
        with TestClient(app) as client:
            yield client

    def test_running_short_is_allowed_and_said(self, monitor, service_headers, make_account, ledger, sql):
        account = make_account("free")  # 150 credits
        big = gate_body(account, model="gpt-4o", estimate={"input_tokens": 10**7, "max_output_tokens": 10**6})
        answer = monitor.post("/v1/gate", json=big, headers=service_headers)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["allowed"] is True and body["reservation"] is None and body["warnings"] == ["not_enforced"]
        assert body["not_enforced"]["code"] == "insufficient_credits"
        # The answer names the plan and balance as an allowed answer does (both were null).
        assert body["plan"] == "free" and body["balance"] == {"key": "credits", "available": "150"}
        assert sql("SELECT count(*) FROM creditgate.reservations WHERE account_id = %s", account) == [(0,)]
        assert ledger.reconcile(account)["ok"]

    def test_entitlements_do_not_lock_what_the_gate_lets_through(
        self, monitor, client, service_headers, make_account, ledger
    ):
        account = make_account("free")
        ledger.debit({"account_id": account, "amount": 150_000_000, "reason": "spent", "idempotency_key": "spent"})
        enforced = client.get("/v1/entitlements", params={"account_id": account}, headers=service_headers).json()
        assert enforced["features"]["chat"]["allowed"] is False
        assert enforced["features"]["chat"]["reason"] == "insufficient_credits"
        answer = monitor.get("/v1/entitlements", params={"account_id": account}, headers=service_headers).json()
        chat = answer["features"]["chat"]
        assert chat["allowed"] is True and chat["not_enforced"] == "insufficient_credits" and "reason" not in chat
        # What monitor mode still enforces stays locked.
        assert answer["agents"]["builder"]["allowed"] is False
        assert answer["agents"]["builder"]["reason"] == "agent_not_in_plan"

    def test_a_commit_is_recorded_as_usage_and_becomes_debt(self, monitor, service_headers, make_account, ledger):
        account = make_account("free")
        big = gate_body(
            account, model="gpt-4o", mode="commit", estimate={"input_tokens": 10**7, "max_output_tokens": 10**6}
        )
        first = monitor.post("/v1/gate", json=big, headers=service_headers).json()
        again = monitor.post("/v1/gate", json=big, headers=service_headers).json()  # a replay charges once
        assert first["charged"] == again["charged"] and first["usage_id"] == again["usage_id"]
        assert first["plan"] == "free" and first["balance"] == {"key": "credits", "available": "0"}
        credits = next(b for b in ledger.balance(account)["balances"] if b["key"] == "credits")
        assert credits["available"] == 0 and credits["debt"] > 0
        assert ledger.reconcile(account)["ok"]

    def test_access_disputes_rate_limits_and_guests_stay_enforced(self, monitor, service_headers, make_account, sql):
        account = make_account("free")
        locked = monitor.post("/v1/gate", json=gate_body(account, agent="builder"), headers=service_headers)
        assert_problem(locked, 403, "agent_not_in_plan")
        sql("UPDATE creditgate.accounts SET status = 'disputed' WHERE id = %s", account)
        assert_problem(
            monitor.post("/v1/gate", json=gate_body(account), headers=service_headers), 403, "account_disputed"
        )
        session = {"X-Session-Id": f"guest-{uuid.uuid4().hex}"}
        statuses = [monitor.post("/v1/gate", json={"feature": "chat"}, headers=session).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        assert_problem(
            monitor.post("/v1/gate", json={"feature": "screenshot"}, headers=session), 403, "feature_not_in_plan"
        )

    def test_enforced_by_default(self, client, service_headers, make_account):
        account = make_account("free")
        big = gate_body(account, model="gpt-4o", estimate={"input_tokens": 10**7, "max_output_tokens": 10**6})
        assert_problem(client.post("/v1/gate", json=big, headers=service_headers), 402, "insufficient_credits")
