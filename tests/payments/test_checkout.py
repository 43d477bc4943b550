"""POST /v1/checkout in Stripe mode: the real stripe-python client against FakeStripe."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.payments.conftest import checkout, new_key, pack_price_id, plan_price_id, user_token


def order_rows(sql, account_id):
    return sql(
        "SELECT kind, item_id, status, amount_minor, currency, credits FROM creditgate.orders "
        "WHERE account_id = %s ORDER BY created_at",
        account_id,
    )


def test_pack_checkout_creates_a_payment_session_with_the_account_and_order(
    stripe_http, fake, make_account, service_headers, sql
):
    account = make_account()
    response = checkout(stripe_http, service_headers, account, key=new_key(), pack="growth")
    assert response.status_code == 201, response.text
    body = response.json()
    session = fake.get(body["session_id"])
    assert body["checkout_url"] == session["url"]
    assert session["mode"] == "payment"
    assert session["client_reference_id"] == account
    assert session["metadata"] == {"account_id": account, "order_id": body["order_id"], "pack": "growth"}
    assert fake.line_items(session["id"])[0]["price"]["id"] == pack_price_id("growth")
    assert session["success_url"] == "http://testserver/v1/checkout/complete?session_id={CHECKOUT_SESSION_ID}"
    assert session["cancel_url"] == "http://testserver/v1/checkout/canceled"
    # The customer is made once and remembered on the account.
    customer = sql("SELECT stripe_customer_id FROM creditgate.accounts WHERE id = %s", account)[0][0]
    assert session["customer"] == customer and customer.startswith("cus_")
    assert fake.get(customer)["metadata"] == {"account_id": account}
    # Stripe amounts are integers of the minor unit; credits integers of micro-credits.
    assert order_rows(sql, account) == [("pack", "growth", "pending", 4900, "usd", 6_500_000_000)]
    assert isinstance(session["amount_total"], int) and session["amount_total"] == 4900

    # The PaymentIntent carries the same metadata (what a refund's charge inherits).
    events = fake.complete_checkout(session["id"])
    pi = fake.get(events[0]["data"]["object"]["payment_intent"])
    assert pi["metadata"] == session["metadata"]

    second = checkout(stripe_http, service_headers, account, key=new_key(), pack="starter").json()
    assert fake.get(second["session_id"])["customer"] == customer
    assert len(fake.objects("customer")) == 1


def test_plan_checkout_creates_a_subscription_session(stripe_http, fake, make_account, service_headers):
    account = make_account()
    body = checkout(stripe_http, service_headers, account, key=new_key(), plan="pro").json()
    session = fake.get(body["session_id"])
    assert session["mode"] == "subscription"
    assert session["metadata"] == {"account_id": account, "order_id": body["order_id"], "plan": "pro"}
    assert fake.line_items(session["id"])[0]["price"]["id"] == plan_price_id("pro")
    events = fake.complete_checkout(session["id"])
    subscription = fake.get(events[0]["data"]["object"]["subscription"])
    assert subscription["metadata"] == session["metadata"]


def test_same_idempotency_key_returns_the_same_order_and_session(stripe_http, fake, make_account, service_headers, sql):
    account, key = make_account(), new_key()
    first = checkout(stripe_http, service_headers, account, key=key, pack="growth")
    again = checkout(stripe_http, service_headers, account, key=key, pack="growth")
    assert first.status_code == 201 and again.status_code == 200
    assert {k: v for k, v in again.json().items() if k != "replayed"} == {
        k: v for k, v in first.json().items() if k != "replayed"
    }
    assert again.json()["replayed"] is True
    assert len(fake.objects("checkout.session")) == 1
    assert len(order_rows(sql, account)) == 1

    conflict = checkout(stripe_http, service_headers, account, key=key, pack="pro")
    assert conflict.status_code == 409 and conflict.json()["code"] == "idempotency_conflict"
    # The key is the caller's, scoped to the account: another account may use it too.
    other = checkout(stripe_http, service_headers, make_account(), key=key, pack="growth")
    assert other.status_code == 201 and other.json()["order_id"] != first.json()["order_id"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"pack": "nope"}, 422, "unknown_pack"),
        ({"plan": "nope"}, 422, "unknown_plan"),
        ({"plan": "anonymous"}, 422, "unknown_plan"),
        ({"plan": "free"}, 422, "plan_not_purchasable"),
        ({"pack": "growth", "plan": "pro"}, 422, "invalid_request"),
        ({}, 422, "invalid_request"),
        ({"pack": "growth", "success_url": "https://evil.example/x"}, 422, "invalid_request"),
        ({"pack": "growth", "cancel_url": "javascript:alert(1)//"}, 422, "invalid_request"),
        ({"pack": "growth", "success_url": "http://localhost:3000@evil.example/"}, 422, "invalid_request"),
        ({"pack": "growth", "success_url": "http://localhost:3000.evil.example/"}, 422, "invalid_request"),
        ({"pack": "growth", "success_url": "//evil.example/path"}, 422, "invalid_request"),
    ],
)
def test_bad_checkouts_are_refused_and_change_nothing(
    stripe_http, fake, make_account, service_headers, sql, body, status, code
):
    account = make_account()
    response = checkout(stripe_http, service_headers, account, key=new_key(), **body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code
    assert order_rows(sql, account) == []
    assert fake.objects("checkout.session") == []


def test_allowed_return_urls_pass_through_to_stripe(stripe_http, fake, make_account, service_headers):
    account = make_account()
    body = checkout(
        stripe_http,
        service_headers,
        account,
        key=new_key(),
        pack="growth",
        success_url="http://localhost:3000/thanks?s={CHECKOUT_SESSION_ID}",
        cancel_url="http://LOCALHOST:3000/pricing",
    ).json()
    session = fake.get(body["session_id"])
    assert session["success_url"] == "http://localhost:3000/thanks?s={CHECKOUT_SESSION_ID}"
    assert session["cancel_url"] == "http://LOCALHOST:3000/pricing"


def test_a_pack_without_a_stripe_price_is_a_clear_conflict(stripe_http, fake, make_account, service_headers, sql):
    sql("UPDATE creditgate.packs SET stripe_price_id = NULL WHERE id = 'starter'")
    account = make_account()
    response = checkout(stripe_http, service_headers, account, key=new_key(), pack="starter")
    assert response.status_code == 409
    assert response.json()["code"] == "price_not_configured"
    assert order_rows(sql, account) == [] and fake.objects("checkout.session") == []


def test_stripe_errors_are_502_problems_and_a_retry_with_the_key_succeeds(
    stripe_http, fake, make_account, service_headers, sql
):
    account, key = make_account(), new_key()
    # More failures than the client's retries: the caller sees the failure.
    fake.inject_error(500, path="/v1/checkout/sessions", times=3)
    failed = checkout(stripe_http, service_headers, account, key=key, pack="growth")
    assert failed.status_code == 502, failed.text
    assert failed.headers["content-type"] == "application/problem+json"
    assert failed.json()["code"] == "payment_provider_error"
    assert order_rows(sql, account)[0][2] == "pending"

    retried = checkout(stripe_http, service_headers, account, key=key, pack="growth")
    assert retried.status_code == 200, retried.text
    assert retried.json()["session_id"].startswith("cs_test_")
    creates = [r for r in fake.requests if r["path"] == "/v1/checkout/sessions" and r["method"] == "POST"]
    assert {r["idempotency_key"] for r in creates} == {f"creditgate-checkout-{retried.json()['order_id']}"}
    assert len(fake.objects("checkout.session")) == 1

    # A card-style refusal without a caller key: the order is marked failed, not left pending.
    fake.inject_error(400, path="/v1/checkout/sessions", message="No such price")
    refused = checkout(stripe_http, service_headers, account, pack="starter")
    assert refused.status_code == 502
    assert sorted(r[2] for r in order_rows(sql, account)) == ["failed", "pending"]


def test_a_bad_stripe_key_is_a_502_not_a_500(settings, ledger, fake, catalog_prices, make_account, service_headers):
    from functions.local import build_app

    wrong = settings.model_copy(
        update={"stripe_secret_key": "sk_test_wrong_key_000000", "stripe_api_base": fake.url, "payments": "stripe"}
    )
    with TestClient(build_app(settings=wrong, ledger=ledger), raise_server_exceptions=False) as client:
        response = checkout(client, service_headers, make_account(), key=new_key(), pack="growth")
    assert response.status_code == 502
    assert "sk_test_wrong" not in response.text


@pytest.mark.parametrize(
    ("update", "status", "code"),
    [
        ({"payments": None, "stripe_secret_key": None, "environment": "production"}, 503, "stripe_not_configured"),
        ({"payments": "stripe", "stripe_secret_key": None}, 503, "stripe_not_configured"),
    ],
)
def test_without_stripe_keys_checkout_is_unavailable(
    settings, ledger, make_account, service_headers, update, status, code
):
    from functions.local import build_app

    with TestClient(
        build_app(settings=settings.model_copy(update=update), ledger=ledger), raise_server_exceptions=False
    ) as client:
        response = checkout(client, service_headers, make_account(), pack="growth")
    assert response.status_code == status
    assert response.json()["code"] == code


def test_development_without_keys_defaults_to_simulated(settings, ledger, make_account, service_headers):
    from functions.local import build_app

    dev = settings.model_copy(update={"payments": None, "stripe_secret_key": None, "environment": "development"})
    with TestClient(build_app(settings=dev, ledger=ledger), raise_server_exceptions=False) as client:
        response = checkout(client, service_headers, make_account(), pack="growth")
    assert response.status_code == 201
    assert response.json()["checkout_url"].startswith("http://testserver/v1/simulated-checkout/cs_sim_")


def test_users_check_out_for_themselves_or_orgs_they_belong_to(stripe_http, fake, make_account, ledger, sql):
    user = make_account()
    own = checkout(stripe_http, {"Authorization": f"Bearer {user_token(user)}"}, key=new_key(), pack="growth")
    assert own.status_code == 201
    assert fake.get(own.json()["session_id"])["client_reference_id"] == user

    org = make_account(owner="org")
    headers = {"Authorization": f"Bearer {user_token(user)}", "X-Account-Id": org}
    assert checkout(stripe_http, headers, key=new_key(), pack="growth").status_code == 403
    ledger.set_member({"account_id": org, "user_id": user, "role": "member"})
    for_org = checkout(stripe_http, headers, key=new_key(), pack="growth")
    assert for_org.status_code == 201
    assert fake.get(for_org.json()["session_id"])["metadata"]["account_id"] == org

    # Someone else's account by body is refused like by header.
    stranger = checkout(stripe_http, {"Authorization": f"Bearer {user_token(user)}"}, make_account(), pack="growth")
    assert stranger.status_code == 403
    guest = stripe_http.post("/v1/checkout", json={"pack": "growth"}, headers={"X-Session-Id": "guest-session-1"})
    assert guest.status_code == 403
    assert stripe_http.post("/v1/checkout", json={"pack": "growth"}).status_code == 401


def test_service_callers_must_name_the_account(stripe_http, service_headers):
    response = checkout(stripe_http, service_headers, pack="growth")
    assert response.status_code == 422
    missing = checkout(stripe_http, service_headers, "no-such-account-here", pack="growth")
    assert missing.status_code == 404 and missing.json()["code"] == "account_not_found"


def test_a_subscribed_account_cannot_open_a_second_subscription(stripe_http, fake, make_account, service_headers, sql):
    account = make_account()
    sql(
        "UPDATE creditgate.accounts SET billing_source = 'stripe', stripe_subscription_id = 'sub_x' WHERE id = %s",
        account,
    )
    response = checkout(stripe_http, service_headers, account, key=new_key(), plan="business")
    assert response.status_code == 409 and response.json()["code"] == "already_subscribed"
    # Packs are still for sale.
    assert checkout(stripe_http, service_headers, account, key=new_key(), pack="growth").status_code == 201
