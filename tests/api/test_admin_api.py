"""PUT /v1/accounts/{id}, members, plan; POST grants; GET /v1/admin/metrics."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from tests.api.helpers import assert_problem, bearer, user_token
from tests.conftest import unique_ip


def balance(client, headers, account, key="credits"):
    lines = client.get(f"/v1/balance?account_id={account}", headers=headers).json()["balances"]
    return next(line for line in lines if line["key"] == key)


class TestPutAccount:
    def test_created_then_existing(self, client, service_headers):
        account = f"org-{uuid.uuid4().hex[:8]}"
        first = client.put(f"/v1/accounts/{account}", json={"plan": "starter", "owner": "org"}, headers=service_headers)
        again = client.put(f"/v1/accounts/{account}", json={"plan": "starter", "owner": "org"}, headers=service_headers)
        assert (first.status_code, again.status_code) == (201, 200)
        assert first.json()["plan"]["id"] == "starter" and first.json()["owner"] == "org"
        credits = next(b for b in first.json()["balances"] if b["key"] == "credits")
        assert credits["available"] == "550"  # 500 allowance + 50 welcome

    def test_only_the_service_key(self, client):
        assert_problem(client.put("/v1/accounts/x", json={}, headers=bearer(user_token())), 403, "forbidden")


class TestGetAccount:
    def test_shows_the_account_and_its_members(self, client, service_headers):
        org = f"org-{uuid.uuid4().hex[:10]}"
        client.put(
            f"/v1/accounts/{org}",
            json={"plan": "pro", "owner": "org", "email": "Ops@Example.com"},
            headers=service_headers,
        )
        client.put(f"/v1/accounts/{org}/members/u-1", json={"role": "owner"}, headers=service_headers)
        body = client.get(f"/v1/accounts/{org}", headers=service_headers).json()
        assert (body["account_id"], body["plan"]["id"], body["email"]) == (org, "pro", "Ops@Example.com")
        assert body["members"] == [{"user_id": "u-1", "role": "owner"}]
        assert body["balances"][0]["key"] == "credits" and isinstance(body["balances"][0]["available"], str)

    def test_shows_what_the_balance_read_shows(self, client, service_headers, make_account, ledger, sql):
        from tests.conftest import grant

        account = make_account("free")
        promo = grant(ledger, account, 7, source="promo", expires_at="2999-01-01T00:00:00Z")
        sql("UPDATE creditgate.grants SET expires_at = now() - interval '1 second' WHERE id = %s", promo["grant_id"])
        shown = client.get(f"/v1/accounts/{account}", headers=service_headers).json()["balances"]
        read = client.get(f"/v1/balance?account_id={account}", headers=service_headers).json()["balances"]
        credits = [next(b["available"] for b in lines if b["key"] == "credits") for lines in (shown, read)]
        assert credits == ["150", "150"]  # the expired promo is gone from both

    def test_unknown_is_404_and_users_may_not(self, client, service_headers, make_account):
        assert_problem(client.get("/v1/accounts/ghost-1", headers=service_headers), 404, "account_not_found")
        assert_problem(client.get(f"/v1/accounts/{make_account()}", headers=bearer(user_token())), 403, "forbidden")


class TestListAccounts:
    def test_finds_by_email_in_any_case(self, client, service_headers):
        email = f"Support.{uuid.uuid4().hex[:8]}@Example.com"
        account = f"acct-{uuid.uuid4().hex[:10]}"
        client.put(f"/v1/accounts/{account}", json={"plan": "free", "email": email}, headers=service_headers)
        found = client.get("/v1/accounts", params={"email": email.upper()}, headers=service_headers).json()
        assert [item["account_id"] for item in found["items"]] == [account]
        assert found["items"][0]["plan"] == "free" and found["next_cursor"] is None

    def test_pages_by_plan_in_id_order(self, client, service_headers, sql):
        plan = "test_list_" + uuid.uuid4().hex[:6]
        sql(
            """INSERT INTO creditgate.plans (id, name, price_minor, features, agents, allowances,
                                             rate_limit_per_minute, display_order)
               VALUES (%s, 'List', 0, '{}', '{}', '{}', 0, 97)""",
            plan,
        )
        accounts = sorted(f"list-{uuid.uuid4().hex[:10]}" for _ in range(5))
        for account in accounts:
            client.put(f"/v1/accounts/{account}", json={"plan": plan}, headers=service_headers)
        seen, cursor = [], ""
        while True:
            page = client.get(
                "/v1/accounts", params={"plan": plan, "limit": 2, "cursor": cursor}, headers=service_headers
            ).json()
            seen += [item["account_id"] for item in page["items"]]
            if not page["next_cursor"]:
                break
            cursor = page["next_cursor"]
        assert seen == accounts

    def test_bad_filters_are_422_and_users_may_not(self, client, service_headers):
        for query in ("status=gone", "limit=0", "limit=201", "plan=Not%20A%20Slug", "cursor=a%20b"):
            assert_problem(client.get(f"/v1/accounts?{query}", headers=service_headers), 422, "invalid_request")
        assert_problem(client.get("/v1/accounts", headers=bearer(user_token())), 403, "forbidden")


class TestPutPlan:
    def test_the_new_allowance_replaces_the_old_one(self, client, service_headers, make_account):
        account = make_account("free")
        client.post(
            "/v1/usage",
            headers=service_headers,
            json={"account_id": account, "feature": "ai_message", "quantity": 100, "idempotency_key": "u"},
        )  # 20 credits
        response = client.put(f"/v1/accounts/{account}/plan", json={"plan": "pro"}, headers=service_headers)
        assert response.status_code == 200 and response.json()["plan"]["id"] == "pro"
        line = balance(client, service_headers, account)
        assert line["available"] == "1550" and line["allowance"] == "1500"
        assert balance(client, service_headers, account, "goal_generation")["available"] == "20"
        assert_problem(
            client.put(f"/v1/accounts/{account}/plan", json={"plan": "gold"}, headers=service_headers),
            422,
            "unknown_plan",
        )


class TestGuestPlan:
    def test_no_account_can_be_put_on_the_guests_plan(self, client, service_headers, make_account):
        account = make_account("free")
        assert_problem(
            client.put(f"/v1/accounts/{account}/plan", json={"plan": "anonymous"}, headers=service_headers),
            422,
            "invalid_request",
        )
        assert_problem(
            client.put(f"/v1/accounts/new-{uuid.uuid4().hex[:8]}", json={"plan": "anonymous"}, headers=service_headers),
            422,
            "invalid_request",
        )
        assert balance(client, service_headers, account)["allowance"] == "100"


class TestPostGrant:
    def test_grant_is_idempotent_by_key(self, client, service_headers, make_account):
        account = make_account("free")
        headers = {**service_headers, "Idempotency-Key": "promo-7"}
        body = {"amount": "12.5", "source": "promo", "reason": "launch week"}
        first = client.post(f"/v1/accounts/{account}/grants", json=body, headers=headers)
        again = client.post(f"/v1/accounts/{account}/grants", json=body, headers=headers)
        assert (first.status_code, again.status_code) == (201, 200)
        assert first.json()["amount"] == "12.5" and again.json()["grant_id"] == first.json()["grant_id"]
        assert balance(client, service_headers, account)["available"] == "162.5"
        conflict = client.post(f"/v1/accounts/{account}/grants", json={**body, "amount": "13"}, headers=headers)
        assert_problem(conflict, 409, "idempotency_conflict")

    def test_expiry_in_the_past_is_refused(self, client, service_headers, make_account):
        account = make_account("free")
        response = client.post(
            f"/v1/accounts/{account}/grants",
            headers={**service_headers, "Idempotency-Key": "p"},
            json={"amount": "1", "source": "promo", "reason": "x", "expires_at": "2001-01-01T00:00:00Z"},
        )
        assert_problem(response, 422, "invalid_request")

    def test_a_key_the_catalog_does_not_use_is_refused(self, client, service_headers, make_account, sql):
        account = make_account("free")
        grant = {"amount": "5", "source": "promo", "reason": "x"}
        refused = client.post(
            f"/v1/accounts/{account}/grants",
            headers={**service_headers, "Idempotency-Key": "k1"},
            json={**grant, "key": "unknownkey"},
        )
        assert_problem(refused, 422, "invalid_request")
        assert sql(
            "SELECT count(*) FROM creditgate.balances WHERE account_id = %s AND key = 'unknownkey'", account
        ) == [(0,)]
        tokens = client.post(
            f"/v1/accounts/{account}/grants",
            headers={**service_headers, "Idempotency-Key": "k2"},
            json={**grant, "key": "tokens"},
        )
        assert tokens.status_code == 201, tokens.text


class TestMembers:
    def test_put_then_delete(self, client, service_headers, make_account, ledger):
        org = make_account("pro", owner="org")
        user = f"user-{uuid.uuid4().hex[:8]}"
        put = client.put(f"/v1/accounts/{org}/members/{user}", json={"role": "owner"}, headers=service_headers)
        assert put.status_code == 200 and put.json() == {"account_id": org, "user_id": user, "role": "owner"}
        assert ledger.is_member(org, user)
        gone = client.delete(f"/v1/accounts/{org}/members/{user}", headers=service_headers)
        assert gone.json() == {"account_id": org, "user_id": user, "removed": True}
        assert not ledger.is_member(org, user)
        again = client.delete(f"/v1/accounts/{org}/members/{user}", headers=service_headers)
        assert again.status_code == 200 and again.json()["removed"] is False

    def test_only_the_service_key(self, client, make_account):
        org = make_account("pro", owner="org")
        assert_problem(
            client.delete(f"/v1/accounts/{org}/members/someone", headers=bearer(user_token())), 403, "forbidden"
        )


class TestDebits:
    def test_takes_credits_away_once_per_key_and_the_rest_becomes_debt(
        self, client, service_headers, make_account, ledger
    ):
        account = make_account("free")  # 150 credits
        headers = {**service_headers, "Idempotency-Key": "fix-1"}
        body = {"amount": "40", "reason": "double grant by mistake"}
        first = client.post(f"/v1/accounts/{account}/debits", json=body, headers=headers)
        again = client.post(f"/v1/accounts/{account}/debits", json=body, headers=headers)
        assert (first.status_code, again.status_code) == (201, 200), first.text
        assert first.json()["amount"] == "40" and first.json()["debt_added"] == "0"
        assert balance(client, service_headers, account)["available"] == "110"
        more = client.post(
            f"/v1/accounts/{account}/debits",
            json={"amount": "200", "reason": "chargeback"},
            headers={**service_headers, "Idempotency-Key": "fix-2"},
        ).json()
        assert more["debt_added"] == "90" and more["balance"] == {"key": "credits", "available": "0", "debt": "90"}
        lines = client.get(f"/v1/transactions?account_id={account}", headers=service_headers).json()["items"]
        assert [(i["kind"], i["amount"]) for i in lines[:2]] == [("adjustment", "-200"), ("adjustment", "-40")]
        assert ledger.reconcile(account)["ok"]

    def test_bad_amounts_and_keys_change_nothing(self, client, service_headers, make_account):
        account = make_account("free")
        for n, body in enumerate([{"amount": "0", "reason": "x"}, {"amount": "1", "key": "nope", "reason": "x"}]):
            response = client.post(
                f"/v1/accounts/{account}/debits", json=body, headers={**service_headers, "Idempotency-Key": f"b{n}"}
            )
            assert_problem(response, 422, "invalid_request")
        assert balance(client, service_headers, account)["available"] == "150"


class TestAllowances:
    def test_a_raise_tops_up_now_and_every_period_grants_it(self, client, service_headers, make_account, sql, ledger):
        from tests.ledger.test_periods import age

        account = make_account("free")  # 100 credits a period, 100 requests
        put = client.put(
            f"/v1/accounts/{account}/allowances",
            json={"allowances": {"credits": "300", "requests": 1000}, "reason": "enterprise pilot"},
            headers=service_headers,
        )
        assert put.status_code == 200, put.text
        assert put.json()["allowances"]["credits"] == "300" and put.json()["allowances"]["tokens"] == "10000"
        line = balance(client, service_headers, account)
        assert (line["allowance"], line["available"]) == ("300", "350")  # 200 more now, welcome 50
        assert balance(client, service_headers, account, "requests")["allowance"] == "1000"
        again = client.put(
            f"/v1/accounts/{account}/allowances",
            json={"allowances": {"credits": "300", "requests": 1000}, "reason": "same again"},
            headers=service_headers,
        )
        assert again.status_code == 200 and balance(client, service_headers, account)["available"] == "350"
        age(sql, account, 1)
        assert balance(client, service_headers, account)["available"] == "350"  # the new period: 300 again
        assert ledger.reconcile(account)["ok"]

    def test_a_cut_waits_for_the_next_period_and_null_clears(self, client, service_headers, make_account, sql):
        from tests.ledger.test_periods import age

        account = make_account("free")
        cut = {"allowances": {"credits": "40"}, "reason": "abuse"}
        assert client.put(f"/v1/accounts/{account}/allowances", json=cut, headers=service_headers).status_code == 200
        assert balance(client, service_headers, account)["available"] == "150"  # nothing taken back
        age(sql, account, 1)
        assert balance(client, service_headers, account)["available"] == "90"
        clear = {"allowances": None, "reason": "back to the plan"}
        answer = client.put(f"/v1/accounts/{account}/allowances", json=clear, headers=service_headers).json()
        assert answer["allowance_overrides"] is None and answer["allowances"]["credits"] == "100"
        assert balance(client, service_headers, account)["available"] == "150"  # the raise back to 100, now

    def test_a_key_only_the_overrides_grant_is_granted_once_across_a_plan_round_trip(
        self, client, service_headers, make_account, ledger
    ):
        account = make_account("free")  # no goal_generation allowance on free
        put = {"allowances": {"goal_generation": "20"}, "reason": "pilot"}
        client.put(f"/v1/accounts/{account}/allowances", json=put, headers=service_headers)
        assert balance(client, service_headers, account, "goal_generation")["available"] == "20"
        client.put(f"/v1/accounts/{account}/plan", json={"plan": "pro"}, headers=service_headers)
        client.put(f"/v1/accounts/{account}/plan", json={"plan": "free"}, headers=service_headers)
        assert balance(client, service_headers, account, "goal_generation")["available"] == "20"
        assert ledger.reconcile(account)["ok"]

    def test_a_plan_change_clears_them_and_history_keeps_every_change(self, client, service_headers, make_account):
        account = make_account("business")
        deal = {"allowances": {"credits": "50000"}, "reason": "enterprise deal"}
        client.put(f"/v1/accounts/{account}/allowances", json=deal, headers=service_headers)
        client.put(f"/v1/accounts/{account}/plan", json={"plan": "free"}, headers=service_headers)
        line = balance(client, service_headers, account)
        assert line["allowance"] == "100"  # the deal does not follow a downgrade
        history = client.get(f"/v1/accounts/{account}/history", headers=service_headers).json()["items"]
        fields = [(h["field"], h["to"], h["reason"]) for h in history]
        assert ("allowances", '{"credits": "50000"}', "enterprise deal") in fields
        assert ("allowances", None, None) in fields and ("plan", "free", None) in fields

    def test_unknown_keys_and_bad_amounts_change_nothing(self, client, service_headers, make_account):
        account = make_account("free")
        for allowances in ({"nope": "5"}, {"credits": "-1"}, {"credits": "1e3"}):
            response = client.put(
                f"/v1/accounts/{account}/allowances",
                json={"allowances": allowances, "reason": "x"},
                headers=service_headers,
            )
            assert_problem(response, 422, "invalid_request")
        assert balance(client, service_headers, account)["allowance"] == "100"


class TestHistoryAndHolds:
    def test_plan_and_status_changes_are_recorded_and_a_hold_can_be_lifted(
        self, client, service_headers, make_account, sql
    ):
        account = make_account("free")
        client.put(f"/v1/accounts/{account}/plan", json={"plan": "starter"}, headers=service_headers)
        sql("UPDATE creditgate.accounts SET status = 'disputed' WHERE id = %s", account)  # as a lost dispute leaves it
        gate = {"account_id": account, "feature": "ai_message", "mode": "check"}
        assert_problem(client.post("/v1/gate", json=gate, headers=service_headers), 403, "account_disputed")
        lifted = client.post(
            f"/v1/accounts/{account}/lift-hold", json={"reason": "customer repaid"}, headers=service_headers
        )
        assert lifted.status_code == 200 and lifted.json()["status"] == "active"
        assert client.post("/v1/gate", json=gate, headers=service_headers).status_code == 200
        history = client.get(f"/v1/accounts/{account}/history", headers=service_headers).json()["items"]
        assert [(h["field"], h["from"], h["to"], h["reason"]) for h in history] == [
            ("status", "disputed", "active", "customer repaid"),
            ("status", "active", "disputed", None),
            ("plan", "free", "starter", None),
            ("plan", None, "free", None),
        ]

    def test_unknown_accounts_are_404(self, client, service_headers):
        assert_problem(
            client.get("/v1/accounts/nobody-here/history", headers=service_headers), 404, "account_not_found"
        )


class TestMetrics:
    def test_daily_and_top_lists(self, client, service_headers, make_account):
        account = make_account("pro")
        client.post(
            "/v1/usage",
            headers=service_headers,
            json={
                "account_id": account,
                "feature": "chat",
                "agent": "builder",
                "model": "gpt-4o-mini",
                "usage": {"input_tokens": 10, "output_tokens": 10},
                "idempotency_key": "m",
            },
        )
        body = client.get("/v1/admin/metrics?days=7", headers=service_headers).json()
        today = datetime.now(UTC).strftime("%Y-%m-%d")
        assert next(d for d in body["daily"] if d["day"] == today)["requests"] >= 1
        assert any(row["agent"] == "builder" for row in body["top_agents"])
        assert any(row["model"] == "gpt-4o-mini" for row in body["top_models"])
        assert {"accounts_over_80_percent", "guest_abuse", "top_features"} <= body.keys()

    def test_the_funnel_counts_guests_new_accounts_and_plan_changes(
        self, client, service_headers, make_account, settings, ledger
    ):
        from fastapi.testclient import TestClient

        from functions.local import build_app

        def today() -> dict:
            funnel = client.get("/v1/admin/metrics?days=1", headers=service_headers).json()["funnel"]
            day = datetime.now(UTC).strftime("%Y-%m-%d")
            return next((f for f in funnel if f["day"] == day), {})

        before = today()
        behind_a_proxy = build_app(settings=settings.model_copy(update={"trusted_proxy_hops": 1}), ledger=ledger)
        with TestClient(behind_a_proxy) as proxied:  # guests are counted by their address
            guest = {"X-Session-Id": f"guest-{uuid.uuid4().hex}", "X-Forwarded-For": unique_ip()}
            assert proxied.post("/v1/gate", json={"feature": "chat"}, headers=guest).status_code == 200
        account = make_account("free")
        client.put(f"/v1/accounts/{account}/plan", json={"plan": "pro"}, headers=service_headers)
        client.put(f"/v1/accounts/{account}/plan", json={"plan": "starter"}, headers=service_headers)
        after = today()
        for field, grew in (("guest_exchanges", 1), ("new_accounts", 1), ("upgrades", 1), ("downgrades", 1)):
            assert after[field] - before.get(field, 0) == grew, field
