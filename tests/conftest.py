"""The suite runs against a real PostgreSQL server it starts itself (system binaries, or
the pgserver package), migrated and loaded with the shipped catalog."""

from __future__ import annotations

import ipaddress
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from functions.core.catalog import apply_catalog
from functions.core.database import migrate, start_local_postgres
from functions.core.ledger.postgres import PostgresLedger
from functions.core.settings import Settings

SERVICE_KEY = "cg_test_service_key_0123456789abcdef"
JWT_SECRET = "test-jwt-secret-with-at-least-32-characters!!"
CRON_SECRET = "test-cron-secret-0123456789"
WEBHOOK_SECRET = "whsec_test_secret_0123456789"
MICRO = 1_000_000

# A property test's failure prints a blob that replays it (@reproduce_failure): CI starts
# without the example database, so a rare counterexample is otherwise lost with the run.
hypothesis_settings.register_profile("creditgate", print_blob=True)
hypothesis_settings.load_profile("creditgate")


@pytest.fixture(scope="session")
def pg_server():
    if os.environ.get("CREDITGATE_TEST_DATABASE_URL"):
        yield os.environ["CREDITGATE_TEST_DATABASE_URL"]
        return
    root = Path(tempfile.mkdtemp(prefix="creditgate-test-"))
    server = start_local_postgres(root / "pgdata", durable=False)
    try:
        yield server.dsn
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def dsn(pg_server):
    migrate(pg_server)
    ledger = PostgresLedger(pg_server, max_size=2)
    apply_catalog(ledger)
    ledger.close()
    _add_test_plans(pg_server)
    return pg_server


def _add_test_plans(dsn: str) -> None:
    """Plans only tests use: everything unlocked, no allowance and no rate limit, so a
    test's balance is exactly what it grants (plus the welcome credit)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("""
            INSERT INTO creditgate.plans (id, name, price_minor, features, agents, allowances, rate_limit_per_minute,
                                          display_order)
            SELECT 'test_open', 'Test open', 99999900, array_agg(DISTINCT f.id),
                   (SELECT array_agg(id) FROM creditgate.agents), '{}', 0, 99
            FROM creditgate.features f
            ON CONFLICT (id) DO NOTHING""")


@pytest.fixture(scope="session")
def ledger(dsn):
    ledger = PostgresLedger(dsn, max_size=80)
    yield ledger
    ledger.close()


@pytest.fixture(scope="session")
def settings(dsn):
    return Settings(
        environment="test",
        database_url=dsn,
        service_keys=SERVICE_KEY,
        supabase_jwt_secret=JWT_SECRET,
        cron_secret=CRON_SECRET,
        stripe_webhook_secret=WEBHOOK_SECRET,
        payments="simulated",
        allowed_origins="http://localhost:3000",
        public_url="http://testserver",
    )


@pytest.fixture(scope="session")
def app(settings, ledger):
    from functions.local import build_app

    return build_app(settings=settings, ledger=ledger)


@pytest.fixture(scope="session")
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def service_headers():
    return {"Authorization": f"Bearer {SERVICE_KEY}"}


def new_account_id(prefix: str = "acct") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def unique_ip() -> str:
    """A client address no other test uses: guest counters are per IP and per day in one shared database."""
    bits = uuid.uuid4().hex
    return str(ipaddress.ip_address(f"2001:db8:{bits[:4]}:{bits[4:8]}::1{bits[8:11]}"))


@pytest.fixture
def make_account(ledger):
    """A fresh account on a plan, with its welcome credit and allowances."""

    def make(plan: str = "free", owner: str = "user", account_id: str | None = None) -> str:
        account_id = account_id or new_account_id()
        ledger.ensure_account({"account_id": account_id, "plan": plan, "owner": owner})
        return account_id

    return make


@pytest.fixture
def sql(dsn):
    """Runs SQL as the superuser for assertions and for moving the clock in tests."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:

        def run(query: str, *params):
            cursor = conn.execute(query, params)
            return cursor.fetchall() if cursor.description else None

        yield run


@pytest.fixture
def welcome(sql) -> int:
    """The welcome credit every new account gets, in micro-credits."""
    return sql("SELECT welcome_credits FROM creditgate.settings")[0][0]


def grant(
    ledger,
    account_id: str,
    credits: int | float,
    *,
    key: str = "credits",
    source: str = "adjustment",
    expires_at: str | None = None,
) -> dict:
    request = {
        "account_id": account_id,
        "amount": int(credits * MICRO),
        "key": key,
        "source": source,
        "reason": "test",
        "idempotency_key": uuid.uuid4().hex,
    }
    if expires_at:
        request["expires_at"] = expires_at
    return ledger.grant_credits(request)


def commit(ledger, account_id: str, feature: str = "vm_minute", quantity: int = 1, key: str | None = None) -> dict:
    return ledger.gate(
        {
            "account_id": account_id,
            "feature": feature,
            "mode": "commit",
            "estimate": {"quantity": quantity},
            "idempotency_key": key or uuid.uuid4().hex,
        }
    )


def available(ledger, account_id: str, key: str = "credits") -> int:
    for line in ledger.balance(account_id)["balances"]:
        if line["key"] == key:
            return line["available"]
    return 0


@pytest.fixture
def two_request_account(sql, make_account):
    """An account on a plan with plenty of credits and two requests a period."""
    sql(
        """INSERT INTO creditgate.plans (id, name, price_minor, features, agents, allowances,
                                         rate_limit_per_minute, display_order)
           SELECT 'test_two_requests', 'Two requests', 99999800, array_agg(id), '{}',
                  jsonb_build_object('credits', 100 * %s::bigint, 'requests', 2 * %s::bigint), 0, 98
           FROM creditgate.features
           ON CONFLICT (id) DO UPDATE SET active = true""",
        MICRO,
        MICRO,
    )
    return make_account("test_two_requests")
