"""A plan's request quota running out: what the gate, a check, the entitlements and usage say."""

from __future__ import annotations

import uuid

from tests.api.helpers import assert_problem


def chat(account: str, mode: str = "reserve") -> dict:
    return {
        "account_id": account,
        "feature": "chat",
        "model": "gpt-4o-mini",
        "mode": mode,
        "estimate": {"input_tokens": 100, "max_output_tokens": 100},
        "idempotency_key": uuid.uuid4().hex,
    }


class TestGateWhenTheQuotaIsUsedUp:
    def test_the_denial_offers_plans_and_the_reset_not_packs(self, client, service_headers, two_request_account, sql):
        for _ in range(2):
            assert client.post("/v1/gate", json=chat(two_request_account), headers=service_headers).status_code == 200
        denied = assert_problem(
            client.post("/v1/gate", json=chat(two_request_account), headers=service_headers), 402, "quota_exhausted"
        )
        assert denied["key"] == "requests" and denied["allowed"] is False
        assert denied["packs"] == []
        assert denied["upgrade_to"] and "free" in denied["upgrade_to"]  # 100 requests > 2
        period_end = sql("SELECT period_end FROM creditgate.accounts WHERE id = %s", two_request_account)[0][0]
        assert denied["resets_at"].startswith(period_end.strftime("%Y-%m-%dT%H:%M:%S"))

    def test_a_check_says_what_a_reserve_would(self, client, service_headers, two_request_account):
        body = chat(two_request_account, mode="check")
        assert client.post("/v1/gate", json=body, headers=service_headers).status_code == 200
        for _ in range(2):
            client.post("/v1/gate", json=chat(two_request_account), headers=service_headers)
        assert_problem(client.post("/v1/gate", json=body, headers=service_headers), 402, "quota_exhausted")

    def test_running_out_of_credits_still_offers_packs(self, client, service_headers, make_account, sql):
        account = make_account("test_open")
        body = {**chat(account), "estimate": {"input_tokens": 10**9, "max_output_tokens": 10**9}}
        denied = assert_problem(
            client.post("/v1/gate", json=body, headers=service_headers), 402, "insufficient_credits"
        )
        assert denied["packs"] and denied["key"] == "credits"


class TestEntitlementsWhenTheQuotaIsUsedUp:
    def test_metered_features_say_why_they_cannot_be_used(self, client, service_headers, two_request_account):
        before = client.get(f"/v1/entitlements?account_id={two_request_account}", headers=service_headers).json()
        assert before["features"]["chat"]["allowed"] is True
        for _ in range(2):
            client.post("/v1/gate", json=chat(two_request_account), headers=service_headers)
        after = client.get(f"/v1/entitlements?account_id={two_request_account}", headers=service_headers).json()
        assert after["features"]["chat"]["allowed"] is False
        assert after["features"]["chat"]["reason"] == "quota_exhausted"
        assert after["features"]["screenshot"]["allowed"] is True  # counts no request

    def test_after_the_period_ends_they_answer_as_the_gate_would(
        self, client, service_headers, two_request_account, sql
    ):
        from tests.ledger.test_periods import age

        for _ in range(2):
            client.post("/v1/gate", json=chat(two_request_account, mode="commit"), headers=service_headers)
        age(sql, two_request_account, 1)  # a new period, not rolled yet: the gate would roll it
        after = client.get(f"/v1/entitlements?account_id={two_request_account}", headers=service_headers).json()
        assert after["features"]["chat"]["allowed"] is True
        assert (
            client.post("/v1/gate", json=chat(two_request_account, mode="check"), headers=service_headers).status_code
            == 200
        )


class TestUsagePastTheQuota:
    def test_is_recorded_as_an_overdraft(self, client, service_headers, two_request_account, ledger):
        answers = [
            client.post(
                "/v1/usage",
                json={
                    "account_id": two_request_account,
                    "feature": "chat",
                    "model": "gpt-4o-mini",
                    "usage": {"input_tokens": 10, "output_tokens": 10},
                    "idempotency_key": uuid.uuid4().hex,
                },
                headers=service_headers,
            ).json()
            for _ in range(3)
        ]
        assert [a["overdraft"] for a in answers] == [False, False, True]
        assert ledger.reconcile(two_request_account)["ok"]
