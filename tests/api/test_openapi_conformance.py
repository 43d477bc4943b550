"""Answers match what /openapi.json says of them, for the cases where the schema and the
code could drift apart (a field left out of a guest's answer, a 403 that is not a denial)."""

from __future__ import annotations

import uuid

import pytest
from jsonschema import Draft202012Validator

from tests.api.helpers import bearer, user_token


@pytest.fixture(scope="module")
def document(app):
    from fastapi.testclient import TestClient

    return TestClient(app).get("/openapi.json").json()


def conforms(document: dict, path: str, method: str, response) -> None:
    content = document["paths"][path][method]["responses"][str(response.status_code)]["content"]
    schema = next(iter(content.values()))["schema"]
    validator = Draft202012Validator({**schema, "components": document["components"]})
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(response.json())]
    assert errors == [], (response.status_code, response.json())


class TestAnswersMatchTheirSchemas:
    def test_a_guests_entitlements(self, client, document):
        answer = client.get("/v1/entitlements", headers={"X-Session-Id": f"guest-{uuid.uuid4().hex}"})
        assert answer.status_code == 200
        conforms(document, "/v1/entitlements", "get", answer)

    def test_an_accounts_entitlements(self, client, document, service_headers, make_account):
        answer = client.get(f"/v1/entitlements?account_id={make_account('free')}", headers=service_headers)
        conforms(document, "/v1/entitlements", "get", answer)

    def test_a_user_gating_another_account_is_a_403_the_schema_allows(self, client, document, make_account):
        user = make_account("free")
        answer = client.post(
            "/v1/gate",
            json={"account_id": make_account("free"), "feature": "chat", "mode": "check"},
            headers=bearer(user_token(user)),
        )
        assert answer.status_code == 403
        conforms(document, "/v1/gate", "post", answer)

    def test_a_denial_and_a_guest_usage_answer(self, client, document, service_headers, make_account):
        locked = client.post(
            "/v1/gate",
            json={"account_id": make_account("free"), "feature": "chat", "agent": "builder"},
            headers=service_headers,
        )
        assert locked.status_code == 403
        conforms(document, "/v1/gate", "post", locked)
        guest = client.post(
            "/v1/usage",
            json={
                "guest_session_id": f"guest-{uuid.uuid4().hex}",
                "feature": "chat",
                "model": "gpt-4o-mini",
                "usage": {"input_tokens": 10, "output_tokens": 10},
                "idempotency_key": uuid.uuid4().hex,
            },
            headers=service_headers,
        )
        assert guest.status_code == 201
        conforms(document, "/v1/usage", "post", guest)
