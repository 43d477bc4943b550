"""Packs that top up a quota key (here `lead_generation`) instead of credits: bought through
the simulated checkout and through Stripe, taken back by refunds and lost disputes, offered
when the quota runs out, and named in the catalog."""

from __future__ import annotations

import copy
from urllib.parse import urlsplit

import pytest
from pydantic import ValidationError

from functions.core.catalog import DEFAULT_CATALOG, apply_catalog
from functions.core.errors import ProblemError
from tests.api.helpers import assert_problem
from tests.payments.conftest import MICRO, assert_reconciled, checkout, credits, deliver_all, new_key

PACK = "test_leads"
PRICE_ID = "price_pack_test_leads"
LEADS = (25 + 5) * MICRO  # amount + bonus of the test pack
ALLOWANCE = 50 * MICRO  # lead_generation of the shipped `pro` plan


@pytest.fixture
def lead_pack(sql):
    sql(
        """INSERT INTO creditgate.packs (id, name, price_minor, currency, key, credits, bonus_credits, display_order)
           VALUES (%s, 'Test leads', 500, 'usd', 'lead_generation', %s, %s, 90)
           ON CONFLICT (id) DO UPDATE SET active = true, key = excluded.key""",
        PACK,
        25 * MICRO,
        5 * MICRO,
    )
    yield PACK
    # Orders keep pointing at it; the shipped offer must not list it.
    sql("UPDATE creditgate.packs SET active = false, stripe_price_id = NULL WHERE id = %s", PACK)


def leads(ledger, account: str) -> tuple[int, int]:
    line = next((b for b in ledger.balance(account)["balances"] if b["key"] == "lead_generation"), None)
    return (line["available"], line["debt"]) if line else (0, 0)


def local_path(url: str) -> str:
    return urlsplit(url).path


def test_a_simulated_purchase_tops_up_the_packs_key_not_credits(
    client, service_headers, make_account, ledger, lead_pack
):
    account = make_account("pro")
    before_credits, before_leads = credits(ledger, account), leads(ledger, account)
    body = checkout(client, service_headers, account, key=new_key(), pack=lead_pack).json()
    page = client.get(local_path(body["checkout_url"]))
    assert "30 lead_generation" in page.text
    assert client.post(local_path(body["checkout_url"]), follow_redirects=False).status_code == 303
    assert leads(ledger, account) == (before_leads[0] + LEADS, 0)
    assert credits(ledger, account) == before_credits
    orders = client.get(f"/v1/orders?account_id={account}", headers=service_headers).json()["items"]
    assert [(o["item"], o["key"], o["credits"]) for o in orders] == [(lead_pack, "lead_generation", "30")]
    assert_reconciled(ledger, account)


@pytest.fixture
def stripe_pack(fake, sql, lead_pack, catalog_prices):
    fake.create_price(500, "usd", id=PRICE_ID, nickname="test leads pack")
    sql("UPDATE creditgate.packs SET stripe_price_id = %s WHERE id = %s", PRICE_ID, lead_pack)
    return lead_pack


def buy(stripe_http, fake, service_headers, account, pack):
    body = checkout(stripe_http, service_headers, account, key=new_key(), pack=pack)
    assert body.status_code == 201, body.text
    events = fake.complete_checkout(body.json()["session_id"])
    deliver_all(stripe_http, fake, events)
    return fake.get(events[0]["data"]["object"]["payment_intent"])["latest_charge"]


def test_a_stripe_purchase_and_its_refunds_move_the_packs_key(
    stripe_http, fake, service_headers, make_account, ledger, sql, stripe_pack
):
    account = make_account("pro")
    before = credits(ledger, account)
    charge = buy(stripe_http, fake, service_headers, account, stripe_pack)
    assert leads(ledger, account) == (ALLOWANCE + LEADS, 0)
    assert credits(ledger, account) == before
    assert sql("SELECT key, amount FROM creditgate.grants WHERE account_id = %s AND source = 'purchase'", account) == [
        ("lead_generation", LEADS)
    ]

    deliver_all(stripe_http, fake, fake.refund(charge, amount=250))  # half of $5.00
    assert leads(ledger, account) == (ALLOWANCE + LEADS // 2, 0)
    deliver_all(stripe_http, fake, fake.refund(charge))
    assert leads(ledger, account) == (ALLOWANCE, 0)
    assert credits(ledger, account) == before
    assert sql(
        "SELECT key, amount FROM creditgate.ledger_entries WHERE account_id = %s AND kind = 'clawback' ORDER BY id",
        account,
    ) == [("lead_generation", -LEADS // 2), ("lead_generation", -LEADS // 2)]
    assert_reconciled(ledger, account)


def test_a_pack_edited_during_checkout_grants_what_was_offered(
    client, service_headers, make_account, ledger, sql, lead_pack
):
    """The operator changes the pack (fewer credits, another key) while the buyer pays."""
    account = make_account("pro")
    before_credits, before_leads = credits(ledger, account), leads(ledger, account)
    body = checkout(client, service_headers, account, key=new_key(), pack=lead_pack).json()
    sql("UPDATE creditgate.packs SET credits = %s, bonus_credits = 0, key = 'credits' WHERE id = %s", MICRO, lead_pack)
    try:
        assert client.post(local_path(body["checkout_url"]), follow_redirects=False).status_code == 303
    finally:
        sql(
            "UPDATE creditgate.packs SET credits = %s, bonus_credits = %s, key = 'lead_generation' WHERE id = %s",
            25 * MICRO,
            5 * MICRO,
            lead_pack,
        )
    assert leads(ledger, account) == (before_leads[0] + LEADS, 0)
    assert credits(ledger, account) == before_credits
    orders = client.get(f"/v1/orders?account_id={account}", headers=service_headers).json()["items"]
    assert [(o["key"], o["credits"]) for o in orders] == [("lead_generation", "30")]
    assert_reconciled(ledger, account)


def test_a_stripe_refund_after_a_pack_edit_takes_back_what_was_sold(
    stripe_http, fake, service_headers, make_account, ledger, sql, stripe_pack
):
    account = make_account("pro")
    before = credits(ledger, account)
    started = checkout(stripe_http, service_headers, account, key=new_key(), pack=stripe_pack)
    sql("UPDATE creditgate.packs SET credits = %s, key = 'credits' WHERE id = %s", MICRO, stripe_pack)
    try:
        events = fake.complete_checkout(started.json()["session_id"])
        deliver_all(stripe_http, fake, events)
        assert leads(ledger, account) == (ALLOWANCE + LEADS, 0)
        charge = fake.get(events[0]["data"]["object"]["payment_intent"])["latest_charge"]
        deliver_all(stripe_http, fake, fake.refund(charge))
    finally:
        sql("UPDATE creditgate.packs SET credits = %s, key = 'lead_generation' WHERE id = %s", 25 * MICRO, stripe_pack)
    assert leads(ledger, account) == (ALLOWANCE, 0)
    assert credits(ledger, account) == before
    assert_reconciled(ledger, account)


def test_a_lost_dispute_takes_back_the_packs_key(stripe_http, fake, service_headers, make_account, ledger, stripe_pack):
    account = make_account("pro")
    before = credits(ledger, account)
    charge = buy(stripe_http, fake, service_headers, account, stripe_pack)
    opened = fake.dispute(charge)
    lost = copy.deepcopy(opened[0])
    lost.update(id="evt_lost_" + new_key(), type="charge.dispute.closed", created=lost["created"] + 86400)
    lost["data"]["object"]["status"] = "lost"
    deliver_all(stripe_http, fake, opened + [lost])
    assert leads(ledger, account) == (ALLOWANCE, 0)
    assert credits(ledger, account) == before
    assert_reconciled(ledger, account)


def test_a_used_up_quota_offers_the_packs_of_its_key(client, service_headers, make_account, ledger, lead_pack):
    account = make_account("pro")
    gate = {"account_id": account, "feature": "generate_leads", "estimate": {"quantity": 1}}
    used = {**gate, "mode": "commit", "estimate": {"quantity": 50}, "idempotency_key": new_key()}
    assert client.post("/v1/gate", json=used, headers=service_headers).status_code == 200
    denied = assert_problem(
        client.post("/v1/gate", json={**gate, "mode": "check"}, headers=service_headers), 402, "quota_exhausted"
    )
    assert denied["packs"] == [
        {"id": PACK, "name": "Test leads", "price": "5.00", "currency": "usd", "key": "lead_generation",
         "credits": "25", "bonus_credits": "5"}
    ]  # fmt: skip
    # Running short of credits offers credit packs only.
    broke = make_account("pro")
    spend = {"account_id": broke, "feature": "vm_minute", "mode": "check", "estimate": {"quantity": 10**6}}
    short = assert_problem(client.post("/v1/gate", json=spend, headers=service_headers), 402, "insufficient_credits")
    assert short["packs"] and {p["key"] for p in short["packs"]} == {"credits"}
    assert_reconciled(ledger, account)


def _bucket_catalog(key: str) -> str:
    pack = f'\n[[packs]]\nid = "{PACK}"\nname = "Test leads"\nprice = "5.00"\ncurrency = "usd"\nkey = "{key}"\n'
    pack += 'credits = "25"\nbonus_credits = "5"\nstripe_price_id = ""\ndisplay_order = 90\n'
    text = DEFAULT_CATALOG.read_text()
    marker = "\n# ── Features"
    assert marker in text
    return text.replace(marker, pack + marker, 1)


def test_the_catalog_applies_a_packs_key_shows_it_and_refuses_an_unknown_one(client, ledger, sql, tmp_path):
    typo = tmp_path / "typo.toml"
    typo.write_text(_bucket_catalog("lead_genration"))
    with pytest.raises(ValidationError, match="pack 'test_leads' tops up unknown key 'lead_genration'"):
        apply_catalog(ledger, typo)
    assert sql("SELECT count(*) FROM creditgate.packs WHERE id = %s AND active", PACK) == [(0,)]

    good = tmp_path / "catalog.toml"
    good.write_text(_bucket_catalog("lead_generation"))
    test_plans = [r[0] for r in sql("SELECT id FROM creditgate.plans WHERE id LIKE 'test\\_%%' AND active")]
    try:
        apply_catalog(ledger, good)
        apply_catalog(ledger, good)  # again: nothing moves
        assert sql("SELECT key, active FROM creditgate.packs WHERE id = %s", PACK) == [("lead_generation", True)]
        packs = {p["id"]: p["key"] for p in client.get("/v1/catalog").json()["packs"]}
        assert packs == {"starter": "credits", "growth": "credits", "pro": "credits", PACK: "lead_generation"}
    finally:
        apply_catalog(ledger)
        # Applying a catalog retires plans it does not list: the suite's own test plans.
        sql("UPDATE creditgate.plans SET active = true WHERE id = ANY(%s)", test_plans)
    assert sql("SELECT active FROM creditgate.packs WHERE id = %s", PACK) == [(False,)]


def test_a_pack_the_catalog_retires_still_grants_the_key_it_was_sold_on(
    client, service_headers, make_account, ledger, sql, tmp_path
):
    """A checkout begun before the apply that retires its pack completes after it."""
    good = tmp_path / "catalog.toml"
    good.write_text(_bucket_catalog("lead_generation"))
    test_plans = [r[0] for r in sql("SELECT id FROM creditgate.plans WHERE id LIKE 'test\\_%%' AND active")]
    try:
        apply_catalog(ledger, good)
        account = make_account("pro")
        before_credits, before_leads = credits(ledger, account), leads(ledger, account)
        body = checkout(client, service_headers, account, key=new_key(), pack=PACK).json()
        apply_catalog(ledger)  # the pack is retired while the buyer is on the checkout page
        assert client.post(local_path(body["checkout_url"]), follow_redirects=False).status_code == 303
        assert leads(ledger, account) == (before_leads[0] + LEADS, 0)
        assert credits(ledger, account) == before_credits
        assert_reconciled(ledger, account)
    finally:
        apply_catalog(ledger)
        sql("UPDATE creditgate.plans SET active = true WHERE id = ANY(%s)", test_plans)


@pytest.mark.parametrize(
    "pack_keys",
    [{"starter": 5}, {"growth": {"a": 1}}, {"starter": "lead_genration"}, "credits", ["credits"], None],
)
def test_the_settings_rpc_refuses_pack_keys_it_cannot_keep(ledger, sql, pack_keys):
    before = sql("SELECT id, key FROM creditgate.packs ORDER BY id")
    with pytest.raises(ProblemError) as refused:
        ledger.rpc("creditgate_apply_settings", {"pack_keys": pack_keys})
    assert (refused.value.status, refused.value.code) == (422, "invalid_request")
    assert sql("SELECT id, key FROM creditgate.packs ORDER BY id") == before
