"""Gate: may this caller do this now? Plus entitlements and reservation release."""

from __future__ import annotations

import logging
from typing import Annotated
from uuid import UUID, uuid4

from fastapi import APIRouter, Query

from functions.core.denials import count_denial
from functions.core.deps import AccountHeader, CallerDep, LedgerDep, ServiceDep, SettingsDep, resolve_account
from functions.core.errors import InvalidRequest, ProblemError
from functions.core.gating.schemas import Entitlements, GateAllowed, GateDenied, GateRequest, ReleaseAnswer
from functions.core.money import format_micro
from functions.core.openapi import IDEMPOTENT, SIGNED_IN, problem
from functions.core.present import micro_fields
from functions.core.schemas import AccountId

router = APIRouter(tags=["gate"], responses=SIGNED_IN)
logger = logging.getLogger("creditgate.gate")
DENIALS = {
    402: {
        "model": GateDenied,
        "description": "insufficient_credits / debt_outstanding (packs help) / quota_exhausted (a plan's "
        "requests, tokens or other quota: upgrade_to, resets_at, and packs of that key if any)",
    },
    403: {"model": GateDenied, "description": "feature_not_in_plan / agent_not_in_plan"},
    429: {"model": GateDenied, "description": "rate_limited / guest_limit_reached"},
}


def present_gate(answer: dict) -> dict:
    out = micro_fields(answer, ("cost_estimate", "charged"))
    if out.get("reservation"):
        out["reservation"] = micro_fields(out["reservation"], ("amount",))
    if out.get("balance"):
        out["balance"] = micro_fields(out["balance"], ("available",))
    if out.get("usage_id") is None:
        out.pop("usage_id", None)
    return out


@router.post(
    "/v1/gate", response_model=GateAllowed, responses={**DENIALS, **IDEMPOTENT}, response_model_exclude_none=False
)
def gate(
    body: GateRequest, caller: CallerDep, ledger: LedgerDep, settings: SettingsDep, x_account_id: AccountHeader = None
) -> dict:
    request = body.model_dump(exclude_none=True)
    if request["mode"] != "check" and not body.idempotency_key and caller.kind != "guest":
        raise InvalidRequest(
            f"idempotency_key is required for mode {request['mode']!r}",
            errors=[{"loc": ["body", "idempotency_key"], "msg": "Field required", "type": "missing"}],
        )
    if caller.kind == "guest":
        # A guest's gate call is an exchange: unless the app asks only to check, it counts.
        if not body._mode_given:
            request.update(mode="commit", idempotency_key=body.idempotency_key or uuid4().hex)
        request.pop("account_id", None)
        request.pop("user_id", None)
        request.update(session_id=caller.session_id, client_ip=caller.client_ip)
    else:
        request["account_id"] = resolve_account(caller, ledger, body.account_id, x_account_id)
        if caller.kind == "user":
            request["user_id"] = caller.user_id
    try:
        answer = ledger.gate(request)
    except ProblemError as denial:
        # Before the emergency switch: what it lets through still counts as a denial.
        count_denial(ledger, denial)
        if settings.enforcement != "monitor" or caller.kind == "guest" or denial.code not in NOT_ENFORCED:
            raise
        return not_enforced(denial, request, ledger)
    # A guest's answer is the anonymous plan's and names no model of its own: the one asked for.
    answer.setdefault("model", request.get("model"))
    return present_gate(answer)


# What the emergency switch lets through: running short of credits or quota. Plan access,
# rate limits, a disputed account and guests' limits stay enforced.
NOT_ENFORCED = frozenset({"insufficient_credits", "debt_outstanding", "quota_exhausted"})


def not_enforced(denial: ProblemError, request: dict, ledger: LedgerDep) -> dict:
    """The emergency switch (CREDITGATE_ENFORCEMENT=monitor): allowed, with the denial it
    would have been. Nothing is reserved; a commit is recorded as the usage it charges (so
    it becomes debt where credits are short); after a reserve, record the usage by account."""
    logger.warning(
        "not enforced: %s for account %s, feature %s", denial.code, request.get("account_id"), request["feature"]
    )
    charged = usage_id = None
    if request["mode"] == "commit":
        estimate = request.get("estimate") or {}
        usage = {
            "account_id": request["account_id"],
            "feature": request["feature"],
            "idempotency_key": request["idempotency_key"],
            **{k: request[k] for k in ("agent", "model", "provider", "user_id") if request.get(k)},
        }
        if "quantity" in estimate:
            usage["quantity"] = estimate["quantity"]
        else:
            usage["usage"] = {
                "input_tokens": estimate.get("input_tokens", 0),
                "output_tokens": estimate.get("max_output_tokens", 0),
            }
        recorded = ledger.record_usage(usage)
        charged, usage_id = format_micro(recorded["cost"]), recorded["usage_id"]
    # The plan and balance an allowed answer names: a second read, paid only on this path.
    account = ledger.entitlements(request["account_id"])
    feature = account["features"].get(request["feature"]) or {}
    balance = None
    if feature.get("balance_key") and isinstance(feature.get("available"), int):
        balance = {"key": feature["balance_key"], "available": format_micro(feature["available"])}
    return {
        "allowed": True,
        "account_id": request.get("account_id"),
        "plan": account["plan"]["id"],
        "feature": request["feature"],
        "agent": request.get("agent"),
        "model": request.get("model"),
        "mode": request["mode"],
        "cost_estimate": denial.fields.get("required") or "0",
        "reservation": None,
        "charged": charged,
        "usage_id": usage_id,
        "balance": balance,
        "warnings": ["not_enforced"],
        "not_enforced": denial.body(),
    }


# Optional fields (reason, upgrade_to, …) are left out where they do not apply, as API.md shows them.
@router.get("/v1/entitlements", response_model=Entitlements, response_model_exclude_none=True)
def entitlements(
    caller: CallerDep,
    ledger: LedgerDep,
    settings: SettingsDep,
    account_id: Annotated[AccountId | None, Query()] = None,
    x_account_id: AccountHeader = None,
) -> dict:
    if caller.kind == "guest":
        answer = ledger.entitlements(None, caller.session_id, caller.client_ip)
    else:
        answer = ledger.entitlements(resolve_account(caller, ledger, account_id, x_account_id, "query"))
    for item in answer["features"].values():
        if isinstance(item.get("available"), int):
            item["available"] = micro_fields(item, ("available",))["available"]
    if settings.enforcement == "monitor" and caller.kind != "guest":
        # What the gate lets through is not drawn locked: allowed, saying what it would be.
        for item in (*answer["features"].values(), *answer["agents"].values()):
            if item.get("reason") in NOT_ENFORCED:
                item.update(allowed=True, not_enforced=item.pop("reason"))
    return answer


@router.post(
    "/v1/reservations/{reservation_id}/release",
    response_model=ReleaseAnswer,
    responses={409: problem("reservation_settled: usage already settled it")},
)
def release(reservation_id: UUID, caller: ServiceDep, ledger: LedgerDep) -> dict:
    answer = ledger.release_reservation({"reservation_id": str(reservation_id)})
    return micro_fields(answer, ("released",))
