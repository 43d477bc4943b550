"""Lambda events as AWS sends them: API Gateway HTTP API (payload format 2.0),
EventBridge scheduled events, and a Lambda context."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any
from urllib.parse import parse_qsl

API_ID = "a1b2c3d4e5"
REGION = "eu-west-1"
ACCOUNT = "123456789012"


def http_event(
    method: str,
    path: str,
    *,
    body: Any = None,
    base64_body: bool = False,
    headers: dict[str, str] | None = None,
    query: str = "",
) -> dict[str, Any]:
    """An HTTP API v2 event. Header names arrive lower-cased; a binary or non-text body
    arrives base64-encoded with isBase64Encoded true."""
    raw = b"" if body is None else json.dumps(body).encode()
    all_headers = {
        "accept": "*/*",
        "host": f"{API_ID}.execute-api.{REGION}.amazonaws.com",
        "user-agent": "creditgate-tests",
        "x-amzn-trace-id": "Root=1-67891233-abcdef012345678912345678",
        "x-forwarded-for": "203.0.113.10",
        "x-forwarded-port": "443",
        "x-forwarded-proto": "https",
        **({"content-type": "application/json", "content-length": str(len(raw))} if body is not None else {}),
        **{k.lower(): v for k, v in (headers or {}).items()},
    }
    now = time.time()
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": all_headers,
        "requestContext": {
            "accountId": ACCOUNT,
            "apiId": API_ID,
            "domainName": f"{API_ID}.execute-api.{REGION}.amazonaws.com",
            "domainPrefix": API_ID,
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.10",
                "userAgent": "creditgate-tests",
            },
            "requestId": uuid.uuid4().hex[:16],
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": base64_body,
    }
    if query:
        event["queryStringParameters"] = dict(parse_qsl(query))
    if body is not None:
        event["body"] = base64.b64encode(raw).decode() if base64_body else raw.decode()
    return event


def eventbridge_scheduled_event() -> dict[str, Any]:
    """What an EventBridge rule with a schedule expression sends."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "region": REGION,
        "resources": [f"arn:aws:events:{REGION}:{ACCOUNT}:rule/creditgate-maintenance"],
        "detail": {},
    }


def scheduler_template_event() -> dict[str, Any]:
    """EventBridge Scheduler with the Input template.yaml gives it (placeholders filled)."""
    return {
        "source": "creditgate.scheduler",
        "detail-type": "Scheduled Event",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "id": str(uuid.uuid4()),
        "resources": [f"arn:aws:scheduler:{REGION}:{ACCOUNT}:schedule/default/creditgate-maintenance"],
        "detail": {"task": "maintenance", "attempt": "1"},
    }


class LambdaContext:
    function_name = "creditgate-scheduler"
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:creditgate-scheduler"
    log_group_name = "/aws/lambda/creditgate-scheduler"
    log_stream_name = "2025/01/01/[$LATEST]0123456789abcdef"

    def __init__(self, timeout_seconds: float = 120) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self._deadline = time.monotonic() + timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return int((self._deadline - time.monotonic()) * 1000)
