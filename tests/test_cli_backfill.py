"""`creditgate backfill`: accounts for the users an app had before creditgate, and a one-time
grant to every account, both safe to run again. On a database of its own (it grants to all)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from functions.core.cli import main
from functions.core.database import migrate

CATALOG = Path(__file__).resolve().parents[1] / "catalog.toml"


@pytest.fixture
def database(dsn, monkeypatch):
    name = f"backfill_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))
    migrate(url)
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.delenv("SUPABASE_URL", raising=False)
    assert main(["catalog", "apply", str(CATALOG)]) == 0
    yield url
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_existing_users_get_accounts_and_a_grant_once(database, capsys):
    with psycopg.connect(database, autocommit=True) as conn:
        # Users from before creditgate: the sign-up trigger did not see them.
        conn.execute("ALTER TABLE auth.users DISABLE TRIGGER creditgate_on_auth_user_created")
        conn.execute(
            "INSERT INTO auth.users (id, email) SELECT gen_random_uuid(), 'user' || g || '@example.com' "
            "FROM generate_series(1, 7) g"
        )
        conn.execute("ALTER TABLE auth.users ENABLE TRIGGER creditgate_on_auth_user_created")
        args = ["backfill", "--grant", "5", "--reason", "launch gift", "--tag", "launch", "--batch", "3"]
        assert main(args) == 0
        assert main(args) == 0  # again: nothing twice
        out = capsys.readouterr().out
        assert "accounts created: 7" in out and "accounts created: 0" in out
        assert "(launch): 7" in out and "(launch): 0" in out
        welcome = conn.execute("SELECT welcome_credits FROM creditgate.settings").fetchone()[0]
        rows = conn.execute(
            "SELECT a.email, b.available FROM creditgate.accounts a JOIN creditgate.balances b "
            "ON b.account_id = a.id AND b.key = 'credits' ORDER BY a.email"
        ).fetchall()
        assert [r[0] for r in rows] == sorted(f"user{n}@example.com" for n in range(1, 8))
        assert {r[1] for r in rows} == {welcome + 100_000_000 + 5_000_000}  # welcome, free allowance, gift
        report = conn.execute("SELECT public.creditgate_reconcile('{}')").fetchone()[0]
        assert report["ok"], report


def test_a_grant_needs_a_reason_and_a_tag(database, capsys):
    with pytest.raises(SystemExit):
        main(["backfill", "--grant", "5"])


def test_an_operators_mistake_is_one_line_not_a_traceback(database, monkeypatch, capsys):
    assert main(["backfill", "--grant", "abc", "--reason", "x", "--tag", "t"]) == 2
    assert "must be a decimal number" in capsys.readouterr().err
    assert main(["grant", "nobody-here", "5", "--reason", "x", "--idempotency-key", "k"]) == 2
    assert "Account not found" in capsys.readouterr().err
    monkeypatch.delenv("DATABASE_URL")
    assert main(["reconcile"]) == 2
    assert "set DATABASE_URL" in capsys.readouterr().err


def test_grant_needs_a_key_and_running_it_again_grants_once(database, capsys):
    # Without a key, running the command again after a timeout granted twice.
    with pytest.raises(SystemExit):
        main(["grant", "someone", "3", "--reason", "sorry"])
    account = f"cli-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("SELECT public.creditgate_ensure_account(%s::jsonb)", (f'{{"account_id": "{account}"}}',))
    command = ["grant", account, "3", "--reason", "sorry", "--idempotency-key", "apology-1"]
    capsys.readouterr()
    assert main(command) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(command) == 0
    again = json.loads(capsys.readouterr().out)
    assert first["amount"] == "3" and again["replayed"] is True and again["grant_id"] == first["grant_id"]
    assert isinstance(first["balance"]["available"], str)
    # Only what the HTTP grant answers: no micro-credit fields beside the decimal ones.
    assert set(again) == {
        "grant_id",
        "account_id",
        "amount",
        "key",
        "source",
        "expires_at",
        "reason",
        "balance",
        "replayed",
    }
    with psycopg.connect(database) as conn:
        granted = conn.execute(
            "SELECT count(*) FROM creditgate.grants WHERE account_id = %s AND source = 'adjustment'", (account,)
        ).fetchone()[0]
    assert granted == 1
