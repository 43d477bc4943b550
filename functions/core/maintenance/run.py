"""Runs maintenance batches until the work is done, a batch cap is reached, or the time
budget is spent. Each batch is one RPC and one transaction, so the account locks a
batch holds are released before the next one starts. Then, when a webhook is configured,
the recorded notices go out in what is left of the budget."""

from __future__ import annotations

import logging
import time
from typing import Any

from functions.core.ledger import Ledger
from functions.core.maintenance.notify import deliver_notices
from functions.core.settings import Settings

COUNTS = ("allowances_granted", "grants_expired", "reservations_expired", "guest_sessions_deleted", "notices")
# Work a batch did that the counts above do not show.
PROGRESS = ("accounts", "usage_lines_checked")
DEFAULT_LIMIT = 500

logger = logging.getLogger("creditgate.maintenance")


def run_maintenance(
    ledger: Ledger,
    settings: Settings | None = None,
    *,
    limit: int = DEFAULT_LIMIT,
    max_batches: int = 10,
    seconds: float = 20.0,
) -> dict[str, Any]:
    totals: dict[str, Any] = dict.fromkeys((*COUNTS, *PROGRESS), 0) | {"batches": 0, "more": True}
    started = time.monotonic()
    slowest = 0.0
    while totals["more"] and totals["batches"] < max_batches:
        batch_started = time.monotonic()
        answer = ledger.run_maintenance({"limit": limit})
        slowest = max(slowest, time.monotonic() - batch_started)
        for name in (*COUNTS, *PROGRESS):
            totals[name] += answer.get(name, 0)
        totals["batches"] += 1
        totals["more"] = bool(answer["more"])
        # A batch that found nothing it could take means the rest is held by another run
        # (or a long call): looping would only spin.
        if not any(answer.get(name) for name in (*COUNTS, *PROGRESS)):
            break
        # Stop before a batch as slow as the slowest so far would overrun the budget.
        if time.monotonic() - started + slowest > seconds:
            break
    # The operator's alerts of the day, recorded once (they go out with the notices).
    totals["alerts"] = ledger.rpc("creditgate_record_operator_alerts", {})["alerts"]
    if settings is not None:
        totals |= dict.fromkeys(("notices_delivered", "notices_failed"), 0)
        try:
            totals |= deliver_notices(ledger, settings, seconds=seconds - (time.monotonic() - started))
        except Exception:
            # Maintenance itself is committed; a notice not sent now is still due next run.
            logger.exception("notice delivery failed")
    return totals
