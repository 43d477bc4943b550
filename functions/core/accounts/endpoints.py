"""Accounts for the app's backend: create, look up, members, plan changes, grants, debits,
allowances, holds and history. The admin function serves the operator's analytics too."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Header, Path, Query, Response

from functions.core.accounts.schemas import (
    AccountAnswer,
    AccountDetails,
    AccountHistory,
    AccountList,
    AccountPut,
    AllowancesAnswer,
    AllowancesPut,
    DebitAnswer,
    DebitPost,
    GrantAnswer,
    GrantPost,
    HoldLift,
    MemberAnswer,
    MemberPut,
    MemberRemoved,
    PlanPut,
)
from functions.core.deps import LedgerDep, ServiceDep
from functions.core.openapi import IDEMPOTENT, SIGNED_IN
from functions.core.present import micro_fields, micro_map, movement
from functions.core.schemas import ACCOUNT_ID, AccountId, IdempotencyKey, Slug

router = APIRouter(tags=["admin"], responses=SIGNED_IN)
AccountPath = Annotated[AccountId, Path()]


def present_account(answer: dict) -> dict:
    answer["balances"] = [micro_fields(b, ("available", "reserved", "debt")) for b in answer["balances"]]
    return answer


@router.put(
    "/v1/accounts/{account_id}",
    response_model=AccountAnswer,
    status_code=200,
    responses={201: {"model": AccountAnswer, "description": "created"}},
)
def put_account(
    account_id: AccountPath, body: AccountPut, caller: ServiceDep, ledger: LedgerDep, response: Response
) -> dict:
    answer = ledger.ensure_account({"account_id": account_id, **body.model_dump(exclude_none=True)})
    response.status_code = 201 if answer["created"] else 200
    return present_account(answer)


@router.get("/v1/accounts", response_model=AccountList)
def list_accounts(
    caller: ServiceDep,
    ledger: LedgerDep,
    email: Annotated[str | None, Query(max_length=320)] = None,
    plan: Annotated[Slug | None, Query()] = None,
    status: Annotated[Literal["active", "disputed"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(pattern=f"^({ACCOUNT_ID.pattern})?$")] = None,
) -> dict:
    """Support's lookup: accounts by email (any case), plan or status, in id order, a page at a time."""
    request = {"email": email, "plan": plan, "status": status, "limit": limit, "cursor": cursor or None}
    return ledger.list_accounts({k: v for k, v in request.items() if v is not None})


@router.get("/v1/accounts/{account_id}", response_model=AccountDetails)
def get_account(account_id: AccountPath, caller: ServiceDep, ledger: LedgerDep) -> dict:
    return present_account(ledger.get_account(account_id))


@router.put("/v1/accounts/{account_id}/members/{user_id}", response_model=MemberAnswer)
def put_member(
    account_id: AccountPath, user_id: AccountPath, body: MemberPut, caller: ServiceDep, ledger: LedgerDep
) -> dict:
    return ledger.set_member({"account_id": account_id, "user_id": user_id, "role": body.role})


@router.delete("/v1/accounts/{account_id}/members/{user_id}", response_model=MemberRemoved)
def delete_member(account_id: AccountPath, user_id: AccountPath, caller: ServiceDep, ledger: LedgerDep) -> dict:
    """Removing someone who is not a member is a no-op (`removed: false`)."""
    return ledger.remove_member({"account_id": account_id, "user_id": user_id})


@router.put("/v1/accounts/{account_id}/plan", response_model=AccountAnswer)
def put_plan(account_id: AccountPath, body: PlanPut, caller: ServiceDep, ledger: LedgerDep) -> dict:
    return present_account(ledger.change_plan({"account_id": account_id, "plan": body.plan}))


@router.post(
    "/v1/accounts/{account_id}/grants",
    response_model=GrantAnswer,
    status_code=201,
    responses={200: {"model": GrantAnswer, "description": "a replay: the first answer, replayed: true"}, **IDEMPOTENT},
)
def post_grant(
    account_id: AccountPath,
    body: GrantPost,
    caller: ServiceDep,
    ledger: LedgerDep,
    idempotency_key: Annotated[IdempotencyKey, Header(alias="Idempotency-Key")],
    response: Response,
) -> dict:
    request = {
        "account_id": account_id,
        "idempotency_key": idempotency_key,
        **body.model_dump(mode="json", exclude_none=True),
    }
    request["amount"] = body.amount
    answer = ledger.grant_credits(request)
    if answer.get("replayed"):
        response.status_code = 200
    return movement(answer)


@router.post(
    "/v1/accounts/{account_id}/debits",
    response_model=DebitAnswer,
    status_code=201,
    responses={200: {"model": DebitAnswer, "description": "a replay: the first answer, replayed: true"}, **IDEMPOTENT},
)
def post_debit(
    account_id: AccountPath,
    body: DebitPost,
    caller: ServiceDep,
    ledger: LedgerDep,
    idempotency_key: Annotated[IdempotencyKey, Header(alias="Idempotency-Key")],
    response: Response,
) -> dict:
    """Takes credits away (an `adjustment` line): what is available pays, the rest is debt."""
    # The amount in micro-credits (the model's dump would render it as a decimal string).
    request = {"account_id": account_id, "idempotency_key": idempotency_key, **body.model_dump(), "amount": body.amount}
    answer = ledger.debit(request)
    if answer.get("replayed"):
        response.status_code = 200
    return movement(answer, ("amount", "debt_added"))


@router.put("/v1/accounts/{account_id}/allowances", response_model=AllowancesAnswer)
def put_allowances(account_id: AccountPath, body: AllowancesPut, caller: ServiceDep, ledger: LedgerDep) -> dict:
    """Custom limits for one customer: per key, what each period grants instead of the
    plan's. The body replaces the account's whole set of overrides (keys left out go back
    to the plan's; null clears them all). From the next period; a raise also tops up this
    one now. A plan change clears them."""
    answer = ledger.set_allowances({"account_id": account_id, "allowances": body.allowances, "reason": body.reason})
    present_account(answer)
    for field in ("allowance_overrides", "allowances"):
        if answer[field] is not None:
            answer[field] = micro_map(answer[field])
    return answer


@router.post("/v1/accounts/{account_id}/lift-hold", response_model=AccountAnswer)
def lift_hold(account_id: AccountPath, body: HoldLift, caller: ServiceDep, ledger: LedgerDep) -> dict:
    """An account a payment dispute put on hold is active again (the operator's decision)."""
    return present_account(ledger.lift_hold({"account_id": account_id, "reason": body.reason}))


@router.get("/v1/accounts/{account_id}/history", response_model=AccountHistory)
def history(account_id: AccountPath, caller: ServiceDep, ledger: LedgerDep) -> dict:
    """Every plan and status change of the account, newest first (the last 200)."""
    return ledger.account_history(account_id)
