from __future__ import annotations

import time
import uuid

import jwt

from tests.conftest import JWT_SECRET


def user_token(
    sub: str | None = None, *, secret: str = JWT_SECRET, exp_in: int = 3600, aud: str = "authenticated", **claims
) -> str:
    now = int(time.time())
    payload = {
        "sub": sub if sub is not None else str(uuid.uuid4()),
        "aud": aud,
        "role": "authenticated",
        "iat": now,
        "exp": now + exp_in,
        "email": "user@example.com",
        **claims,
    }
    return jwt.encode(payload, secret, algorithm="HS256")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body = response.json()
    assert body["status"] == status and body["code"] == code, body
    assert {"type", "title", "detail"} <= body.keys()
    return body
