"""The scheduler function's non-HTTP side: which Lambda events mean "run maintenance",
and running it within the invocation's time.

Mangum only understands HTTP events (API Gateway, ALB, function URLs), so the handler
sorts events first: anything with a requestContext goes to the app, a schedule runs
maintenance, and anything else is refused loudly (an unexpected trigger is a
misconfiguration to see in the logs and the dead-letter queue, not a silent no-op).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI

from functions.core.ledger import build_ledger
from functions.core.maintenance.run import DEFAULT_LIMIT, run_maintenance

logger = logging.getLogger("creditgate.scheduler")
if logger.level == logging.NOTSET:
    # Lambda's root logger stops at WARNING; a run's summary is worth an INFO line.
    logger.setLevel(logging.INFO)

SCHEDULE_SOURCES = {"aws.events", "aws.scheduler"}
# Lambda needs time after the last batch to return; a batch itself is bounded by `limit`.
SAFETY_SECONDS = 10.0
DEFAULT_SECONDS = 60.0


def is_http_event(event: Any) -> bool:
    return isinstance(event, dict) and "requestContext" in event


def scheduled_request(event: Any) -> dict[str, Any] | None:
    """The maintenance request a scheduled event asks for, or None if it is not one.

    Recognised: an EventBridge rule's "Scheduled Event" (source aws.events), EventBridge
    Scheduler with the template's input (source creditgate.scheduler) or with a plain
    payload ({}, {"task": "maintenance"}, {"limit": 200}), and a bare invoke with no payload.
    """
    if event is None or event == {}:
        return {}
    if not isinstance(event, dict):
        return None
    detail = event.get("detail") if isinstance(event.get("detail"), dict) else {}
    source = str(event.get("source", ""))
    scheduled = (
        event.get("detail-type") == "Scheduled Event"
        or source in SCHEDULE_SOURCES
        or source.startswith("creditgate.")
        or "maintenance" in (event.get("task"), detail.get("task"))
        or set(event) <= {"limit"}
    )
    if not scheduled:
        return None
    limit = event.get("limit", detail.get("limit"))
    return {} if limit is None else {"limit": limit}


def handle_scheduled(app: FastAPI, event: Any, context: Any) -> dict[str, Any]:
    request = scheduled_request(event)
    if request is None:
        keys = sorted(event) if isinstance(event, dict) else type(event).__name__
        raise ValueError(f"scheduler: not an HTTP request nor a schedule event (keys: {keys})")
    limit = _limit(request.get("limit"))
    remaining = context.get_remaining_time_in_millis() / 1000 if context is not None else DEFAULT_SECONDS + 10
    seconds = max(remaining - SAFETY_SECONDS, 1.0)
    event_id = event.get("id") if isinstance(event, dict) else None
    try:
        answer = run_maintenance(_ledger(app), app.state.settings, limit=limit, max_batches=1000, seconds=seconds)
    except Exception:
        # Re-raised so Lambda retries the event and then sends it to the dead-letter queue.
        logger.exception("maintenance failed (event %s)", event_id)
        raise
    logger.info("maintenance %s", json.dumps({"event": event_id, **answer}))
    return answer


def _limit(value: Any) -> int:
    if value is None:
        return DEFAULT_LIMIT
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdigit():
        raise ValueError(f"scheduler: limit must be a whole number, got {value!r}")
    if not 1 <= int(value) <= 5000:
        raise ValueError(f"scheduler: limit must be from 1 to 5000, got {value}")
    return int(value)


def _ledger(app: FastAPI):
    # A Lambda instance runs one event at a time, so building it here cannot race.
    if app.state.ledger is None:
        app.state.ledger = build_ledger(app.state.settings)
    return app.state.ledger
