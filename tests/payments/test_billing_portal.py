"""POST /v1/billing-portal: Stripe's customer portal for the account's Stripe customer,
where a subscriber changes or cancels the plan (the webhook applies what they do)."""

from __future__ import annotations

import pytest

from tests.api.helpers import assert_problem, bearer
from tests.payments.conftest import checkout, deliver_all, new_key, user_token


def portal_sessions(fake) -> list[dict]:
    return fake._all("billing_portal.session")


@pytest.fixture
def subscriber(stripe_http, fake, make_account, service_headers):
    account = make_account()
    session_id = checkout(stripe_http, service_headers, account, key=new_key(), plan="pro").json()["session_id"]
    deliver_all(stripe_http, fake, fake.complete_checkout(session_id))
    return account


class TestBillingPortal:
    def test_a_subscriber_gets_a_portal_session_for_their_customer(self, stripe_http, fake, subscriber, sql):
        response = stripe_http.post(
            "/v1/billing-portal",
            json={"return_url": "http://localhost:3000/settings"},
            headers=bearer(user_token(subscriber)),
        )
        assert response.status_code == 201, response.text
        session = portal_sessions(fake)[0]
        customer = sql("SELECT stripe_customer_id FROM creditgate.accounts WHERE id = %s", subscriber)[0][0]
        assert (session["customer"], session["return_url"]) == (customer, "http://localhost:3000/settings")
        assert response.json() == {"account_id": subscriber, "url": session["url"]}

    def test_the_service_key_names_the_account_and_the_return_defaults_to_our_url(
        self, stripe_http, fake, subscriber, service_headers
    ):
        response = stripe_http.post("/v1/billing-portal", json={"account_id": subscriber}, headers=service_headers)
        assert response.status_code == 201, response.text
        assert portal_sessions(fake)[0]["return_url"] == "http://testserver"

    def test_an_account_that_never_paid_has_nothing_to_manage(self, stripe_http, fake, make_account, service_headers):
        before = len(portal_sessions(fake))
        account = make_account()
        response = stripe_http.post("/v1/billing-portal", json={"account_id": account}, headers=service_headers)
        assert_problem(response, 409, "no_stripe_customer")
        assert len(portal_sessions(fake)) == before

    def test_a_return_url_off_the_allowed_origins_is_refused(self, stripe_http, fake, subscriber):
        before = len(portal_sessions(fake))
        response = stripe_http.post(
            "/v1/billing-portal", json={"return_url": "https://evil.example/x"}, headers=bearer(user_token(subscriber))
        )
        assert_problem(response, 422, "invalid_request")
        assert len(portal_sessions(fake)) == before

    def test_a_user_cannot_open_someone_elses_portal(self, stripe_http, subscriber, make_account):
        stranger = make_account()
        response = stripe_http.post(
            "/v1/billing-portal", json={"account_id": subscriber}, headers=bearer(user_token(stranger))
        )
        assert_problem(response, 403, "forbidden")

    def test_of_an_org_only_an_owner_opens_it(self, stripe_http, fake, make_account, service_headers, ledger):
        org = make_account("free", owner="org")
        session_id = checkout(stripe_http, service_headers, org, key=new_key(), plan="pro").json()["session_id"]
        deliver_all(stripe_http, fake, fake.complete_checkout(session_id))
        owner, member = f"owner-{new_key()[:8]}", f"member-{new_key()[:8]}"
        ledger.set_member({"account_id": org, "user_id": owner, "role": "owner"})
        ledger.set_member({"account_id": org, "user_id": member, "role": "member"})
        ask = {"account_id": org}
        assert_problem(
            stripe_http.post("/v1/billing-portal", json=ask, headers=bearer(user_token(member))), 403, "forbidden"
        )
        opened = stripe_http.post("/v1/billing-portal", json=ask, headers=bearer(user_token(owner)))
        assert opened.status_code == 201, opened.text

    def test_without_credentials_it_is_401(self, stripe_http):
        assert_problem(stripe_http.post("/v1/billing-portal", json={}), 401, "unauthenticated")


def test_simulated_payments_have_no_portal(client, service_headers, make_account):
    response = client.post("/v1/billing-portal", json={"account_id": make_account()}, headers=service_headers)
    assert_problem(response, 503, "stripe_not_configured")
