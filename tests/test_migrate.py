"""`creditgate migrate`: every sql/ file once, in order, and never an applied file edited."""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from functions.core.database import COMPAT_SCRIPT, MigrationChanged, migrate, migrations

VERSIONS = [p.stem for p in migrations() if p.stem != COMPAT_SCRIPT]


@pytest.fixture(scope="module")
def database(dsn):
    """A database of its own on the test server, migrated once."""
    name = f"migrate_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))
    assert migrate(url) == VERSIONS
    yield url
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def checksums(url: str) -> dict[str, str | None]:
    with psycopg.connect(url) as conn:
        return dict(conn.execute("SELECT version, checksum FROM creditgate.schema_migrations").fetchall())


def execute(url: str, statement: str, *params) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement, params or None)


def number(version: str) -> int:
    return int(version.split("_", 1)[0])


class TestOrder:
    def test_files_apply_in_the_order_of_their_numbers_past_99(self, tmp_path):
        from functions.core.database import migration_order
        from functions.core.supabase_export import supabase_name

        names = ["100_later.sql", "20_ledger.sql", "99_last_two_digit.sql", "00_compat.sql"]
        ordered = [p.name for p in sorted((tmp_path / n for n in names), key=migration_order)]
        assert ordered == ["00_compat.sql", "20_ledger.sql", "99_last_two_digit.sql", "100_later.sql"]
        # The Supabase CLI orders by timestamp: the same order.
        stamps = [supabase_name(tmp_path / n) for n in ordered]
        assert stamps == sorted(stamps)


class TestMigrate:
    def test_records_a_checksum_per_file_and_has_nothing_more_to_do(self, database):
        recorded = checksums(database)
        assert sorted(recorded) == sorted(VERSIONS)
        assert all(len(value or "") == 64 for value in recorded.values())
        assert migrate(database) == []

    def test_refuses_a_database_whose_applied_file_has_changed(self, database):
        before = checksums(database)
        execute(database, "UPDATE creditgate.schema_migrations SET checksum = 'edited' WHERE version = %s", VERSIONS[1])
        try:
            with pytest.raises(MigrationChanged, match=f"{VERSIONS[1]}.sql changed after being applied"):
                migrate(database)
        finally:
            execute(
                database,
                "UPDATE creditgate.schema_migrations SET checksum = %s WHERE version = %s",
                before[VERSIONS[1]],
                VERSIONS[1],
            )
        assert migrate(database) == []

    def test_fills_in_what_supabase_db_push_or_an_older_version_recorded_without_one(self, database):
        before = checksums(database)
        execute(database, "ALTER TABLE creditgate.schema_migrations DROP COLUMN checksum")
        assert migrate(database) == []
        assert checksums(database) == before


@contextmanager
def database_before(dsn: str, monkeypatch, version: int):
    """A database of its own, migrated up to (not including) `version`, with the shipped
    catalog loaded through that version's RPC: yields (url, ledger, upgrade), where
    upgrade() closes the ledger and applies the rest, returning what it applied."""
    from functions.core import database as db
    from functions.core.catalog import DEFAULT_CATALOG, load_catalog, to_document
    from functions.core.ledger.postgres import PostgresLedger

    name = f"upgrade_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))
    every_file = migrations()
    ledger = PostgresLedger(url, max_size=1)
    try:
        monkeypatch.setattr(db, "migrations", lambda: [p for p in every_file if number(p.stem) < version])
        migrate(url)
        # (apply_catalog also sets what later versions added.)
        ledger.apply_catalog(to_document(load_catalog(DEFAULT_CATALOG)))

        def upgrade() -> list[str]:
            ledger.close()
            monkeypatch.setattr(db, "migrations", lambda: every_file)
            return migrate(url)

        yield url, ledger, upgrade
    finally:
        ledger.close()
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


class TestUpgrade:
    def test_a_database_in_use_gets_its_period_counters_and_no_notice_backlog(self, dsn, monkeypatch):
        with database_before(dsn, monkeypatch, 96) as (url, ledger, upgrade):  # before the counters existed
            ledger.ensure_account({"account_id": "in-use", "plan": "free"})
            for key in ("a", "b"):
                ledger.gate(
                    {
                        "account_id": "in-use",
                        "feature": "ai_message",
                        "mode": "commit",
                        "estimate": {"quantity": 50},
                        "idempotency_key": key,
                    }
                )
            execute(  # a notice from before delivery existed
                url,
                "INSERT INTO creditgate.notices (account_id, key, kind, period_start) "
                "VALUES ('in-use', 'credits', 'allowance_75', now())",
            )
            assert upgrade() == [v for v in VERSIONS if number(v) >= 96]
            with psycopg.connect(url) as conn:
                counters = dict(
                    conn.execute(
                        "SELECT key, used_this_period FROM creditgate.balances WHERE account_id = 'in-use'"
                    ).fetchall()
                )
                backlog = conn.execute(
                    "SELECT count(*) FROM creditgate.notices WHERE delivered_at IS NULL AND gave_up_at IS NULL"
                ).fetchone()
        assert counters["credits"] == 20_000_000  # 2 × 50 messages at 0.2 credits
        assert backlog == (0,)  # an upgrade does not mail out old notices

    def test_orders_made_before_118_keep_the_key_they_were_made_for(self, dsn, monkeypatch):
        with database_before(dsn, monkeypatch, 118) as (url, ledger, upgrade):
            ledger.ensure_account({"account_id": "buyer", "plan": "free"})
            order = ledger.create_order({"account_id": "buyer", "kind": "pack", "item": "starter"})
            upgrade()
            execute(url, "UPDATE creditgate.packs SET key = 'requests' WHERE id = 'starter'")  # edited afterwards
            with psycopg.connect(url) as conn:
                row = conn.execute(
                    "SELECT key, creditgate.order_key(o) FROM creditgate.orders o WHERE id = %s", (order["order_id"],)
                ).fetchone()
        assert row == ("credits", "credits")


class TestUninstall:
    def test_removes_everything_of_creditgate_and_can_be_installed_again(self, dsn, monkeypatch, capsys):
        from functions.core.cli import main

        name = f"uninstall_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        url = urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))
        try:
            migrate(url)
            monkeypatch.setenv("DATABASE_URL", url)
            assert main(["uninstall"]) == 2  # not without saying yes
            with psycopg.connect(url) as conn:
                assert conn.execute("SELECT to_regnamespace('creditgate')").fetchone()[0] is not None
            assert main(["uninstall", "--yes-delete-every-balance"]) == 0
            with psycopg.connect(url) as conn:
                assert conn.execute("SELECT to_regnamespace('creditgate')").fetchone()[0] is None
                left = conn.execute(
                    "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                    "WHERE n.nspname = 'public' AND p.proname LIKE 'creditgate%'"
                ).fetchone()[0]
                triggers = conn.execute(
                    "SELECT count(*) FROM pg_trigger WHERE tgname = 'creditgate_on_auth_user_created'"
                ).fetchone()[0]
                assert (left, triggers) == (0, 0)
                assert conn.execute("SELECT to_regclass('auth.users')").fetchone()[0] is not None  # not ours
            assert migrate(url) == VERSIONS  # and back, from nothing
        finally:
            with psycopg.connect(dsn, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
