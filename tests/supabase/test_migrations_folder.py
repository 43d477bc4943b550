"""supabase/ is what `supabase db push` applies: a copy of sql/ under timestamped names,
in sync with sql/, applying cleanly, and agreeing with `creditgate migrate`."""

from __future__ import annotations

import re
import tomllib
import uuid
from datetime import datetime
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from functions.core.database import COMPAT_SCRIPT, SQL_DIR, migrate, migrations
from functions.core.supabase_export import MIGRATIONS_DIR, differences, expected

SUPABASE_DIR = MIGRATIONS_DIR.parent


def test_the_folder_is_in_sync_with_sql():
    assert differences() == [], "sql/ changed: run `creditgate supabase-export` and commit supabase/migrations"


def test_every_migration_but_the_compat_script_is_there_in_the_same_order():
    names = sorted(p.name for p in MIGRATIONS_DIR.glob("*.sql"))
    sources = [p.stem for p in migrations() if p.stem != COMPAT_SCRIPT]
    assert [re.sub(r"^\d+_", "", n).removesuffix(".sql") for n in names] == [s.split("_", 1)[1] for s in sources]
    for name in names:
        # The CLI's pattern is <digits>_<name>.sql; "init" as a first name is skipped by it.
        stamp, rest = name.split("_", 1)
        datetime.strptime(stamp, "%Y%m%d%H%M%S")
        assert rest != "init.sql"
    assert not any("supabase_compat" in n for n in names)


def test_config_keeps_the_ledger_schema_private():
    config = tomllib.loads((SUPABASE_DIR / "config.toml").read_text())
    assert config["project_id"]
    assert "creditgate" not in config["api"]["schemas"]


@pytest.fixture
def fresh_database(dsn):
    """An empty database on the test server; roles are shared by the whole server."""
    name = f"supabase_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(dsn)
    yield urlunsplit(parts._replace(path=f"/{name}"))
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_the_copies_apply_in_order_and_creditgate_migrate_then_has_nothing_to_do(fresh_database):
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        # Supabase has auth and the API roles already; plain PostgreSQL gets them here.
        conn.execute((SQL_DIR / f"{COMPAT_SCRIPT}.sql").read_text())
        for name, text in sorted(expected().items()):
            assert (MIGRATIONS_DIR / name).read_text() == text
            with conn.transaction():  # one file, one transaction, as `supabase db push` runs them
                conn.execute(text)
        versions = [row[0] for row in conn.execute("SELECT version FROM creditgate.schema_migrations")]
    in_order = sorted(versions, key=lambda v: int(v.split("_", 1)[0]))
    assert in_order == [p.stem for p in migrations() if p.stem != COMPAT_SCRIPT]
    assert migrate(fresh_database) == []
