"""A plan's limit per member of an account (sql/117): each user's calls count in a window of
their own, beside the account's."""

from __future__ import annotations

import uuid

import pytest

from functions.core.catalog import DEFAULT_CATALOG, apply_catalog
from functions.core.errors import ProblemError
from tests.api.helpers import assert_problem, bearer, user_token

LIMIT = 2


@pytest.fixture
def org(sql, client, service_headers):
    """An org account on a plan with no account limit and two calls a minute per member."""
    sql(
        """INSERT INTO creditgate.plans (id, name, price_minor, features, agents, allowances,
                                         rate_limit_per_minute, member_rate_limit_per_minute, display_order)
           SELECT 'test_member_limit', 'Member limit', 99999600, array_agg(id), '{}', '{}', 0, %s, 96
           FROM creditgate.features
           ON CONFLICT (id) DO UPDATE
           SET active = true, member_rate_limit_per_minute = excluded.member_rate_limit_per_minute""",
        LIMIT,
    )
    account = f"org-{uuid.uuid4().hex[:10]}"
    response = client.put(
        f"/v1/accounts/{account}", json={"plan": "test_member_limit", "owner": "org"}, headers=service_headers
    )
    assert response.status_code == 201, response.text
    return account


def check(client, headers, account=None, **extra):
    body = {"feature": "chat", **({"account_id": account} if account else {}), **extra}
    return client.post("/v1/gate", json=body, headers=headers)


def until_limited(send) -> list:
    """Calls until refused; at most two windows' worth, should the minute turn meanwhile."""
    answers = []
    for _ in range(2 * LIMIT + 1):
        answers.append(send())
        if answers[-1].status_code == 429:
            break
    return answers


class TestMemberRateLimit:
    def test_a_member_past_the_limit_is_429_and_the_others_are_not(self, client, service_headers, org):
        answers = until_limited(lambda: check(client, service_headers, org, user_id="alice"))
        body = assert_problem(answers[-1], 429, "rate_limited")
        assert (body["scope"], body["limit"]) == ("member", LIMIT) and 1 <= body["retry_after"] <= 60
        assert answers[-1].headers["Retry-After"] == str(body["retry_after"])
        assert check(client, service_headers, org, user_id="bob").status_code == 200

    def test_calls_naming_no_user_count_only_for_the_account(self, client, service_headers, org):
        assert all(check(client, service_headers, org).status_code == 200 for _ in range(2 * LIMIT + 1))

    def test_a_members_token_counts_for_that_member(self, client, service_headers, org):
        user = str(uuid.uuid4())
        client.put(f"/v1/accounts/{org}/members/{user}", json={"role": "member"}, headers=service_headers)
        headers = {**bearer(user_token(user)), "X-Account-Id": org}
        answers = until_limited(lambda: check(client, headers, user_id="someone-else"))
        assert assert_problem(answers[-1], 429, "rate_limited")["scope"] == "member"
        # The token's user was counted, not the user_id the body named.
        assert check(client, service_headers, org, user_id="someone-else").status_code == 200

    def test_a_personal_account_has_only_the_account_limit(self, client, make_account, org):
        user = str(uuid.uuid4())
        make_account("test_member_limit", owner="user", account_id=user)  # the plan has no account limit
        headers = bearer(user_token(user))
        assert all(check(client, headers).status_code == 200 for _ in range(2 * LIMIT + 1))

    def test_the_account_limit_says_its_scope(self, client, service_headers, make_account):
        account = make_account("free")  # 10 a minute for the account
        answers = [check(client, service_headers, account) for _ in range(21)]
        refused = [a for a in answers if a.status_code == 429]
        assert refused and assert_problem(refused[0], 429, "rate_limited")["scope"] == "account"


class TestCatalogSetting:
    def test_apply_sets_it_per_plan_and_the_catalog_shows_it(self, client, ledger, sql, tmp_path):
        text = DEFAULT_CATALOG.read_text()
        marker = 'id = "business"\n'
        assert marker in text
        (tmp_path / "catalog.toml").write_text(text.replace(marker, marker + "rate_limit_per_member = 7\n", 1))
        test_plans = [r[0] for r in sql("SELECT id FROM creditgate.plans WHERE id LIKE 'test\\_%%' AND active")]
        try:
            apply_catalog(ledger, tmp_path / "catalog.toml")
            limits = dict(
                sql("SELECT id, member_rate_limit_per_minute FROM creditgate.plans WHERE id IN ('business', 'pro')")
            )
            assert limits == {"business": 7, "pro": 0}
            plans = {p["id"]: p["rate_limit_per_member"] for p in client.get("/v1/catalog").json()["plans"]}
            assert (plans["business"], plans["pro"]) == (7, 0)
        finally:
            apply_catalog(ledger)
            sql("UPDATE creditgate.plans SET active = true WHERE id = ANY(%s)", test_plans)
        assert sql("SELECT member_rate_limit_per_minute FROM creditgate.plans WHERE id = 'business'") == [(0,)]

    @pytest.mark.parametrize("limits", [{"pro": -1}, {"pro": "5"}, {"pro": 1.5}, {"pro": 10**10}, [5], None])
    def test_the_settings_rpc_refuses_what_it_cannot_keep(self, ledger, sql, limits):
        before = sql("SELECT id, member_rate_limit_per_minute FROM creditgate.plans ORDER BY id")
        with pytest.raises(ProblemError) as refused:
            ledger.rpc("creditgate_apply_settings", {"member_rate_limits": limits})
        assert (refused.value.status, refused.value.code) == (422, "invalid_request")
        assert sql("SELECT id, member_rate_limit_per_minute FROM creditgate.plans ORDER BY id") == before
