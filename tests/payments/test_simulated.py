"""The offline payment mode: the local checkout page pays by sending a signed
`checkout.session.completed` through the real webhook path."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

from fastapi.testclient import TestClient

from tests.payments.conftest import assert_reconciled, new_key


def local_path(url: str) -> str:
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == "http://testserver"
    return parts.path


def test_offline_flow_from_account_to_credits(client, service_headers, ledger, sql):
    account = f"offline-{uuid.uuid4().hex[:10]}"
    assert client.put(f"/v1/accounts/{account}", json={"plan": "free"}, headers=service_headers).status_code == 201
    before = client.get(f"/v1/balance?account_id={account}", headers=service_headers).json()["balances"][0]

    started = client.post(
        "/v1/checkout",
        json={
            "account_id": account,
            "pack": "growth",
            "success_url": "http://localhost:3000/thanks?s={CHECKOUT_SESSION_ID}",
        },
        headers={**service_headers, "Idempotency-Key": new_key()},
    )
    assert started.status_code == 201, started.text
    body = started.json()
    assert body["session_id"].startswith("cs_sim_")
    page = client.get(local_path(body["checkout_url"]))
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "Pay 49.00 USD" in page.text and "6500 credits" in page.text

    paid = client.post(local_path(body["checkout_url"]), follow_redirects=False)
    assert paid.status_code == 303
    assert paid.headers["location"] == f"http://localhost:3000/thanks?s={body['session_id']}"

    after = client.get(f"/v1/balance?account_id={account}", headers=service_headers).json()["balances"][0]
    assert after["key"] == "credits"
    assert int(after["available"]) == int(before["available"]) + 6_500
    orders = client.get(f"/v1/orders?account_id={account}", headers=service_headers).json()["items"]
    assert [(o["status"], o["item"], o["amount"]) for o in orders] == [("paid", "growth", "49.00")]
    # It went through the webhook's store-and-apply, signed like Stripe would sign it.
    assert sql("SELECT type, handled FROM creditgate.stripe_events WHERE object_id = %s", body["session_id"]) == [
        ("checkout.session.completed", True)
    ]

    # Paying again (a double click, the back button) credits nothing more.
    assert client.post(local_path(body["checkout_url"]), follow_redirects=False).status_code == 303
    assert "paid" in client.get(local_path(body["checkout_url"])).text
    again = client.get(f"/v1/balance?account_id={account}", headers=service_headers).json()["balances"][0]
    assert again["available"] == after["available"]
    assert_reconciled(ledger, account)


def test_a_plan_bought_offline_applies_the_plan(client, service_headers, make_account, ledger, sql):
    account = make_account()
    body = client.post("/v1/checkout", json={"account_id": account, "plan": "pro"}, headers=service_headers).json()
    assert client.post(local_path(body["checkout_url"]), follow_redirects=False).headers["location"] == (
        f"http://testserver/v1/checkout/complete?session_id={body['session_id']}"
    )
    assert client.get(f"/v1/checkout/complete?session_id={body['session_id']}").status_code == 200
    assert sql("SELECT plan_id, billing_source FROM creditgate.accounts WHERE id = %s", account) == [("pro", "local")]
    assert_reconciled(ledger, account)


def test_offline_pages_exist_only_in_simulated_mode(client, stripe_http, service_headers, make_account):
    body = client.post(
        "/v1/checkout", json={"account_id": make_account(), "pack": "starter"}, headers=service_headers
    ).json()
    path = local_path(body["checkout_url"])
    assert stripe_http.get(path).status_code == 404
    assert stripe_http.post(path).status_code == 404
    assert client.get("/v1/simulated-checkout/cs_sim_doesnotexist").status_code == 404
    assert client.get("/v1/simulated-checkout/cs_test_notsimulated").status_code == 404


def test_offline_mode_without_a_webhook_secret_signs_with_a_process_secret(
    settings, ledger, make_account, service_headers
):
    from functions.local import build_app

    bare = settings.model_copy(update={"stripe_webhook_secret": None})
    with TestClient(build_app(settings=bare, ledger=ledger), raise_server_exceptions=False) as client:
        account = make_account()
        body = client.post(
            "/v1/checkout", json={"account_id": account, "pack": "starter"}, headers=service_headers
        ).json()
        assert client.post(local_path(body["checkout_url"]), follow_redirects=False).status_code == 303
        assert ledger.orders(account)["items"][0]["status"] == "paid"
        # ...which nobody outside can use: the public webhook stays closed.
        assert client.post("/v1/webhooks/stripe", content=b"{}").status_code == 503
