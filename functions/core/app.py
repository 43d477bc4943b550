"""Builds each function's FastAPI app: problem+json for every error, a body-size cap,
CORS for the configured origins, and the Mangum handler for Lambda."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from functions.core.errors import PROBLEM_JSON, InvalidRequest, PayloadTooLarge, ProblemError
from functions.core.openapi import EVERY_ROUTE, problem_media_types
from functions.core.settings import Settings, get_settings

logger = logging.getLogger("creditgate")
VERSION = "0.1.0"

HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def problem_response(error: ProblemError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, media_type=PROBLEM_JSON, headers=error.headers)


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Only what is safe to echo: pydantic's ctx may hold exception objects.
    return [{"loc": list(e.get("loc", [])), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()]


class BodyLimit:
    """Refuses bodies over the limit before anything parses them, declared or streamed: a
    streamed body is read here (up to the limit) and handed on whole, because an error
    raised while the framework reads it would become its 400."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = PayloadTooLarge(f"Bodies are limited to {self.max_bytes} bytes")
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await problem_response(too_large)(scope, receive, send)
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: let the app see it
                return await self.app(scope, _replay([message], receive), send)
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > self.max_bytes:
                return await problem_response(too_large)(scope, receive, send)
            if not message.get("more_body"):
                break
        whole = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        return await self.app(scope, _replay([whole], receive), send)


def _replay(messages: list[dict], receive: Any) -> Any:
    """A receive() that hands out what was already read, then goes on with the real one."""

    async def replayed():
        return messages.pop(0) if messages else await receive()

    return replayed


def create_app(name: str, *routers: Any, settings: Settings | None = None, ledger: Any = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title=f"creditgate — {name}",
        version=VERSION,
        description="Credits, plans and metering for AI products. Errors are RFC 9457 problem+json.",
        responses=EVERY_ROUTE,
    )
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = problem_media_types(default_openapi())
        return app.openapi_schema

    app.openapi = openapi
    app.state.settings = settings
    app.state.ledger = ledger

    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _validation_errors(exc)
        first = errors[0] if errors else {"loc": [], "msg": "invalid"}
        where = ".".join(str(p) for p in first["loc"][1:]) or "body"
        return problem_response(InvalidRequest(f"{where}: {first['msg']}", errors=errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
            # FastAPI's answer when the JSON parser itself gives up (nesting too deep for it):
            # malformed input, which API.md answers with 422.
            return problem_response(InvalidRequest("Body is not JSON that can be read"))
        code = HTTP_CODES.get(exc.status_code, "http_error")
        return problem_response(
            ProblemError(
                str(exc.detail),
                status=exc.status_code,
                code=code,
                title=str(exc.detail),
                headers=dict(exc.headers or {}),
            )
        )

    @app.exception_handler(json.JSONDecodeError)
    async def _bad_json(request: Request, exc: json.JSONDecodeError) -> JSONResponse:
        return problem_response(InvalidRequest(f"Body is not valid JSON: {exc.msg}"))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        # Mangum would swallow it into a bare 500: log it with what the request was.
        logger.exception("unhandled error in %s %s %s", name, request.method, request.url.path)
        return problem_response(ProblemError("An unexpected error occurred; it has been logged"))

    for router in routers:
        app.include_router(router)
    if settings.allowed_origin_list:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.allowed_origin_list,
            allow_credentials=True,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    return app


def lambda_handler(app: FastAPI):
    """Mangum for API Gateway / function-URL events. Lifespan is off: clients are built
    at import, which is Lambda's init phase."""
    from mangum import Mangum
    from mangum.adapter import DEFAULT_TEXT_MIME_TYPES

    # problem+json is text: keep it readable in API Gateway logs instead of base64.
    return Mangum(app, lifespan="off", text_mime_types=[*DEFAULT_TEXT_MIME_TYPES, "application/problem+json"])
