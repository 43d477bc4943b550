"""POST (and GET, which Vercel cron sends) /v1/cron/maintenance, guarded by CRON_SECRET."""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query

from functions.core.deps import LedgerDep, SettingsDep
from functions.core.errors import ServiceUnavailable, Unauthenticated
from functions.core.maintenance.run import DEFAULT_LIMIT, run_maintenance
from functions.core.maintenance.schemas import MaintenanceAnswer
from functions.core.openapi import problem

router = APIRouter(
    tags=["maintenance"],
    responses={
        401: problem("unauthenticated: not Authorization: Bearer <CRON_SECRET>"),
        503: problem("cron_not_configured: CRON_SECRET is not set"),
    },
)


def require_cron_secret(settings: SettingsDep, authorization: Annotated[str | None, Header()] = None) -> None:
    if not settings.cron_secret:
        raise ServiceUnavailable(
            "CRON_SECRET is not set, so maintenance cannot be triggered over HTTP", code="cron_not_configured"
        )
    scheme, _, token = (authorization or "").partition(" ")
    # Digests of equal length, so the comparison time says nothing about the secret's length.
    offered = hashlib.sha256(token.strip().encode()).digest()
    expected = hashlib.sha256(settings.cron_secret.encode()).digest()
    if not (hmac.compare_digest(offered, expected) and scheme.lower() == "bearer"):
        raise Unauthenticated("Send Authorization: Bearer <CRON_SECRET>")


CronDep = Annotated[None, Depends(require_cron_secret)]
Limit = Annotated[int, Query(ge=1, le=5000, description="accounts per batch")]
Batches = Annotated[int, Query(ge=1, le=100, description="batches at most in this call")]
DESCRIPTION = (
    "Grants due period allowances, expires ended allowances and stale reservations, deletes expired "
    "guest sessions and records threshold notices, in bounded batches; `more` says work is left. "
    "With CREDITGATE_NOTICES_WEBHOOK_URL set, the notices are then posted there, signed."
)


@router.post("/v1/cron/maintenance", response_model=MaintenanceAnswer, description=DESCRIPTION)
def post_maintenance(
    _: CronDep, ledger: LedgerDep, settings: SettingsDep, limit: Limit = DEFAULT_LIMIT, max_batches: Batches = 10
) -> dict:
    # Under API Gateway's 30 s and Vercel's function limit, with room for the last batch.
    return run_maintenance(ledger, settings, limit=limit, max_batches=max_batches, seconds=20.0)


@router.get("/v1/cron/maintenance", response_model=MaintenanceAnswer, description=DESCRIPTION)
def get_maintenance(
    _: CronDep, ledger: LedgerDep, settings: SettingsDep, limit: Limit = DEFAULT_LIMIT, max_batches: Batches = 10
) -> dict:
    return run_maintenance(ledger, settings, limit=limit, max_batches=max_batches, seconds=20.0)
