"""POST/GET /v1/cron/maintenance: only with Authorization: Bearer $CRON_SECRET."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from functions.core.settings import Settings
from tests.conftest import CRON_SECRET, SERVICE_KEY
from tests.maintenance.helpers import drain, move_back

PATH = "/v1/cron/maintenance"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-secret-0123456789"},
        {"Authorization": f"Bearer {CRON_SECRET}x"},
        {"Authorization": f"Basic {CRON_SECRET}"},
        {"Authorization": f"Bearer {SERVICE_KEY}"},  # the app's key is not the cron secret
    ],
)
def test_without_the_cron_secret_it_is_401_and_runs_nothing(client, ledger, make_account, sql, headers):
    drain(ledger)
    account = make_account("free")
    move_back(sql, account, "1 month 2 days")

    response = client.post(PATH, headers=headers)

    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "unauthenticated"
    assert sql("SELECT period_end <= now() FROM creditgate.accounts WHERE id = %s", account) == [(True,)]
    drain(ledger)


@pytest.mark.parametrize("method", ["POST", "GET"])  # Vercel cron calls with GET
def test_with_the_cron_secret_it_runs(client, ledger, make_account, sql, method):
    drain(ledger)
    account = make_account("free")
    move_back(sql, account, "1 month 2 days")

    response = client.request(method, PATH, headers={"Authorization": f"Bearer {CRON_SECRET}"})

    assert response.status_code == 200, response.text
    body = response.json()
    for name in ("allowances_granted", "grants_expired", "reservations_expired", "guest_sessions_deleted", "notices"):
        assert isinstance(body[name], int)
    assert body["allowances_granted"] == 3 and body["more"] is False
    assert sql("SELECT period_end > now() FROM creditgate.accounts WHERE id = %s", account) == [(True,)]


def test_batches_are_bounded_by_the_query(client, ledger, make_account, sql):
    drain(ledger)
    for _ in range(3):
        move_back(sql, make_account("free"), "1 month 2 days")
    headers = {"Authorization": f"Bearer {CRON_SECRET}"}

    one = client.post(f"{PATH}?limit=2&max_batches=1", headers=headers).json()
    assert (one["accounts"], one["batches"], one["more"]) == (2, 1, True)
    rest = client.post(f"{PATH}?limit=2", headers=headers).json()
    assert (rest["accounts"], rest["more"]) == (1, False)

    bad = client.post(f"{PATH}?limit=0", headers=headers)
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_request"


def test_without_a_configured_secret_it_is_503(dsn, ledger):
    from functions.local import build_app

    app = build_app(settings=Settings(environment="test", database_url=dsn), ledger=ledger)
    with TestClient(app, raise_server_exceptions=False) as bare:
        response = bare.post(PATH, headers={"Authorization": "Bearer anything-at-all-0123"})
    assert response.status_code == 503
    assert response.json()["code"] == "cron_not_configured"


def test_the_route_is_in_the_openapi_document(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"get", "post"} <= set(paths[PATH])
