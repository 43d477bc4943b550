"""The operator's analytics (service key), served by the admin function."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from functions.core.analytics.schemas import Metrics
from functions.core.deps import LedgerDep, ServiceDep
from functions.core.openapi import SIGNED_IN
from functions.core.present import cost_usd, micro_fields, micro_map

router = APIRouter(tags=["admin"], responses=SIGNED_IN)


@router.get("/v1/admin/metrics", response_model=Metrics)
def metrics(caller: ServiceDep, ledger: LedgerDep, days: Annotated[int, Query(ge=1, le=366)] = 30) -> dict:
    """Operator analytics over the last `days` days: usage, revenue, the funnel, top lists and `kpis`
    (MRR/ARR, churn, conversion, margin, tokens per account per plan)."""
    answer = ledger.metrics(days)
    for day in answer["daily"]:
        day["cost"] = micro_fields(day, ("cost",))["cost"]
        day["cost_usd"] = cost_usd(day.pop("cost_pico_usd"))
    for row in answer["accounts_over_80_percent"]:
        row.update(micro_fields(row, ("used", "allowance")))
    for row in answer["top_models"]:
        row["cost_usd"] = cost_usd(row.pop("cost_pico_usd"))
    for row in answer["top_agents"] + answer["top_features"] + answer["top_accounts"]:
        row["cost"] = micro_fields(row, ("cost",))["cost"]
    for row in answer["top_accounts"]:
        row["cost_usd"] = cost_usd(row.pop("cost_pico_usd"))
    for row in answer["top_accounts"] + answer["top_features"]:
        row["other_keys"] = micro_map(row["other_keys"])
    answer["kpis"]["cost_usd"] = cost_usd(answer["kpis"].pop("cost_pico_usd"))
    answer["kpis"]["guest_cost_usd"] = cost_usd(answer["kpis"].pop("guest_cost_pico_usd"))
    return answer
