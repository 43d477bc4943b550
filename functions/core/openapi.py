"""What /openapi.json says about errors: every one is RFC 9457 problem+json (API.md), so the
document shows them with that media type and one `Problem` schema, not FastAPI's default
`HTTPValidationError` under application/json."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from functions.core.errors import PROBLEM_JSON


class Problem(BaseModel):
    """An error answer. Fields of the case (`errors`, `allowed`, `required`, `packs`,
    `upgrade_to`, `retry_after`, …) come beside the five that are always there."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    code: str = Field(description="stable snake_case code, e.g. invalid_request, account_not_found")
    errors: list[dict[str, Any]] | None = Field(None, description="invalid_request: the failing fields")


def problem(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description}


# Every route: its input may be refused, and a bug is still a problem.
EVERY_ROUTE = {
    422: problem("invalid_request (or unknown_feature / unknown_model / unknown_plan / unknown_pack); nothing changed"),
    500: problem("internal_error: a bug, logged"),
    503: problem("database_unavailable / database_misconfigured"),
}
# Routes behind a credential.
SIGNED_IN = {
    401: problem("unauthenticated: missing or invalid credential"),
    403: problem("forbidden: a valid credential without the right"),
    404: problem("account_not_found (or reservation_not_found)"),
}
# Routes that take an idempotency key.
IDEMPOTENT = {409: problem("idempotency_conflict: the key was used with another body")}


def problem_media_types(schema: dict[str, Any]) -> dict[str, Any]:
    """Error responses are served as application/problem+json: say so in the document."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content")
                if status[:1] in "45" and content and "application/json" in content:
                    content[PROBLEM_JSON] = content.pop("application/json")
    for unused in ("HTTPValidationError", "ValidationError"):
        schema.get("components", {}).get("schemas", {}).pop(unused, None)
    return schema
