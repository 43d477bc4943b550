"""Counts the denials the operator is alerted about (sql/113_denial_alerts.sql). A denial
rolls its RPC back, so nothing in the database saw it; it is reported afterwards, on the
denial path only, and never at the cost of the answer the caller gets."""

from __future__ import annotations

import logging

from functions.core.errors import ProblemError
from functions.core.ledger import Ledger

# Running short (the `denials` alert) and a model without a price (`unpriced_model`).
# Plan access, rate limits and guests' limits are answers working as intended.
COUNTED = frozenset({"insufficient_credits", "debt_outstanding", "quota_exhausted", "unknown_model"})

logger = logging.getLogger("creditgate.denials")


def count_denial(ledger: Ledger, denial: ProblemError) -> None:
    if denial.code not in COUNTED:
        return
    request = {"code": denial.code}
    if denial.code == "unknown_model" and isinstance(denial.fields.get("model"), str):
        request["model"] = denial.fields["model"]
    try:
        ledger.rpc("creditgate_record_denial", request)
    except Exception:
        # An alert missed is better than a denial turned into a 500 or a 503.
        logger.exception("could not count a %s denial", denial.code)
