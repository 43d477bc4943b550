"""One error hierarchy: every error knows its status and renders one problem+json shape."""

from __future__ import annotations

import logging
from typing import Any

PROBLEM_JSON = "application/problem+json"


class ProblemError(Exception):
    status: int = 500
    code: str = "internal_error"
    title: str = "Internal error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        status: int | None = None,
        code: str | None = None,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **fields: Any,
    ) -> None:
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        if title is not None:
            self.title = title
        self.detail = detail or self.title
        self.fields = fields
        self.headers = headers or {}
        super().__init__(self.detail)

    def body(self) -> dict[str, Any]:
        return {
            "type": f"https://creditgate.dev/problems/{self.code.replace('_', '-')}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
            **self.fields,
        }


class InvalidRequest(ProblemError):
    status, code, title = 422, "invalid_request", "Invalid request"


class Unauthenticated(ProblemError):
    status, code, title = 401, "unauthenticated", "Missing or invalid credentials"

    def __init__(self, detail: str | None = None, **fields: Any) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"}, **fields)


class Forbidden(ProblemError):
    status, code, title = 403, "forbidden", "Not allowed"


class NotFound(ProblemError):
    status, code, title = 404, "not_found", "Not found"


class PayloadTooLarge(ProblemError):
    status, code, title = 413, "payload_too_large", "Request body too large"


class ServiceUnavailable(ProblemError):
    status, code, title = 503, "service_unavailable", "Service unavailable"


# Values the database could not take from the request: text where a number belongs, a
# number or date out of range, a NUL character, text too long. Other data errors (a
# division by zero) and CHECK violations (the ledger's own invariants) stay bugs: 500.
BAD_VALUE_STATES = frozenset(
    {"22P02", "22003", "22007", "22008", "22009", "22015", "22021", "22001", "22P05", "22004", "2202E"}
)


def data_problem(sqlstate: str, message: str | None) -> ProblemError | None:
    """A value the database could not take from the caller is bad input, not a fault: 422.
    The RPC's transaction rolled back, so nothing changed."""
    if sqlstate in BAD_VALUE_STATES:
        # Logged: the request schemas should have refused it, so each one is a gap to close.
        logging.getLogger("creditgate").warning("database refused a value (%s): %s", sqlstate, message)
        return InvalidRequest(f"A value in the request cannot be stored: {message or sqlstate}")
    return None


# Titles of the codes the ledger raises, so every answer with one code reads the same.
LEDGER_TITLES = {
    "account_not_found": "Account not found",
    "reservation_not_found": "Reservation not found",
    "unknown_feature": "Unknown feature",
    "unknown_agent": "Unknown agent",
    "unknown_model": "Unknown model: it has no price, so it cannot be charged",
    "unknown_plan": "Unknown plan",
    "unknown_pack": "Unknown pack",
    "insufficient_credits": "Insufficient credits",
    "debt_outstanding": "Outstanding debt must be paid first",
    "quota_exhausted": "Quota used up for this period",
    "feature_not_in_plan": "Feature not included in the plan",
    "agent_not_in_plan": "Agent not included in the plan",
    "account_disputed": "Account on hold while a payment dispute is open",
    "rate_limited": "Rate limit reached",
    "guest_limit_reached": "Guest limit reached",
    "idempotency_conflict": "Idempotency key reused with a different request",
    "reservation_settled": "Reservation already settled",
    "reservation_feature_mismatch": "Usage does not match the reservation's balance",
    "feature_not_metered": "Feature is not metered",
    "invalid_request": "Invalid request",
}


def ledger_problem(status: int, code: str, detail: dict[str, Any]) -> ProblemError:
    """The problem for an error raised inside an RPC (SQLSTATE PTxxx, message = code)."""
    from functions.core.present import denial

    detail = denial(detail)
    headers = {}
    if "retry_after" in detail:
        headers["Retry-After"] = str(detail["retry_after"])
    title = LEDGER_TITLES.get(code, code.replace("_", " ").capitalize())
    return ProblemError(title, status=status, code=code, title=title, headers=headers, **detail)
