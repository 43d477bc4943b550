"""`creditgate stripe sync`: the catalog's paid plans and packs become Stripe prices (found by
lookup key, made once), their ids are written into the catalog file, and a changed amount
gets a new price on the same product."""

from __future__ import annotations

import shutil

from functions.core.catalog import DEFAULT_CATALOG, load_catalog
from functions.core.cli import main
from functions.core.payments.stripe_sync import sync, wanted_prices


def test_prices_are_made_once_written_into_the_file_and_replaced_when_changed(
    stripe_settings, fake, tmp_path, monkeypatch, capsys
):
    catalog = tmp_path / "catalog.toml"
    shutil.copy(DEFAULT_CATALOG, catalog)
    monkeypatch.setenv("STRIPE_SECRET_KEY", stripe_settings.stripe_secret_key)
    monkeypatch.setenv("CREDITGATE_STRIPE_API_BASE", stripe_settings.stripe_api_base)
    before = len(fake._all("price"))

    assert main(["stripe", "sync", "--catalog", str(catalog), "--write"]) == 0
    wanted = wanted_prices(load_catalog(catalog))
    prices = {p["lookup_key"]: p for p in fake._all("price") if p["lookup_key"]}
    assert len(fake._all("price")) - before == len(wanted)
    written = load_catalog(catalog)  # still a valid catalog, with the ids in it
    for item in wanted:
        price = prices[f"creditgate_{item['kind']}_{item['id']}"]
        assert (price["unit_amount"], price["currency"]) == (item["amount"], item["currency"])
        assert (price["recurring"] or {}).get("interval") == item["interval"]
        items = written.plans if item["kind"] == "plan" else written.packs
        assert next(i for i in items if i.id == item["id"]).stripe_price_id == price["id"]
    assert "# Credits charged per 1 USD" in catalog.read_text()  # comments kept

    again = sync(stripe_settings, load_catalog(catalog))
    assert {r["status"] for r in again} == {"unchanged"} and len(fake._all("price")) - before == len(wanted)

    catalog.write_text(catalog.read_text().replace('price = "19.00"', 'price = "21.00"', 1))  # the starter pack
    changed = {r["id"]: r for r in sync(stripe_settings, load_catalog(catalog)) if r["kind"] == "pack"}
    old = prices["creditgate_pack_starter"]
    new = fake.get(changed["starter"]["price_id"])
    assert changed["starter"]["status"] == "replaced" and new["unit_amount"] == 2100
    assert new["product"] == old["product"] and new["lookup_key"] == "creditgate_pack_starter"
    assert fake.get(old["id"])["lookup_key"] is None  # the key moved; the old price stays for past payments


def test_free_plans_and_the_guests_plan_are_not_sold():
    kinds = {(w["kind"], w["id"]) for w in wanted_prices(load_catalog(DEFAULT_CATALOG))}
    assert ("plan", "free") not in kinds and ("plan", "anonymous") not in kinds
    assert ("plan", "pro") in kinds and ("pack", "starter") in kinds
