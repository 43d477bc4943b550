"""A row inserted into auth.users (a Supabase sign-up) creates the user's account with
its welcome credit and first allowance, whoever inserts it, and never blocks sign-up."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from tests.conftest import MICRO

AUTH_ROLE = "creditgate_test_auth_admin"  # stands in for Supabase's supabase_auth_admin


@pytest.fixture
def auth_admin(sql):
    """A role that may write auth.users and nothing of creditgate, like Supabase Auth's."""
    sql(
        f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{AUTH_ROLE}') THEN"
        f" CREATE ROLE {AUTH_ROLE} NOLOGIN; END IF; END $$"
    )
    sql(f"GRANT USAGE ON SCHEMA auth TO {AUTH_ROLE}")
    sql(f"GRANT INSERT, SELECT ON auth.users TO {AUTH_ROLE}")
    return AUTH_ROLE


def sign_up(conn, role, email):
    user_id = uuid.uuid4()
    conn.execute(f"SET ROLE {role}")
    conn.execute("INSERT INTO auth.users (id, email) VALUES (%s, %s)", [user_id, email])
    conn.execute("RESET ROLE")
    return str(user_id)


def test_a_sign_up_creates_the_account_with_welcome_credit_and_allowance(dsn, ledger, sql, auth_admin):
    with psycopg.connect(dsn, autocommit=True) as conn:
        user_id = sign_up(conn, auth_admin, "new@example.com")

    [(plan, owner, email)] = sql("SELECT plan_id, owner_kind, email FROM creditgate.accounts WHERE id = %s", user_id)
    assert (plan, owner, email) == ("free", "user", "new@example.com")
    sources = sql("SELECT source, key FROM creditgate.grants WHERE account_id = %s ORDER BY 1, 2", user_id)
    assert ("welcome", "credits") in sources and ("allowance", "credits") in sources
    assert sql(
        "SELECT role FROM creditgate.account_members WHERE account_id = %s AND user_id = %s", user_id, user_id
    ) == [("owner",)]
    credits = next(b for b in ledger.balance(user_id)["balances"] if b["key"] == "credits")
    assert credits["available"] == 150 * MICRO
    assert ledger.reconcile(user_id)["ok"]


def test_an_account_that_already_exists_is_left_as_it_is(dsn, ledger, sql, auth_admin):
    user_id = str(uuid.uuid4())
    ledger.ensure_account({"account_id": user_id, "plan": "pro", "owner": "user"})
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"SET ROLE {auth_admin}")
        conn.execute("INSERT INTO auth.users (id, email) VALUES (%s, 'again@example.com')", [user_id])
    assert sql("SELECT plan_id FROM creditgate.accounts WHERE id = %s", user_id) == [("pro",)]
    assert sql("SELECT count(*) FROM creditgate.grants WHERE account_id = %s AND source = 'welcome'", user_id) == [(1,)]


def test_a_sign_up_succeeds_even_when_the_account_cannot_be_made(dsn, sql, auth_admin):
    with psycopg.connect(dsn) as conn:  # one transaction, rolled back: the catalog is shared
        conn.execute("UPDATE creditgate.plans SET active = false WHERE id = 'free'")
        user_id = sign_up(conn, auth_admin, "early@example.com")
        assert conn.execute("SELECT count(*) FROM auth.users WHERE id = %s", [user_id]).fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM creditgate.accounts WHERE id = %s", [user_id]).fetchone() == (0,)
        conn.rollback()


def test_the_trigger_function_is_locked_down(sql):
    [(definer, config)] = sql(
        "SELECT prosecdef, proconfig FROM pg_proc WHERE oid = 'creditgate.on_auth_user_created()'::regprocedure"
    )
    assert definer and config == ['search_path=""']
    for role in ("anon", "authenticated"):
        assert sql("SELECT has_function_privilege(%s, 'creditgate.on_auth_user_created()', 'EXECUTE')", role) == [
            (False,)
        ]
    assert sql(
        "SELECT tgenabled FROM pg_trigger WHERE tgname = 'creditgate_on_auth_user_created'"
        " AND tgrelid = 'auth.users'::regclass"
    ) == [("O",)]
