"""Stripe-mode fixtures: a FakeStripe server that the real stripe-python client talks to,
catalog prices that point at it, and an app whose settings name both."""

from __future__ import annotations

import time
import uuid

import jwt
import pytest
from fastapi.testclient import TestClient

from tests.conftest import JWT_SECRET, WEBHOOK_SECRET
from tests.fakes.stripe_server import FakeStripe

MICRO = 1_000_000
# Prices as the shipped catalog has them, in minor units.
PACK_PRICES = {"starter": 1900, "growth": 4900, "pro": 9900}
PLAN_PRICES = {"starter": 1500, "pro": 3900, "business": 9900, "enterprise": 29900}


def pack_price_id(pack: str) -> str:
    return f"price_pack_{pack}"


def plan_price_id(plan: str) -> str:
    return f"price_plan_{plan}"


@pytest.fixture
def fake():
    with FakeStripe(seed=None) as server:
        for pack, amount in PACK_PRICES.items():
            server.create_price(amount, "usd", id=pack_price_id(pack), nickname=f"{pack} pack")
        for plan, amount in PLAN_PRICES.items():
            server.create_price(amount, "usd", recurring="month", id=plan_price_id(plan), nickname=f"{plan} plan")
        yield server


@pytest.fixture
def catalog_prices(sql):
    """The catalog's Stripe price ids, as an operator sets them in catalog.toml."""
    for pack in PACK_PRICES:
        sql("UPDATE creditgate.packs SET stripe_price_id = %s WHERE id = %s", pack_price_id(pack), pack)
    for plan in PLAN_PRICES:
        sql("UPDATE creditgate.plans SET stripe_price_id = %s WHERE id = %s", plan_price_id(plan), plan)
    yield
    sql("UPDATE creditgate.packs SET stripe_price_id = NULL")
    sql("UPDATE creditgate.plans SET stripe_price_id = NULL")


@pytest.fixture
def stripe_settings(settings, fake):
    return settings.model_copy(
        update={"stripe_secret_key": fake.api_key, "stripe_api_base": fake.url, "payments": "stripe"}
    )


@pytest.fixture
def stripe_http(stripe_settings, ledger, catalog_prices):
    from functions.local import build_app

    with TestClient(build_app(settings=stripe_settings, ledger=ledger), raise_server_exceptions=False) as client:
        yield client


def user_token(user_id: str, email: str | None = None) -> str:
    claims = {"sub": user_id, "aud": "authenticated", "role": "authenticated", "exp": int(time.time()) + 600}
    if email:
        claims["email"] = email
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


def deliver(client, fake, event: dict, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None):
    payload, headers = fake.webhook(event, secret, timestamp=timestamp)
    return client.post("/v1/webhooks/stripe", content=payload, headers=headers)


def deliver_all(client, fake, events: list[dict]) -> list[dict]:
    answers = []
    for event in events:
        response = deliver(client, fake, event)
        assert response.status_code == 200, response.text
        answers.append(response.json())
    return answers


def checkout(client, headers, account_id: str | None = None, key: str | None = None, **body):
    if account_id is not None:
        body["account_id"] = account_id
    headers = dict(headers)
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post("/v1/checkout", json=body, headers=headers)


def credits(ledger, account_id: str) -> tuple[int, int]:
    """(available, debt) of the credits balance, in micro-credits."""
    line = next(b for b in ledger.balance(account_id)["balances"] if b["key"] == "credits")
    return line["available"], line["debt"]


def new_key() -> str:
    return uuid.uuid4().hex


def assert_reconciled(ledger, account_id: str) -> None:
    report = ledger.reconcile(account_id)
    assert report["ok"], report["problems"]
