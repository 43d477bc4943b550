"""Each function's Lambda handler, called as Lambda calls it: API Gateway HTTP API v2
events (JSON and base64 bodies) and the scheduler's EventBridge events, with every
secret read from moto's Secrets Manager and SSM. Nothing is taken from the test's own
Settings: DATABASE_URL itself comes from a secret."""

from __future__ import annotations

import base64
import importlib
import importlib.util
import json
import sys
import uuid

import pytest

from functions.core.settings import get_settings
from tests.aws.events import (
    LambdaContext,
    eventbridge_scheduled_event,
    http_event,
    scheduler_template_event,
)
from tests.conftest import CRON_SECRET, JWT_SECRET, SERVICE_KEY, WEBHOOK_SECRET
from tests.maintenance.helpers import drain, move_back

CORE = ["gate", "usage", "balance", "admin", "scheduler"]
OPTIONAL = ["checkout", "webhook"]  # built elsewhere; tested once their modules exist


@pytest.fixture
def lambda_env(aws, secretsmanager, ssm, dsn, monkeypatch):
    """The environment template.yaml gives a function: references, never values."""
    db = secretsmanager.create_secret(Name="creditgate/test/database-url", SecretString=dsn)["ARN"]
    shared = secretsmanager.create_secret(
        Name="creditgate/test/app",
        SecretString=json.dumps(
            {"CRON_SECRET": CRON_SECRET, "SUPABASE_JWT_SECRET": JWT_SECRET, "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET}
        ),
    )["ARN"]
    ssm.put_parameter(Name="/creditgate/test/service-keys", Value=SERVICE_KEY, Type="SecureString")
    for name, value in {
        "CREDITGATE_ENVIRONMENT": "production",
        "CREDITGATE_PAYMENTS": "simulated",
        "CREDITGATE_DB_POOL_MAX": "2",
        "DATABASE_URL_SECRET_ARN": db,
        "CRON_SECRET_SECRET_ARN": shared,
        "SUPABASE_JWT_SECRET_SECRET_ARN": shared,
        "STRIPE_WEBHOOK_SECRET_SECRET_ARN": shared,
        "CREDITGATE_SERVICE_KEYS_PARAM": "/creditgate/test/service-keys",
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    loaded: dict[str, object] = {}

    def load(name: str):
        """A cold start: the entry module imported afresh, reading settings at import."""
        if name not in loaded:
            sys.modules.pop(f"functions.{name}", None)
            loaded[name] = importlib.import_module(f"functions.{name}")
        return loaded[name]

    yield load
    for module in loaded.values():
        ledger = module.app.state.ledger
        if ledger is not None:
            ledger.close()
    for name in loaded:
        sys.modules.pop(f"functions.{name}", None)
    get_settings.cache_clear()


def call(module, event):
    response = module.handler(event, LambdaContext())
    body = response["body"]
    if response.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    return response["statusCode"], response["headers"], json.loads(body) if body else None


SERVICE = {"authorization": f"Bearer {SERVICE_KEY}"}


@pytest.mark.parametrize("base64_body", [False, True], ids=["json-body", "base64-body"])
def test_admin_gate_usage_and_balance_handlers(lambda_env, base64_body):
    account = f"lambda-{uuid.uuid4().hex[:10]}"
    admin, gate, usage, balance = (lambda_env(n) for n in ("admin", "gate", "usage", "balance"))

    status, _, created = call(
        admin,
        http_event("PUT", f"/v1/accounts/{account}", body={"plan": "free"}, headers=SERVICE, base64_body=base64_body),
    )
    assert status == 201, created
    assert created["account_id"] == account

    status, _, allowed = call(
        gate,
        http_event(
            "POST",
            "/v1/gate",
            headers=SERVICE,
            base64_body=base64_body,
            body={
                "account_id": account,
                "feature": "ai_message",
                "estimate": {"quantity": 5},
                "idempotency_key": "lambda-1",
            },
        ),
    )
    assert status == 200 and allowed["allowed"] is True, allowed
    hold = allowed["reservation"]["id"]

    status, _, used = call(
        usage,
        http_event(
            "POST",
            "/v1/usage",
            headers=SERVICE,
            base64_body=base64_body,
            body={"reservation_id": hold, "feature": "ai_message", "quantity": 3, "idempotency_key": "lambda-1"},
        ),
    )
    assert status == 201, used
    assert used["cost"] == "0.6" and used["reservation"]["status"] == "settled"

    status, _, read = call(balance, http_event("GET", "/v1/balance", headers=SERVICE, query=f"account_id={account}"))
    assert status == 200, read
    credits = next(b for b in read["balances"] if b["key"] == "credits")
    assert credits["available"] == "149.4" and credits["reserved"] == "0"


def test_a_bad_body_is_a_problem_not_a_crash(lambda_env):
    gate = lambda_env("gate")
    event = http_event("POST", "/v1/gate", headers=SERVICE, body={"feature": "ai_message"}, base64_body=True)
    event["body"] = base64.b64encode(b'{"feature": ').decode()
    status, headers, problem = call(gate, event)
    assert status == 422 and headers["content-type"].startswith("application/problem+json")
    assert problem["code"] == "invalid_request"

    status, _, problem = call(gate, http_event("POST", "/v1/gate", body={"feature": "ai_message"}))
    assert status == 401 and problem["code"] == "unauthenticated"


def test_the_service_key_is_the_one_from_ssm(lambda_env):
    balance = lambda_env("balance")
    status, _, problem = call(
        balance,
        http_event(
            "GET",
            "/v1/balance",
            headers={"authorization": "Bearer cg_not_the_key_0123456789abcdef"},
            query="account_id=x",
        ),
    )
    assert status == 401 and problem["code"] == "unauthenticated"
    status, _, health = call(balance, http_event("GET", "/v1/health"))
    assert status == 200 and health["database"] == "ok"


@pytest.mark.parametrize(
    "make_event", [eventbridge_scheduled_event, scheduler_template_event, dict], ids=["rule", "scheduler", "empty"]
)
def test_the_scheduler_runs_maintenance_on_a_schedule_event(lambda_env, ledger, make_account, sql, make_event):
    drain(ledger)
    account = make_account("free")
    move_back(sql, account, "1 month 4 days")
    scheduler = lambda_env("scheduler")

    answer = scheduler.handler(make_event(), LambdaContext())

    assert answer["allowances_granted"] == 3 and answer["more"] is False
    assert sql("SELECT period_end > now() FROM creditgate.accounts WHERE id = %s", account) == [(True,)]


def test_the_scheduler_serves_the_cron_route_with_the_secret_from_secrets_manager(lambda_env, ledger):
    drain(ledger)
    scheduler = lambda_env("scheduler")

    status, _, problem = call(scheduler, http_event("POST", "/v1/cron/maintenance"))
    assert status == 401 and problem["code"] == "unauthenticated"
    status, _, answer = call(
        scheduler, http_event("POST", "/v1/cron/maintenance", headers={"authorization": f"Bearer {CRON_SECRET}"})
    )
    assert status == 200 and answer["more"] is False


def test_the_scheduler_refuses_events_it_does_not_know(lambda_env):
    scheduler = lambda_env("scheduler")
    with pytest.raises(ValueError, match="not an HTTP request nor a schedule event"):
        scheduler.handler({"Records": [{"eventSource": "aws:sqs", "body": "{}"}]}, LambdaContext())
    with pytest.raises(ValueError, match="limit"):
        scheduler.handler(
            {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {"limit": 0}}, LambdaContext()
        )


@pytest.mark.parametrize("name", OPTIONAL)
def test_the_payment_functions_answer_http_events(lambda_env, name):
    if importlib.util.find_spec(f"functions.{name}") is None:
        pytest.skip(f"functions/{name}.py does not exist yet")
    module = lambda_env(name)
    path = "/v1/checkout" if name == "checkout" else "/v1/webhooks/stripe"
    status, headers, problem = call(module, http_event("POST", path, body={}, base64_body=True))
    # No credentials / no signature: refused with a problem, never a crash.
    assert 400 <= status < 500, problem
    assert headers["content-type"].startswith("application/problem+json")
