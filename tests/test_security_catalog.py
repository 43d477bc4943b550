"""Who may touch what, read from the catalog. Everything is enumerated, not listed: a
routine, table or view added later without `creditgate.secure()` (or with a grant too
many) fails here, and `test_the_checks_catch_an_unsecured_newcomer` proves they would."""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest

from tests.ledger_fixtures import ANON_EXECUTABLE, AUTHENTICATED_EXECUTABLE, ROUTINES_SQL

CLIENT_ROLES = ("anon", "authenticated")
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")


def routine_violations(conn) -> list[str]:
    out = []
    cursor = conn.execute(ROUTINES_SQL)
    names = [c.name for c in cursor.description]
    for row in cursor.fetchall():
        r = dict(zip(names, row, strict=True))
        sig, oid = r["sig"], r["oid"]
        config = r["proconfig"] or []
        if r["prokind"] in ("f", "p") and 'search_path=""' not in config:
            # An unpinned search_path lets a caller's objects shadow ours inside a definer.
            out.append(f"{sig}: search_path not pinned to '' ({config})")
        if r["nspname"] == "public" and not r["prosecdef"]:
            out.append(f"{sig}: entry point is not SECURITY DEFINER")
        acl = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a"
            "  WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE'),"
            " has_function_privilege('anon', p.oid, 'EXECUTE'),"
            " has_function_privilege('authenticated', p.oid, 'EXECUTE'),"
            " has_function_privilege('service_role', p.oid, 'EXECUTE'),"
            " p.provolatile,"
            " array(SELECT DISTINCT coalesce(g.rolname, 'PUBLIC')"
            "  FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a"
            "  LEFT JOIN pg_roles g ON g.oid = a.grantee WHERE a.grantee <> p.proowner ORDER BY 1)"
            " FROM pg_proc p WHERE p.oid = %s",
            (oid,),
        ).fetchone()
        public, anon, authenticated, service_role, volatility, grantees = acl
        if public:
            out.append(f"{sig}: executable by PUBLIC")
        if anon != (sig in ANON_EXECUTABLE):
            out.append(f"{sig}: anon EXECUTE is {anon}")
        if authenticated != (sig in AUTHENTICATED_EXECUTABLE):
            out.append(f"{sig}: authenticated EXECUTE is {authenticated}")
        if not service_role:
            out.append(f"{sig}: service_role cannot execute it")
        if (anon or authenticated or public) and volatility == "v":
            # PostgREST runs a non-VOLATILE function read-only: a public routine must be one.
            out.append(f"{sig}: executable by clients and VOLATILE")
        strangers = set(grantees) - {"service_role", "anon", "authenticated", "PUBLIC"}
        if strangers:
            out.append(f"{sig}: EXECUTE granted to {sorted(strangers)}")
    return out


def table_violations(conn) -> list[str]:
    out = []
    relations = conn.execute(
        "SELECT c.oid, n.nspname, c.relname, c.relkind, c.relrowsecurity, c.relforcerowsecurity,"
        " coalesce(c.reloptions, '{}')"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE (n.nspname = 'creditgate' AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S'))"
        "    OR (n.nspname = 'public' AND c.relname LIKE 'creditgate\\_%') ORDER BY 2, 3"
    ).fetchall()
    for oid, schema, name, kind, rls, forced, options in relations:
        rel = f"{schema}.{name}"
        if schema == "creditgate" and kind in ("r", "p") and not (rls and forced):
            out.append(f"{rel}: row level security enabled={rls} forced={forced}")
        if schema == "creditgate" and kind in ("m", "f"):
            out.append(f"{rel}: a {kind} relation cannot carry RLS")
        if schema == "public" and kind == "v" and "security_invoker=true" not in options:
            # A definer view reads as its owner, whom the ledger_owner policy lets see everything.
            out.append(f"{rel}: view is not security_invoker")
        if schema == "public" and kind not in ("v",):
            out.append(f"{rel}: creditgate keeps its tables out of public")
        privileges = ("SELECT", "USAGE", "UPDATE") if kind == "S" else TABLE_PRIVILEGES
        check = "has_sequence_privilege" if kind == "S" else "has_table_privilege"
        public_grants = conn.execute(
            "SELECT array(SELECT a.privilege_type"
            " FROM pg_class c, aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a"
            " WHERE c.oid = %s AND a.grantee = 0)",
            (oid,),
        ).fetchone()[0]
        if public_grants:
            out.append(f"{rel}: PUBLIC has {public_grants}")
        for role in CLIENT_ROLES:
            held = [
                p for p in privileges if conn.execute(f"SELECT {check}(%s, %s::oid, %s)", (role, oid, p)).fetchone()[0]
            ]
            allowed = ["SELECT"] if role == "authenticated" and kind in ("r", "p", "v") else []
            if role == "anon" and held:
                out.append(f"{rel}: anon has {held}")
            elif set(held) - set(allowed):
                out.append(f"{rel}: {role} has {held}")
            if role == "authenticated" and held and kind in ("r", "p"):
                policies = conn.execute(
                    "SELECT count(*) FROM pg_policies WHERE schemaname = %s AND tablename = %s"
                    " AND 'authenticated' = ANY (roles)",
                    (schema, name),
                ).fetchone()[0]
                if not policies:
                    out.append(f"{rel}: authenticated may SELECT but no policy limits it")
    # Policies: who they open the table to, and how far.
    for table, policy, roles, cmd, qual in conn.execute(
        "SELECT tablename, policyname, roles::text[], cmd, qual FROM pg_policies"
        " WHERE schemaname = 'creditgate' ORDER BY 1, 2"
    ).fetchall():
        where = f"creditgate.{table} policy {policy}"
        if "public" in roles or "anon" in roles:
            out.append(f"{where}: applies to {roles}")
        if "authenticated" in roles:
            if cmd != "SELECT":
                out.append(f"{where}: lets authenticated {cmd}")
            if (qual or "").strip("() ") == "true":
                out.append(f"{where}: lets authenticated read every row")
    schema_acl = conn.execute(
        "SELECT has_schema_privilege('anon', 'creditgate', 'USAGE'),"
        " has_schema_privilege('anon', 'creditgate', 'CREATE'),"
        " has_schema_privilege('authenticated', 'creditgate', 'CREATE'),"
        " EXISTS (SELECT 1 FROM pg_namespace n, aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a"
        "  WHERE n.nspname = 'creditgate' AND a.grantee = 0)"
    ).fetchone()
    for held, what in zip(
        schema_acl, ("anon USAGE", "anon CREATE", "authenticated CREATE", "PUBLIC access"), strict=True
    ):
        if held:
            out.append(f"schema creditgate: {what}")
    return out


@pytest.fixture
def conn(dsn):
    with psycopg.connect(dsn) as conn:
        yield conn
        conn.rollback()


def test_every_routine_is_pinned_and_locked(conn):
    assert routine_violations(conn) == []


def test_the_enumeration_sees_every_routine(conn):
    sigs = {row[1] for row in conn.execute(ROUTINES_SQL).fetchall()}
    assert ANON_EXECUTABLE | AUTHENTICATED_EXECUTABLE <= sigs
    assert {"public.creditgate_gate(jsonb)", "public.creditgate_record_usage(jsonb)", "creditgate.secure()"} <= sigs
    assert len([s for s in sigs if s.startswith("public.creditgate_")]) >= 15


def test_every_table_has_rls_forced_and_clients_only_read(conn):
    assert table_violations(conn) == []


def test_the_client_roles_can_write_nothing(conn, make_account):
    """The same as the catalog says, by trying: as the signed-in owner of an account, and as anon."""
    account_id = make_account("free")
    tables = [
        row[0]
        for row in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'creditgate' AND c.relkind IN ('r', 'p') ORDER BY 1"
        ).fetchall()
    ]
    attempts = {
        "insert": "INSERT INTO creditgate.{t} DEFAULT VALUES",
        "update": "UPDATE creditgate.{t} SET {c} = {c}",
        "delete": "DELETE FROM creditgate.{t}",
        "truncate": "TRUNCATE creditgate.{t}",
    }
    for role in CLIENT_ROLES:
        for table in tables:
            column = conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum = 1",
                (f"creditgate.{table}",),
            ).fetchone()[0]
            for statement in attempts.values():
                conn.execute(f"SET LOCAL ROLE {role}")
                conn.execute(
                    "SELECT set_config('request.jwt.claims', %s, true)",
                    (json.dumps({"role": role, "sub": account_id}),),
                )
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(statement.format(t=table, c=f'"{column}"'))
                conn.rollback()


def test_the_journal_is_append_only_even_for_the_owner(conn, make_account):
    account_id = make_account("free")
    enabled = conn.execute(
        "SELECT t.tgenabled FROM pg_trigger t WHERE t.tgrelid = 'creditgate.ledger_entries'::regclass"
        " AND t.tgname = 'ledger_entries_append_only'"
    ).fetchone()
    assert enabled == ("O",)
    # service_role holds UPDATE and DELETE on every table, so only the trigger stops it
    # there; it never held TRUNCATE. The owner holds everything: the trigger stops it all.
    for role in ("postgres", "service_role"):
        for statement, refusal in (
            ("UPDATE creditgate.ledger_entries SET amount = amount + 1 WHERE account_id = %s", "append-only"),
            ("DELETE FROM creditgate.ledger_entries WHERE account_id = %s", "append-only"),
            ("TRUNCATE creditgate.ledger_entries", "append-only" if role == "postgres" else "permission denied"),
        ):
            if role != "postgres":
                conn.execute(f"SET LOCAL ROLE {role}")
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match=refusal):
                conn.execute(statement, (account_id,) if "%s" in statement else ())
            conn.rollback()
    lines = conn.execute("SELECT count(*) FROM creditgate.ledger_entries WHERE account_id = %s", (account_id,))
    assert lines.fetchone()[0] == 4  # welcome + the free plan's three allowances, untouched
    # Appending is how the ledger works; service_role may do it.
    conn.execute("SET LOCAL ROLE service_role")
    conn.execute(
        "INSERT INTO creditgate.ledger_entries (account_id, key, kind, amount, balance_after)"
        " VALUES (%s, 'credits', 'adjustment', 0, 0)",
        (account_id,),
    )
    conn.rollback()


def test_the_checks_catch_an_unsecured_newcomer(conn):
    """Inside a transaction that is rolled back: what a migration that forgot secure() (or
    granted one thing too many) would leave behind, and the checks above finding all of it."""
    conn.execute("""
        CREATE FUNCTION public.creditgate_zz_open(request jsonb) RETURNS jsonb
          LANGUAGE sql SECURITY DEFINER AS $$ SELECT request $$;
        CREATE FUNCTION public.creditgate_zz_supabase(request jsonb) RETURNS jsonb
          LANGUAGE sql SECURITY DEFINER SET search_path = '' AS $$ SELECT request $$;
        REVOKE ALL ON FUNCTION public.creditgate_zz_supabase(jsonb) FROM PUBLIC;
        GRANT EXECUTE ON FUNCTION public.creditgate_zz_supabase(jsonb) TO anon, authenticated, service_role;
        CREATE FUNCTION creditgate.zz_helper() RETURNS void
          LANGUAGE sql SET search_path = 'public' AS $$ SELECT $$;
        CREATE FUNCTION creditgate.zz_locked() RETURNS void
          LANGUAGE sql SET search_path = '' AS $$ SELECT $$;
        REVOKE ALL ON FUNCTION creditgate.zz_locked() FROM PUBLIC;
        CREATE PROCEDURE creditgate.zz_proc() LANGUAGE sql SET search_path = '' AS $$ SELECT $$;
        CREATE TABLE creditgate.zz_table (id int);
        GRANT SELECT, INSERT ON creditgate.zz_table TO authenticated;
        CREATE TABLE creditgate.zz_half (id int);
        ALTER TABLE creditgate.zz_half ENABLE ROW LEVEL SECURITY;
        CREATE POLICY zz_everyone ON creditgate.zz_half FOR ALL TO public USING (true);
        CREATE VIEW public.creditgate_zz_view AS SELECT 1 AS one;
        GRANT SELECT ON public.creditgate_zz_view TO anon;
    """)
    found = "\n".join(routine_violations(conn) + table_violations(conn))
    conn.rollback()
    for expected in (
        "public.creditgate_zz_open(jsonb): search_path not pinned",
        "public.creditgate_zz_open(jsonb): executable by PUBLIC",
        "public.creditgate_zz_supabase(jsonb): anon EXECUTE is True",
        "public.creditgate_zz_supabase(jsonb): authenticated EXECUTE is True",
        "public.creditgate_zz_supabase(jsonb): executable by clients and VOLATILE",
        "creditgate.zz_helper(): search_path not pinned",
        "creditgate.zz_helper(): executable by PUBLIC",
        "creditgate.zz_locked(): service_role cannot execute it",
        "creditgate.zz_proc(): executable by PUBLIC",
        "creditgate.zz_table: row level security enabled=False forced=False",
        "creditgate.zz_table: authenticated has ['SELECT', 'INSERT']",
        "creditgate.zz_table: authenticated may SELECT but no policy limits it",
        "creditgate.zz_half: row level security enabled=True forced=False",
        "creditgate.zz_half policy zz_everyone: applies to ['public']",
        "public.creditgate_zz_view: view is not security_invoker",
        "public.creditgate_zz_view: anon has ['SELECT'",
    ):
        assert expected in found, f"missed: {expected}\n--- found:\n{found}"
    # And secure() itself repairs the routines and the tables it knows about.
    conn.execute("""
        CREATE FUNCTION public.creditgate_zz_open(request jsonb) RETURNS jsonb
          LANGUAGE sql STABLE SECURITY DEFINER SET search_path = '' AS $$ SELECT request $$;
        CREATE TABLE creditgate.zz_table (id int);
        SELECT creditgate.secure();
    """)
    after = "\n".join(routine_violations(conn) + table_violations(conn))
    conn.rollback()
    assert "zz_" not in after, after


def test_my_account_ids_answers_from_the_jwt_only(conn, make_account):
    """The one private routine a user runs, and what the RLS policies are built on."""
    account_id = make_account("free", account_id=str(uuid.uuid4()))
    for sub, expected in ((account_id, [account_id]), (str(uuid.uuid4()), [])):
        conn.execute("SET LOCAL ROLE authenticated")
        conn.execute(
            "SELECT set_config('request.jwt.claims', %s, true)",
            (json.dumps({"role": "authenticated", "sub": sub}),),
        )
        assert [r[0] for r in conn.execute("SELECT * FROM creditgate.my_account_ids()")] == expected
        assert [r[0] for r in conn.execute("SELECT id FROM creditgate.accounts")] == expected
        conn.rollback()


def test_secure_also_covers_procedures_and_partitioned_tables(conn):
    conn.execute("""
        CREATE PROCEDURE creditgate.zz_proc() LANGUAGE sql SET search_path = '' AS $$ SELECT $$;
        CREATE TABLE creditgate.zz_parted (id int) PARTITION BY RANGE (id);
        SELECT creditgate.secure();
    """)
    after = "\n".join(routine_violations(conn) + table_violations(conn))
    conn.rollback()
    assert "zz_" not in after, after
