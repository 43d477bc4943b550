"""Posts recorded threshold notices to the app's webhook, so it can tell its users (75 / 90 /
100 % of an allowance, low balance), and the operator's alerts (`type: "alert.…"`: a day's
provider cost over its threshold, guest abuse from one IP, a model refused for having no
price, a day's denials over their threshold). At least once: the notices are leased in SQL,
each is one signed POST, and only the ones the app answered 2xx are marked delivered. A
failed one comes back when its lease ends (5 min, doubling, at most a day; ten attempts);
the run stops at the first failure, and what it leased and did not try is due again at once.

Each request carries `Creditgate-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
"<t>.<body>" keyed with CREDITGATE_NOTICES_WEBHOOK_SECRET>` and `Creditgate-Notice-Id`; the
app checks the signature and the age of `t`, and drops an id it has seen."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from typing import Any

from functions.core.ledger import Ledger
from functions.core.present import micro_fields
from functions.core.settings import Settings

logger = logging.getLogger("creditgate.notices")

BATCH = 100
# Per phase of one POST (httpx has no overall limit); a POST starts only while the budget
# still holds a whole one, so a run ends within its budget.
TIMEOUT = {"connect": 2.0, "read": 3.0, "write": 2.0, "pool": 1.0}
LONGEST_POST = sum(TIMEOUT.values())


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def deliver_notices(ledger: Ledger, settings: Settings, *, seconds: float = 10.0) -> dict[str, int]:
    """Delivers due notices until none are left, the app fails, or `seconds` are spent."""
    counts = {"notices_delivered": 0, "notices_failed": 0}
    if not settings.notices_webhook_url:
        return counts
    import httpx  # only the scheduler posts, and only when a webhook is configured

    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=httpx.Timeout(**TIMEOUT), follow_redirects=False) as client:
        while deadline - time.monotonic() >= LONGEST_POST:
            notices = ledger.lease_notices(BATCH)
            delivered: list[int] = []
            failed: list[int] = []
            for notice in notices:
                if deadline - time.monotonic() < LONGEST_POST:
                    break
                (delivered if _post(client, settings, notice) else failed).append(notice["id"])
                if failed:
                    break  # the app is failing: its backoff, not this loop, decides when to retry
            untried = [n["id"] for n in notices[len(delivered) + len(failed) :]]  # posted in order
            if notices:
                ledger.settle_notices(delivered, failed, untried)
            counts["notices_delivered"] += len(delivered)
            counts["notices_failed"] += len(failed)
            if len(notices) < BATCH or untried:
                break
    return counts


def _post(client: Any, settings: Settings, notice: dict) -> bool:
    import httpx

    # Amounts as the API shows them: decimal strings of the balance's unit.
    if notice.get("balance"):
        notice = notice | {"balance": micro_fields(notice["balance"])}
    body = json.dumps(notice, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        "Creditgate-Notice-Id": str(notice["id"]),
        "Creditgate-Signature": sign(settings.notices_webhook_secret or "", int(time.time()), body),
    }
    try:
        answer = client.post(settings.notices_webhook_url, content=body, headers=headers)
    except (httpx.HTTPError, httpx.InvalidURL) as error:
        logger.warning("notice %s not delivered: %s", notice["id"], type(error).__name__)
        return False
    if 200 <= answer.status_code < 300:
        return True
    logger.warning("notice %s not delivered: the webhook answered %s", notice["id"], answer.status_code)
    return False
