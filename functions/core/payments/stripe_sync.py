"""`creditgate stripe sync`: the catalog's paid plans and packs as Stripe products and
prices, so nobody copies amounts into the Stripe dashboard by hand.

Each price carries the lookup key `creditgate_<plan|pack>_<id>`. A price whose amount,
currency and interval still match is kept; one that changed gets a new price on the same
product, and the lookup key moves to it (Stripe keeps the old price for the subscriptions
and payments that used it). Running it again changes nothing. With `write=True` the
`stripe_price_id` of each item in the catalog file is set to the price found or made;
then `creditgate catalog apply` loads them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from functions.core.catalog import CatalogFile
from functions.core.money import major_to_minor
from functions.core.payments import provider
from functions.core.settings import Settings


def wanted_prices(catalog: CatalogFile) -> list[dict[str, Any]]:
    """What Stripe should sell: every plan with a price, every pack."""
    items = []
    for plan in catalog.plans:
        amount = major_to_minor(plan.price, catalog.settings.currency)
        if plan.id != "anonymous" and amount > 0:
            items.append(
                {
                    "kind": "plan",
                    "id": plan.id,
                    "name": plan.name,
                    "amount": amount,
                    "currency": catalog.settings.currency.lower(),
                    "interval": plan.interval,
                }
            )
    for pack in catalog.packs:
        items.append(
            {
                "kind": "pack",
                "id": pack.id,
                "name": pack.name,
                "amount": major_to_minor(pack.price, pack.currency),
                "currency": pack.currency.lower(),
                "interval": None,
            }
        )
    return items


def sync(settings: Settings, catalog: CatalogFile) -> list[dict[str, Any]]:
    client = provider.stripe_client(settings)
    results = []
    for item in wanted_prices(catalog):
        lookup_key = f"creditgate_{item['kind']}_{item['id']}"
        with provider.provider_call("list the prices"):
            found = client.v1.prices.list(params={"lookup_keys": [lookup_key], "limit": 1}).data
        current = found[0] if found else None
        if current is not None and _matches(current, item):
            results.append(item | {"price_id": current.id, "status": "unchanged"})
            continue
        params: dict[str, Any] = {
            "currency": item["currency"],
            "unit_amount": item["amount"],
            "lookup_key": lookup_key,
            "metadata": {"creditgate_kind": item["kind"], "creditgate_id": item["id"]},
        }
        if current is not None:
            params["product"] = current.product if isinstance(current.product, str) else current.product.id
            params["transfer_lookup_key"] = True
        else:
            params["product_data"] = {"name": item["name"], "metadata": params["metadata"]}
        if item["interval"]:
            params["recurring"] = {"interval": item["interval"]}
        # The same wanted price is made once, however often a failed run is repeated.
        key = f"creditgate-sync-{lookup_key}-{item['amount']}-{item['currency']}-{item['interval']}"
        with provider.provider_call("create the price"):
            price = client.v1.prices.create(params=params, options={"idempotency_key": key})
        results.append(item | {"price_id": price.id, "status": "replaced" if current else "created"})
    return results


def _matches(price: Any, item: dict[str, Any]) -> bool:
    interval = price.recurring.interval if price.recurring else None
    return (
        price.active
        and price.unit_amount == item["amount"]
        and price.currency == item["currency"]
        and interval == item["interval"]
    )


def write_price_ids(path: Path, results: list[dict[str, Any]]) -> None:
    """Sets `stripe_price_id` in each item's [[plans]] / [[packs]] block of the file, leaving
    every other line (and comment) as it is."""
    text = path.read_text()
    for result in results:
        text = _set_in_block(text, "plans" if result["kind"] == "plan" else "packs", result["id"], result["price_id"])
    path.write_text(text)


def _set_in_block(text: str, table: str, item_id: str, price_id: str) -> str:
    blocks = re.split(r"(?m)^(?=\[\[?[a-z_.]+\]\]?\s*$)", text)
    for index, block in enumerate(blocks):
        if block.startswith(f"[[{table}]]") and re.search(rf'(?m)^id\s*=\s*"{re.escape(item_id)}"\s*$', block):
            line = f'stripe_price_id = "{price_id}"'
            if re.search(r"(?m)^stripe_price_id\s*=", block):
                block = re.sub(r'(?m)^stripe_price_id\s*=\s*"[^"]*"', line, block)
            else:
                block = re.sub(rf'(?m)^(id\s*=\s*"{re.escape(item_id)}"\s*)$', rf"\1\n{line}", block)
            blocks[index] = block
            return "".join(blocks)
    raise ValueError(f"{table} {item_id!r} not found in the catalog file")
