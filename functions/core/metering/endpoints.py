"""Usage: what a call actually used, settled against its reservation or the balance."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import ValidationError

from functions.core.denials import count_denial
from functions.core.deps import LedgerDep, ServiceDep
from functions.core.errors import ProblemError, ledger_problem
from functions.core.metering.schemas import BatchAnswer, BatchRequest, UsageAnswer, UsageRequest
from functions.core.openapi import IDEMPOTENT, SIGNED_IN
from functions.core.present import cost_usd, micro_fields

router = APIRouter(tags=["usage"], responses=SIGNED_IN)


def present_usage(answer: dict) -> dict:
    out = micro_fields(answer, ("cost",))
    out["cost_usd"] = cost_usd(out.pop("cost_pico_usd", 0))
    if out.get("balance"):
        out["balance"] = micro_fields(out["balance"], ("available", "debt"))
    if out.get("reservation"):
        out["reservation"] = micro_fields(out["reservation"], ("released",))
    out.setdefault("replayed", False)
    return out


@router.post(
    "/v1/usage",
    status_code=201,
    response_model=UsageAnswer,
    responses={
        200: {"model": UsageAnswer, "description": "a replay: the first answer, `replayed: true`"},
        **IDEMPOTENT,
    },
)
def record_usage(body: UsageRequest, caller: ServiceDep, ledger: LedgerDep, response: Response) -> dict:
    try:
        answer = present_usage(ledger.record_usage(body.to_rpc()))
    except ProblemError as denial:
        count_denial(ledger, denial)  # unknown_model: a call that happened and went uncharged
        raise
    if answer["replayed"]:
        response.status_code = 200
    return answer


def _problem(status: int, code: str, detail: dict) -> dict:
    """One event's problem, shaped and titled as the same error of POST /v1/usage is."""
    fields = dict(detail)
    text = fields.pop("detail", None)
    body = ledger_problem(status, code, fields).body()
    if text:
        body["detail"] = text
    return body


@router.post("/v1/usage/batch", response_model=BatchAnswer)
def record_usage_batch(body: BatchRequest, caller: ServiceDep, ledger: LedgerDep) -> dict:
    """Events are independent: a bad one gets its own problem and the rest are recorded."""
    results: list[dict | None] = [None] * len(body.events)
    valid: list[tuple[int, dict]] = []
    for index, event in enumerate(body.events):
        try:
            valid.append((index, UsageRequest.model_validate(event).to_rpc()))
        except ValidationError as error:
            errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in error.errors()]
            results[index] = _problem(422, "invalid_request", {"detail": errors[0]["msg"], "errors": errors})
    if valid:
        answers = ledger.record_usage_batch([event for _, event in valid])
        for (index, _), answer in zip(valid, answers, strict=True):
            if "error" in answer:
                error = answer["error"]
                results[index] = _problem(error["status"], error["code"], error.get("detail") or {})
            else:
                results[index] = present_usage(answer)
    return {"results": results}
