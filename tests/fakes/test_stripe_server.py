"""FakeStripe speaks the protocol of the real stripe-python client.

Every API test goes through `stripe.StripeClient` (or raw HTTP where the SDK would hide
what is under test, such as response headers), so the fake is held to what the SDK
actually sends and parses.
"""

from __future__ import annotations

import json
import time
from datetime import UTC

import httpx
import pytest
import stripe

from tests.fakes.stripe_server import FakeStripe
from tests.fakes.stripe_wire import parse_form, sign_payload

WHSEC = "whsec_test_secret"


@pytest.fixture
def fake():
    with FakeStripe(seed=7) as server:
        yield server


@pytest.fixture
def client(fake):
    # The exact construction creditgate uses: only the API base address changes.
    return stripe.StripeClient(fake.api_key, base_addresses={"api": fake.url})


def _pack_session(client, price_id, **extra):
    params = {
        "mode": "payment",
        "line_items": [{"price": price_id, "quantity": 1}],
        "success_url": "https://app.example/success?session_id={CHECKOUT_SESSION_ID}",
        "cancel_url": "https://app.example/cancel",
        "client_reference_id": "acct_42",
        "metadata": {"account_id": "acct_42", "pack": "growth"},
        "payment_intent_data": {"metadata": {"order_id": "ord_1", "account_id": "acct_42"}},
    }
    params.update(extra)
    return client.v1.checkout.sessions.create(params=params)


def _plan_session(client, price_id):
    return client.v1.checkout.sessions.create(
        params={
            "mode": "subscription",
            "line_items": [{"price": price_id, "quantity": 1}],
            "success_url": "https://app.example/success",
            "client_reference_id": "acct_42",
            "subscription_data": {"metadata": {"account_id": "acct_42", "plan": "pro"}},
        }
    )


# --------------------------------------------------------------------------- form encoding


def test_form_decoding_builds_nested_dicts_and_lists():
    raw = (
        "metadata[account_id]=x&line_items[0][price]=price_1&line_items[0][quantity]=2"
        "&line_items[1][price]=price_2&payment_intent_data[metadata][order_id]=o%201"
        "&subscription_data[metadata][plan]=pro&expand[]=line_items&expand[]=customer"
        "&mode=payment&empty="
    )
    assert parse_form(raw) == {
        "metadata": {"account_id": "x"},
        "line_items": [{"price": "price_1", "quantity": "2"}, {"price": "price_2"}],
        "payment_intent_data": {"metadata": {"order_id": "o 1"}},
        "subscription_data": {"metadata": {"plan": "pro"}},
        "expand": ["line_items", "customer"],
        "mode": "payment",
        "empty": "",
    }
    assert parse_form("expand[0]=a&expand[1]=b.c") == {"expand": ["a", "b.c"]}


# --------------------------------------------------------------------------- auth & routing


def test_missing_key_is_401_with_stripe_error_body(fake):
    response = httpx.get(f"{fake.url}/v1/customers/cus_x")
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "did not provide an API key" in error["message"]


def test_wrong_key_raises_authentication_error(fake):
    wrong = stripe.StripeClient("sk_test_wrong_key_1234", base_addresses={"api": fake.url})
    with pytest.raises(stripe.AuthenticationError) as info:
        wrong.v1.customers.create(params={"email": "a@example.com"})
    assert info.value.http_status == 401
    assert "Invalid API Key provided" in info.value.user_message
    assert "1234" in info.value.user_message and "wrong_key" not in info.value.user_message


def test_basic_auth_is_accepted_like_stripe(fake):
    response = httpx.get(f"{fake.url}/v1/events", auth=(fake.api_key, ""))
    assert response.status_code == 200
    assert response.json()["object"] == "list"


def test_unknown_path_is_404_with_stripe_error_body(fake):
    response = httpx.get(f"{fake.url}/v1/nonsense", headers={"Authorization": f"Bearer {fake.api_key}"})
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert "Unrecognized request URL (GET: /v1/nonsense)" in response.json()["error"]["message"]
    assert response.headers["Request-Id"].startswith("req_")


def test_unknown_id_raises_resource_missing(client):
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.customers.retrieve("cus_missing")
    assert info.value.http_status == 404
    assert info.value.code == "resource_missing"
    assert info.value.param == "id"
    assert "No such customer: 'cus_missing'" in info.value.user_message


def test_unknown_parameter_is_rejected(client):
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.customers.create(params={"emial": "a@example.com"})  # type: ignore[typeddict-unknown-key]
    assert info.value.http_status == 400
    assert info.value.code == "parameter_unknown"
    assert info.value.param == "emial"


def test_other_sdk_http_clients_work_too(fake):
    for http_client in (stripe.HTTPXClient(allow_sync_methods=True), stripe.UrllibClient()):
        sdk = stripe.StripeClient(fake.api_key, base_addresses={"api": fake.url}, http_client=http_client)
        customer = sdk.v1.customers.create(params={"email": "x@example.com"})
        assert sdk.v1.customers.retrieve(customer.id).email == "x@example.com"


# --------------------------------------------------------------------------- customers & prices


def test_customer_create_and_retrieve(client):
    customer = client.v1.customers.create(
        params={"email": "ada@example.com", "name": "Ada", "metadata": {"account_id": "acct_42"}}
    )
    assert customer.id.startswith("cus_")
    assert customer.object == "customer"
    assert customer.livemode is False
    assert isinstance(customer.created, int)
    fetched = client.v1.customers.retrieve(customer.id)
    assert fetched.email == "ada@example.com"
    assert fetched.metadata.to_dict() == {"account_id": "acct_42"}
    listed = client.v1.customers.list(params={"email": "ada@example.com"})
    assert [c.id for c in listed.data] == [customer.id]


def test_prices_through_the_api_and_the_helper(fake, client):
    made = client.v1.prices.create(
        params={
            "unit_amount": 2000,
            "currency": "USD",
            "recurring": {"interval": "month"},
            "product_data": {"name": "Pro"},
            "lookup_key": "pro_monthly",
        }
    )
    assert made.id.startswith("price_")
    assert made.type == "recurring"
    assert made.currency == "usd"
    assert made.recurring.interval == "month" and made.recurring.interval_count == 1
    assert client.v1.products.retrieve(made.product).name == "Pro"

    pack = fake.create_price(999, "eur", id="price_pack_small", nickname="Small pack")
    fetched = client.v1.prices.retrieve("price_pack_small")
    assert fetched.unit_amount == 999 and isinstance(fetched.unit_amount, int)
    assert fetched.recurring is None and fetched.type == "one_time"
    assert fetched.product == pack["product"]

    by_key = client.v1.prices.list(params={"lookup_keys": ["pro_monthly"]})
    assert [p.id for p in by_key.data] == [made.id]

    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.prices.create(params={"unit_amount": 1, "currency": "usd", "product": "prod_nope"})
    assert info.value.code == "resource_missing" and info.value.param == "product"


# --------------------------------------------------------------------------- checkout sessions


def test_payment_session_has_the_full_shape(fake, client):
    price = fake.create_price(1500, "usd", nickname="Growth pack")
    session = _pack_session(client, price["id"])
    assert session.id.startswith("cs_test_")
    assert session.object == "checkout.session"
    assert session.url == f"{fake.url}/c/pay/{session.id}"
    assert session.mode == "payment"
    assert session.status == "open"
    assert session.payment_status == "unpaid"
    assert session.amount_total == 1500 and session.amount_subtotal == 1500
    assert session.currency == "usd"
    assert session.client_reference_id == "acct_42"
    assert session.metadata.to_dict() == {"account_id": "acct_42", "pack": "growth"}
    assert session.payment_intent is None and session.subscription is None
    assert session.customer is None
    assert session.livemode is False
    assert session.expires_at == session.created + 24 * 3600
    assert "line_items" not in session  # includable: only with expand
    assert httpx.get(session.url).status_code == 200


def test_retrieve_with_expand_and_line_items_endpoint(fake, client):
    price = fake.create_price(1500, "usd", nickname="Growth pack")
    session = _pack_session(client, price["id"])
    expanded = client.v1.checkout.sessions.retrieve(
        session.id, params={"expand": ["line_items", "line_items.data.price.product"]}
    )
    assert expanded.line_items.object == "list"
    item = expanded.line_items.data[0]
    assert item.object == "item"
    assert item.price.id == price["id"] and item.quantity == 1 and item.amount_total == 1500
    assert item.price.product.name == "Growth pack"
    assert item.description == "Growth pack"

    page = client.v1.checkout.sessions.line_items.list(session.id)
    assert page.object == "list" and page.has_more is False
    assert page.url == f"/v1/checkout/sessions/{session.id}/line_items"
    assert [i.price.id for i in page.data] == [price["id"]]

    with pytest.raises(stripe.InvalidRequestError, match="cannot be expanded"):
        client.v1.checkout.sessions.retrieve(session.id, params={"expand": ["currency"]})


def test_embedded_session_needs_return_url_not_success_url(fake, client):
    price = fake.create_price(1500)
    session = client.v1.checkout.sessions.create(
        params={
            "mode": "payment",
            "ui_mode": "embedded_page",
            "line_items": [{"price": price["id"], "quantity": 1}],
            "return_url": "https://app.example/return",
        }
    )
    assert session.url is None and session.client_secret.startswith(session.id)


@pytest.mark.parametrize(
    ("change", "param", "code", "text"),
    [
        ({"mode": None}, "mode", "parameter_missing", "Missing required param: mode"),
        ({"mode": "donate"}, "mode", None, "Invalid mode"),
        ({"success_url": None}, "success_url", "parameter_missing", "success_url"),
        (
            {"line_items": [{"price": "price_nope", "quantity": 1}]},
            "line_items[0][price]",
            "resource_missing",
            "No such price: 'price_nope'",
        ),
        ({"line_items": None}, "line_items", "parameter_missing", "line_items"),
        (
            {"mode": "subscription", "payment_intent_data": None},
            "line_items",
            None,
            "at least one recurring price",
        ),
        ({"customer": "cus_nope"}, "customer", "resource_missing", "No such customer"),
        ({"metadata": {"k" * 41: "v"}}, "metadata[" + "k" * 41 + "]", None, "40 characters"),
        ({"expires_at": 1}, "expires_at", None, "at least 30 minutes"),
        (
            {"payment_intent_data": {"metdata": {"a": "b"}}},
            "payment_intent_data[metdata]",
            "parameter_unknown",
            "Received unknown parameter",
        ),
    ],
)
def test_session_validation_errors(fake, client, change, param, code, text):
    price = fake.create_price(1500)
    params = {
        "mode": "payment",
        "line_items": [{"price": price["id"], "quantity": 1}],
        "success_url": "https://app.example/success",
        "payment_intent_data": {"metadata": {"order_id": "o1"}},
    }
    for key, value in change.items():
        if value is None:
            params.pop(key)
        else:
            params[key] = value
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.checkout.sessions.create(params=params)
    assert info.value.http_status == 400
    assert info.value.param == param
    assert info.value.code == code
    assert text in info.value.user_message


def test_payment_mode_rejects_recurring_price(fake, client):
    monthly = fake.create_price(2000, recurring="month")
    with pytest.raises(stripe.InvalidRequestError, match="recurring price") as info:
        _pack_session(client, monthly["id"])
    assert info.value.param == "line_items"
    assert fake.objects("checkout.session") == []


def test_expire_through_the_api(fake, client):
    session = _pack_session(client, fake.create_price(1500)["id"])
    fake.take_events()
    expired = client.v1.checkout.sessions.expire(session.id)
    assert expired.status == "expired" and expired.url is None
    (event,) = fake.take_events()
    assert event["type"] == "checkout.session.expired"
    assert event["request"]["id"] is not None  # caused by an API request
    with pytest.raises(stripe.InvalidRequestError, match="can be expired"):
        client.v1.checkout.sessions.expire(session.id)


# --------------------------------------------------------------------------- idempotency


def test_idempotent_replay_returns_the_first_answer(fake, client):
    price = fake.create_price(1500)
    options = {"idempotency_key": "order-1"}
    params = {
        "mode": "payment",
        "line_items": [{"price": price["id"], "quantity": 1}],
        "success_url": "https://app.example/success",
    }
    first = client.v1.checkout.sessions.create(params=params, options=options)
    second = client.v1.checkout.sessions.create(params=params, options=options)
    assert first.id == second.id
    assert len(fake.objects("checkout.session")) == 1
    assert [r["replayed"] for r in fake.requests if r["path"] == "/v1/checkout/sessions"] == [
        False,
        True,
    ]

    raw = httpx.post(
        f"{fake.url}/v1/checkout/sessions",
        headers={"Authorization": f"Bearer {fake.api_key}", "Idempotency-Key": "order-1"},
        content="mode=payment&line_items[0][price]="
        + price["id"]
        + "&line_items[0][quantity]=1&success_url=https%3A%2F%2Fapp.example%2Fsuccess",
    )
    assert raw.headers["Idempotent-Replayed"] == "true"
    assert raw.json()["id"] == first.id


def test_idempotency_key_with_other_params_is_an_error(fake, client):
    options = {"idempotency_key": "cust-1"}
    client.v1.customers.create(params={"email": "a@example.com"}, options=options)
    with pytest.raises(stripe.IdempotencyError) as info:
        client.v1.customers.create(params={"email": "b@example.com"}, options=options)
    assert info.value.http_status == 400
    assert info.value.error.type == "idempotency_error"
    assert "same parameters" in info.value.user_message
    assert len(fake.objects("customer")) == 1


def test_failed_validation_is_not_saved_for_replay(fake, client):
    # Stripe saves a result only once the endpoint ran; a corrected retry may reuse the key.
    options = {"idempotency_key": "retry-me"}
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.customers.create(params={"email": "not-an-email"}, options=options)
    assert info.value.code == "email_invalid"
    fixed = client.v1.customers.create(params={"email": "ok@example.com"}, options=options)
    assert fixed.email == "ok@example.com"


# --------------------------------------------------------------------------- completion & events


def test_complete_payment_checkout(fake, client):
    session = _pack_session(client, fake.create_price(1500, nickname="Growth")["id"])
    (event,) = fake.complete_checkout(session.id)
    assert event["type"] == "checkout.session.completed"
    assert set(event) == {
        "id",
        "object",
        "api_version",
        "created",
        "data",
        "livemode",
        "pending_webhooks",
        "request",
        "type",
    }
    assert event["id"].startswith("evt_") and event["object"] == "event"
    assert event["api_version"] == stripe.api_version
    assert event["request"] == {"id": None, "idempotency_key": None}
    snapshot = event["data"]["object"]
    assert snapshot["payment_status"] == "paid" and snapshot["status"] == "complete"
    assert snapshot["customer_details"]["email"] == "customer@example.com"

    now = client.v1.checkout.sessions.retrieve(session.id)
    intent = client.v1.payment_intents.retrieve(now.payment_intent)
    charge = client.v1.charges.retrieve(intent.latest_charge)
    assert charge.amount == 1500 and charge.currency == "usd"
    assert charge.payment_intent == intent.id
    assert charge.metadata.to_dict() == {"order_id": "ord_1", "account_id": "acct_42"}
    assert intent.metadata.to_dict() == charge.metadata.to_dict()

    fetched = client.v1.events.retrieve(event["id"])
    assert fetched.type == "checkout.session.completed"
    assert fetched.data.object.id == session.id


def test_complete_subscription_checkout(fake, client):
    price = fake.create_price(2000, "usd", recurring="month", nickname="Pro")
    session = _plan_session(client, price["id"])
    completed, created, paid = fake.complete_checkout(session.id)
    assert [completed["type"], created["type"], paid["type"]] == [
        "checkout.session.completed",
        "customer.subscription.created",
        "invoice.paid",
    ]
    session_obj = completed["data"]["object"]
    sub = client.v1.subscriptions.retrieve(session_obj["subscription"])
    assert sub.status == "active"
    assert sub.customer == session_obj["customer"]
    assert sub.metadata.to_dict() == {"account_id": "acct_42", "plan": "pro"}
    item = sub["items"].data[0]
    assert item.price.id == price["id"] and item.price.unit_amount == 2000
    assert item.price.recurring.interval == "month"
    assert item.current_period_start == sub.created
    assert item.current_period_end > item.current_period_start + 27 * 86400
    assert (sub.current_period_start, sub.current_period_end) == (
        item.current_period_start,
        item.current_period_end,
    )

    invoice = client.v1.invoices.retrieve(sub.latest_invoice)
    assert invoice.id == paid["data"]["object"]["id"]
    assert invoice.billing_reason == "subscription_create"
    assert invoice.status == "paid" and invoice.amount_paid == 2000
    assert invoice.parent.subscription_details.subscription == sub.id
    assert invoice.subscription == sub.id
    line = invoice.lines.data[0]
    assert (line.period.start, line.period.end) == (
        item.current_period_start,
        item.current_period_end,
    )
    assert line.pricing.price_details.price == price["id"]
    assert line.price.id == price["id"]
    # Stripe's quirk: a first invoice's own period is the creation instant.
    assert invoice.period_start == invoice.period_end == invoice.created

    payments = client.v1.invoice_payments.list(params={"invoice": invoice.id})
    assert payments.data[0].payment.payment_intent == invoice.payment_intent


def test_renewal_advances_period_and_clock(fake, client):
    price = fake.create_price(2000, recurring="month")
    _, created, _ = fake.complete_checkout(_plan_session(client, price["id"]).id)
    sub_id = created["data"]["object"]["id"]
    old_item = created["data"]["object"]["items"]["data"][0]
    updated, paid = fake.renew_subscription(sub_id)
    assert updated["type"] == "customer.subscription.updated"
    assert paid["type"] == "invoice.paid"
    new_item = updated["data"]["object"]["items"]["data"][0]
    assert new_item["current_period_start"] == old_item["current_period_end"]
    assert (
        updated["data"]["previous_attributes"]["items"]["data"][0]["current_period_end"]
        == (old_item["current_period_end"])
    )
    invoice = paid["data"]["object"]
    assert invoice["billing_reason"] == "subscription_cycle"
    assert invoice["lines"]["data"][0]["period"] == {
        "start": new_item["current_period_start"],
        "end": new_item["current_period_end"],
    }
    assert (invoice["period_start"], invoice["period_end"]) == (
        old_item["current_period_start"],
        old_item["current_period_end"],
    )
    assert fake.clock >= old_item["current_period_end"]
    assert updated["created"] > created["created"]


def test_modern_shapes_without_legacy_fields():
    with FakeStripe(legacy_fields=False) as fake:
        client = fake.client()
        price = fake.create_price(2000, recurring="month")
        _, created, paid = fake.complete_checkout(_plan_session(client, price["id"]).id)
        sub = created["data"]["object"]
        assert "current_period_end" not in sub
        assert "current_period_end" in sub["items"]["data"][0]
        invoice = paid["data"]["object"]
        assert "subscription" not in invoice and "charge" not in invoice
        assert "price" not in invoice["lines"]["data"][0]


def test_cancel_at_period_end_through_the_api_then_renewal_ends_it(fake, client):
    price = fake.create_price(2000, recurring="month")
    _, created, _ = fake.complete_checkout(_plan_session(client, price["id"]).id)
    sub_id = created["data"]["object"]["id"]
    fake.take_events()
    updated = client.v1.subscriptions.update(sub_id, params={"cancel_at_period_end": True})
    assert updated.cancel_at_period_end is True
    assert updated.cancel_at == updated["items"].data[0].current_period_end
    (event,) = fake.take_events()
    assert event["type"] == "customer.subscription.updated"
    assert event["data"]["previous_attributes"]["cancel_at_period_end"] is False
    (deleted,) = fake.renew_subscription(sub_id)
    assert deleted["type"] == "customer.subscription.deleted"
    assert deleted["data"]["object"]["status"] == "canceled"


def test_delete_subscription_through_the_api(fake, client):
    price = fake.create_price(2000, recurring="month")
    _, created, _ = fake.complete_checkout(_plan_session(client, price["id"]).id)
    canceled = client.v1.subscriptions.cancel(created["data"]["object"]["id"])
    assert canceled.status == "canceled" and canceled.ended_at is not None
    assert fake.events[-1]["type"] == "customer.subscription.deleted"
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.subscriptions.cancel(canceled.id)
    assert info.value.code == "resource_missing"


def test_price_change_and_cancel_helpers(fake, client):
    monthly = fake.create_price(2000, recurring="month")
    bigger = fake.create_price(5000, recurring="month")
    _, created, _ = fake.complete_checkout(_plan_session(client, monthly["id"]).id)
    sub_id = created["data"]["object"]["id"]
    (changed,) = fake.update_subscription_price(sub_id, bigger["id"])
    assert changed["data"]["object"]["items"]["data"][0]["price"]["id"] == bigger["id"]
    previous_item = changed["data"]["previous_attributes"]["items"]["data"][0]
    assert previous_item["price"]["id"] == monthly["id"]
    (deleted,) = fake.cancel_subscription(sub_id)
    assert deleted["type"] == "customer.subscription.deleted"
    assert deleted["created"] > changed["created"]


# --------------------------------------------------------------------------- refunds & disputes


def test_refunds_are_cumulative(fake, client):
    session = _pack_session(client, fake.create_price(1500)["id"])
    fake.complete_checkout(session.id)
    intent = client.v1.payment_intents.retrieve(client.v1.checkout.sessions.retrieve(session.id).payment_intent)
    charge_id = intent.latest_charge

    first = client.v1.refunds.create(params={"charge": charge_id, "amount": 500})
    assert first.object == "refund" and first.amount == 500 and first.status == "succeeded"
    (event,) = fake.refund(charge_id, 400)
    assert event["type"] == "charge.refunded"
    assert event["data"]["object"]["amount_refunded"] == 900
    assert event["data"]["object"]["refunded"] is False
    assert event["data"]["previous_attributes"] == {"amount_refunded": 500}

    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.refunds.create(params={"payment_intent": intent.id, "amount": 601})
    assert info.value.param == "amount"
    assert "($6.01) is greater than unrefunded amount on charge ($6.00)" in info.value.user_message

    last = client.v1.refunds.create(params={"payment_intent": intent.id})
    assert last.amount == 600
    charge = client.v1.charges.retrieve(charge_id, params={"expand": ["refunds"]})
    assert charge.amount_refunded == 1500 and charge.refunded is True
    assert sorted(r.amount for r in charge.refunds.data) == [400, 500, 600]
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.refunds.create(params={"charge": charge_id})
    assert info.value.code == "charge_already_refunded"


def test_dispute_event(fake, client):
    session = _pack_session(client, fake.create_price(1500)["id"])
    fake.complete_checkout(session.id)
    charge = fake.objects("charge")[-1]
    (event,) = fake.dispute(charge["id"])
    assert event["type"] == "charge.dispute.created"
    assert event["data"]["object"]["charge"] == charge["id"]
    assert event["data"]["object"]["amount"] == 1500
    assert client.v1.charges.retrieve(charge["id"]).disputed is True


# --------------------------------------------------------------------------- async & expiry


def test_async_payment_succeeds_later(fake, client):
    session = _pack_session(client, fake.create_price(1500)["id"])
    (completed,) = fake.complete_checkout(session.id, async_payment=True)
    assert completed["data"]["object"]["payment_status"] == "unpaid"
    assert completed["data"]["object"]["status"] == "complete"
    (succeeded,) = fake.succeed_async_payment(session.id)
    assert succeeded["type"] == "checkout.session.async_payment_succeeded"
    assert succeeded["data"]["object"]["payment_status"] == "paid"
    with pytest.raises(ValueError):
        fake.fail_async_payment(session.id)


def test_async_payment_fails(fake, client):
    session = _pack_session(client, fake.create_price(1500)["id"])
    fake.complete_checkout(session.id, async_payment=True)
    (failed,) = fake.fail_async_payment(session.id)
    assert failed["type"] == "checkout.session.async_payment_failed"
    assert failed["data"]["object"]["payment_status"] == "unpaid"


def test_expiry_by_helper_and_by_clock(fake, client):
    price = fake.create_price(1500)
    first, second = _pack_session(client, price["id"]), _pack_session(client, price["id"])
    (event,) = fake.expire_checkout(first.id)
    assert event["type"] == "checkout.session.expired"
    assert fake.advance(3600) == []
    (late,) = fake.advance(24 * 3600)
    assert late["data"]["object"]["id"] == second.id


def test_clock_is_monotonic_and_controllable(fake, client):
    start = fake.clock
    a = client.v1.customers.create(params={"email": "a@example.com"})
    b = client.v1.customers.create(params={"email": "b@example.com"})
    assert start < a.created < b.created
    fake.advance(86400)
    c = client.v1.customers.create(params={"email": "c@example.com"})
    assert c.created >= b.created + 86400
    with pytest.raises(ValueError):
        fake.clock = start


# --------------------------------------------------------------------------- webhooks


def test_signature_is_accepted_by_stripe_python(fake, client):
    session = _pack_session(client, fake.create_price(1500)["id"])
    (event,) = fake.complete_checkout(session.id)
    payload, headers = fake.webhook(event, WHSEC)
    assert payload == fake.event_bytes(event)
    parsed = stripe.Webhook.construct_event(payload, headers["Stripe-Signature"], WHSEC)
    assert parsed.id == event["id"] and parsed.type == "checkout.session.completed"
    assert parsed.data.object.payment_status == "paid"
    via_client = client.construct_event(payload, headers["Stripe-Signature"], WHSEC)
    assert via_client.id == event["id"]
    assert json.loads(payload) == event


def test_tampered_or_stale_payload_is_rejected(fake):
    event = fake.expire_checkout(_pack_session(fake.client(), fake.create_price(1500)["id"]).id)[0]
    payload = fake.event_bytes(event)
    header = sign_payload(payload, WHSEC)
    tampered = payload.replace(b'"expired"', b'"complete"')
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(tampered, header, WHSEC)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, header, "whsec_other")
    stale = sign_payload(payload, WHSEC, timestamp=int(time.time()) - 301)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, stale, WHSEC)


# --------------------------------------------------------------------------- failure injection


def test_injected_500_is_retried_by_the_sdk_with_the_same_key(fake):
    # StripeClient does not retry unless told to (max_network_retries defaults to 0).
    client = stripe.StripeClient(fake.api_key, base_addresses={"api": fake.url}, max_network_retries=2)
    fake.inject_error(500, path="/v1/customers", method="POST")
    customer = client.v1.customers.create(params={"email": "a@example.com"})
    attempts = [r for r in fake.requests if r["path"] == "/v1/customers"]
    assert [r["status"] for r in attempts] == [500, 200]
    assert attempts[0]["idempotency_key"] == attempts[1]["idempotency_key"]
    assert fake.objects("customer")[0]["id"] == customer.id


def test_injected_errors_surface_as_sdk_exceptions(fake):
    client = fake.client(max_network_retries=0)
    fake.inject_error(503, should_retry=False)
    with pytest.raises(stripe.APIError) as info:
        client.v1.customers.create(params={"email": "a@example.com"})
    assert info.value.http_status == 503
    fake.inject_error(429, code="rate_limit", message="Request rate limit exceeded.")
    with pytest.raises(stripe.RateLimitError):
        client.v1.events.list()
    assert fake.objects("customer") == []


# --------------------------------------------------------------------------- more flows


def test_async_subscription_payment(fake, client):
    price = fake.create_price(2000, recurring="month")
    session = _plan_session(client, price["id"])
    completed, created = fake.complete_checkout(session.id, async_payment=True)
    assert completed["data"]["object"]["payment_status"] == "unpaid"
    assert created["data"]["object"]["status"] == "incomplete"
    succeeded, updated, paid = fake.succeed_async_payment(session.id)
    assert succeeded["type"] == "checkout.session.async_payment_succeeded"
    assert updated["data"]["object"]["status"] == "active"
    assert updated["data"]["previous_attributes"] == {"status": "incomplete"}
    assert paid["type"] == "invoice.paid" and paid["data"]["object"]["amount_paid"] == 2000


def test_failed_renewal_makes_the_subscription_past_due(fake, client):
    price = fake.create_price(2000, recurring="month")
    _, created, _ = fake.complete_checkout(_plan_session(client, price["id"]).id)
    updated, failed = fake.renew_subscription(created["data"]["object"]["id"], payment_succeeds=False)
    assert updated["data"]["object"]["status"] == "past_due"
    assert failed["type"] == "invoice.payment_failed"
    assert failed["data"]["object"]["status"] == "open"
    assert failed["data"]["object"]["amount_paid"] == 0


def test_inline_price_data_and_setup_mode(fake, client):
    session = client.v1.checkout.sessions.create(
        params={
            "mode": "payment",
            "success_url": "https://app.example/s",
            "line_items": [
                {
                    "price_data": {
                        "currency": "jpy",
                        "unit_amount": 1200,
                        "product_data": {"name": "Credits"},
                    },
                    "quantity": 3,
                }
            ],
        }
    )
    assert session.amount_total == 3600 and session.currency == "jpy"
    inline = client.v1.checkout.sessions.line_items.list(session.id).data[0].price
    assert inline.active is False  # ad-hoc prices cannot be reused
    setup = client.v1.checkout.sessions.create(
        params={"mode": "setup", "currency": "usd", "success_url": "https://app.example/s"}
    )
    assert setup.payment_status == "no_payment_required" and setup.amount_total is None
    (completed,) = fake.complete_checkout(setup.id)
    assert completed["data"]["object"]["setup_intent"].startswith("seti_")


def test_lists_paginate_like_stripe(fake, client):
    made = [client.v1.customers.create(params={"email": f"u{i}@example.com"}) for i in range(5)]
    page = client.v1.customers.list(params={"limit": 2})
    assert [c.id for c in page.data] == [made[4].id, made[3].id]  # newest first
    assert page.has_more is True and page.url == "/v1/customers"
    assert [c.id for c in page.auto_paging_iter()] == [c.id for c in reversed(made)]
    after = client.v1.customers.list(params={"limit": 2, "starting_after": made[3].id})
    assert [c.id for c in after.data] == [made[2].id, made[1].id]


def test_expanding_references(fake, client):
    price = fake.create_price(2000, recurring="month")
    customer = client.v1.customers.create(params={"email": "exp@example.com"})
    session = client.v1.checkout.sessions.create(
        params={
            "mode": "subscription",
            "customer": customer.id,
            "line_items": [{"price": price["id"], "quantity": 1}],
            "success_url": "https://app.example/s",
        }
    )
    fake.complete_checkout(session.id)
    expanded = client.v1.checkout.sessions.retrieve(
        session.id, params={"expand": ["customer", "subscription.latest_invoice"]}
    )
    assert expanded.customer.email == "exp@example.com"
    assert expanded.subscription.latest_invoice.object == "invoice"
    assert expanded.subscription.customer == customer.id


def test_events_caused_by_requests_name_the_request(fake, client):
    price = fake.create_price(2000, recurring="month")
    _, created, _ = fake.complete_checkout(_plan_session(client, price["id"]).id)
    client.v1.subscriptions.update(
        created["data"]["object"]["id"],
        params={"metadata": {"note": "x"}},
        options={"idempotency_key": "meta-1"},
    )
    event = fake.events[-1]
    assert event["type"] == "customer.subscription.updated"
    assert event["request"]["idempotency_key"] == "meta-1"
    assert event["request"]["id"] == fake.requests[-1]["request_id"]
    listed = client.v1.events.list(params={"type": "customer.subscription.*", "limit": 1})
    assert listed.data[0].id == event["id"]


def test_monthly_periods_keep_the_anchor_day():
    from datetime import datetime

    from tests.fakes.stripe_objects import add_interval

    def ts(*args):
        return int(datetime(*args, tzinfo=UTC).timestamp())

    anchor = ts(2026, 1, 31, 12)
    feb = add_interval(anchor, "month", 1, anchor)
    assert feb == ts(2026, 2, 28, 12)
    assert add_interval(feb, "month", 1, anchor) == ts(2026, 3, 31, 12)
    assert add_interval(anchor, "year", 1, anchor) == ts(2027, 1, 31, 12)
