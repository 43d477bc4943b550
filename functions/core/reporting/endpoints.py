"""Balances, history, usage summaries, orders, and the public catalog, prices and health."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Query

from functions.core.deps import AccountHeader, LedgerDep, SignedInDep, resolve_account
from functions.core.errors import ProblemError
from functions.core.money import PRICE_FIELDS, format_micro, minor_to_major
from functions.core.openapi import SIGNED_IN, problem
from functions.core.present import cost_usd, micro_fields, micro_map, pack
from functions.core.reporting.schemas import BalanceAnswer, Catalog, Health, Orders, Prices, Transactions, UsageSummary
from functions.core.schemas import AccountId, Timestamp

router = APIRouter(tags=["balance"])
AccountQuery = Annotated[AccountId | None, Query(description="required with a service key")]


@router.get("/v1/balance", response_model=BalanceAnswer, responses=SIGNED_IN)
def balance(
    caller: SignedInDep, ledger: LedgerDep, account_id: AccountQuery = None, x_account_id: AccountHeader = None
) -> dict:
    answer = ledger.balance(resolve_account(caller, ledger, account_id, x_account_id, "query"))
    answer["balances"] = [micro_fields(line) for line in answer["balances"]]
    return answer


@router.get("/v1/transactions", response_model=Transactions, responses=SIGNED_IN)
def transactions(
    caller: SignedInDep,
    ledger: LedgerDep,
    account_id: AccountQuery = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    # `cursor=` (empty, as a first page's link has it) is no cursor.
    cursor: Annotated[str | None, Query(pattern=r"^([0-9]{1,18})?$")] = None,
    key: Annotated[str | None, Query(max_length=64)] = None,
    x_account_id: AccountHeader = None,
) -> dict:
    target = resolve_account(caller, ledger, account_id, x_account_id, "query")
    answer = ledger.transactions({"account_id": target, "limit": limit, "cursor": cursor or None, "key": key})
    answer["items"] = [micro_fields(item, ("amount", "balance_after")) for item in answer["items"]]
    return answer


@router.get("/v1/usage", response_model=UsageSummary, responses=SIGNED_IN)
def usage_summary(
    caller: SignedInDep,
    ledger: LedgerDep,
    account_id: AccountQuery = None,
    from_: Annotated[Timestamp | None, Query(alias="from")] = None,
    to: Annotated[Timestamp | None, Query()] = None,
    group_by: Annotated[
        str,
        Query(
            pattern=r"^(day|model|feature|agent|user|metadata\.[A-Za-z0-9_-]{1,64})$",
            description="day, model, feature, agent, user, or metadata.<field> (a field of the usage's metadata)",
        ),
    ] = "day",
    x_account_id: AccountHeader = None,
) -> dict:
    target = resolve_account(caller, ledger, account_id, x_account_id, "query")
    answer = ledger.usage_summary(
        {
            "account_id": target,
            "group_by": group_by,
            "from": from_.isoformat() if from_ else None,
            "to": to.isoformat() if to else None,
        }
    )
    for row in [*answer["items"], answer["totals"]]:
        row["cost"] = format_micro(row["cost"])
        row["cost_usd"] = cost_usd(row.pop("cost_pico_usd"))
        row["other_keys"] = micro_map(row.get("other_keys", {}))
    return answer


@router.get("/v1/orders", response_model=Orders, responses=SIGNED_IN)
def orders(
    caller: SignedInDep, ledger: LedgerDep, account_id: AccountQuery = None, x_account_id: AccountHeader = None
) -> dict:
    answer = ledger.orders(resolve_account(caller, ledger, account_id, x_account_id, "query"))
    for order in answer["items"]:
        order["amount"] = minor_to_major(order.pop("amount_minor"), order["currency"])
        order["refunded"] = minor_to_major(order.pop("refunded_minor"), order["currency"])
        order["credits"] = format_micro(order["credits"])
    return answer


@router.get("/v1/catalog", response_model=Catalog)
def catalog(ledger: LedgerDep) -> dict:
    raw = ledger.catalog()
    plans = [
        {
            **p,
            "price": minor_to_major(p["price_minor"], p["currency"]),
            "allowances": micro_map(p["allowances"]),
        }
        for p in raw["plans"]
    ]
    features = []
    for f in raw["features"]:
        pricing = None
        if f["kind"] == "metered":
            pricing = {"mode": f["pricing_mode"]}
            if f["credits_per_unit"] is not None:
                pricing["credits_per_unit"] = format_micro(f["credits_per_unit"])
        features.append({**f, "pricing": pricing})
    return {
        "plans": plans,
        "packs": [{**pack(p), "buys": units_bought(p, raw["features"])} for p in raw["packs"]],
        "features": features,
        "agents": raw["agents"],
        "currency": raw["currency"],
    }


def units_bought(pack: dict, features: list[dict]) -> dict[str, int]:
    """How many units of each per-unit action a pack pays for (its credits and bonus over
    the action's rate): what a pricing page turns into "about 33 hours of VM time"."""
    total = pack["credits"] + pack["bonus_credits"]
    return {
        f["id"]: total // f["credits_per_unit"]
        for f in features
        if f["kind"] == "metered"
        and f["pricing_mode"] == "per_unit"
        and f["credits_per_unit"]
        and f["balance_key"] == pack.get("key", "credits")
    }


def _usd(micro: int | None) -> str | None:
    return format_micro(micro)


@router.get("/v1/prices", response_model=Prices)
def prices(ledger: LedgerDep) -> dict:
    raw = ledger.prices()
    items = [{**p, **{k: _usd(p.get(k)) for k in PRICE_FIELDS}} for p in raw["items"]]
    markup = format((Decimal(raw["markup_bps"]) / 10_000).normalize(), "f")
    return {"items": items, "credits_per_usd": raw["credits_per_usd"], "markup": markup}


@router.get(
    "/v1/health",
    response_model=Health,
    responses={503: problem("database_unavailable: the database is unreachable (`database: unreachable`)")},
)
def health(ledger: LedgerDep):
    try:
        answer = ledger.health()
    except ProblemError as error:
        if error.status != 503:
            raise
        # Like every error, a problem (its `status` is the HTTP one); `database` says which part.
        raise ProblemError(
            error.detail, status=503, code=error.code, title=error.title, database="unreachable"
        ) from None
    return {"status": "ok", "database": "ok", "schema_version": answer.get("schema_version")}
