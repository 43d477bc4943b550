"""The PostgREST test server, checked against a throwaway PostgreSQL 15 and real clients.

What the Supabase adapter relies on is proven here with supabase-py and the bare
postgrest client, not with hand-made HTTP: RPC argument typing, RLS under a user JWT,
EXECUTE grants (401 for anon, 403 for a signed-in user, function body not run), custom
PTxyz statuses with RAISE ... USING DETAIL/HINT, the SQLSTATE mapping, JWT failures and
32 concurrent calls.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.fakes.postgrest_server import FakePostgREST, make_jwt, pg_error_status

postgrest = pytest.importorskip("postgrest")
supabase = pytest.importorskip("supabase")
from postgrest import SyncPostgrestClient  # noqa: E402
from postgrest.exceptions import APIError  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
COMPAT_SQL = REPO / "sql" / "00_supabase_compat.sql"
SECRET = "test-jwt-secret-with-at-least-32-characters!"
ALICE = uuid.UUID("11111111-1111-4111-8111-111111111111")
BOB = uuid.UUID("22222222-2222-4222-8222-222222222222")


# ------------------------------------------------------------------ throwaway PostgreSQL


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_pg_user() -> dict:
    """initdb refuses to run as root; under root, run the server as `postgres`."""
    if os.geteuid() != 0:
        return {}
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and there is no 'postgres' user for initdb")
    return {"user": entry.pw_uid, "group": entry.pw_gid}


@pytest.fixture(scope="module")
def pg_dsn():
    if not (shutil.which("initdb") and shutil.which("pg_ctl")):
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) are not on PATH")
    run_as = _as_pg_user()
    base = Path(tempfile.mkdtemp(prefix="creditgate-pg-"))
    if run_as:
        os.chown(base, run_as["user"], run_as["group"])
    data, log = base / "data", base / "log"
    port = _free_port()
    subprocess.run(
        ["initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"],
        check=True,
        capture_output=True,
        **run_as,
    )
    opts = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60"
    subprocess.run(
        ["pg_ctl", "-D", str(data), "-l", str(log), "-o", opts, "-w", "start"],
        check=True,
        capture_output=True,
        **run_as,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(["pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop"], capture_output=True, **run_as)
        shutil.rmtree(base, ignore_errors=True)


SCHEMA_SQL = """
-- What the tests read through RLS.
CREATE TABLE public.notes (
  id bigserial PRIMARY KEY,
  user_id uuid NOT NULL,
  body text,
  amount integer NOT NULL DEFAULT 0,
  CONSTRAINT notes_body_unique UNIQUE (body),
  CONSTRAINT notes_amount_nonneg CHECK (amount >= 0)
);
ALTER TABLE public.notes ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.notes FORCE ROW LEVEL SECURITY;
CREATE POLICY notes_own ON public.notes FOR SELECT TO authenticated USING (user_id = auth.uid());
GRANT SELECT ON public.notes TO anon, authenticated, service_role;

-- Every run of a function body leaves a row here, so a test can prove one did not run.
CREATE TABLE public.calls (id bigserial PRIMARY KEY, fn text NOT NULL, by_role text);
ALTER TABLE public.calls ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.calls FORCE ROW LEVEL SECURITY;

CREATE TABLE public.counter (id int PRIMARY KEY, n bigint NOT NULL);
INSERT INTO public.counter VALUES (1, 0);
ALTER TABLE public.counter ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.counter FORCE ROW LEVEL SECURITY;

-- The service-only entry point, locked down the way DESIGN.md asks for.
CREATE FUNCTION public.svc_grant(p_user uuid, p_amount integer, p_meta jsonb DEFAULT '{}'::jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
BEGIN
  INSERT INTO public.calls (fn, by_role) VALUES ('svc_grant', auth.role());
  INSERT INTO public.notes (user_id, body, amount) VALUES (p_user, p_meta ->> 'note', p_amount);
  RETURN jsonb_build_object('user_id', p_user, 'amount', p_amount, 'meta', p_meta,
                            'jwt_role', auth.role(), 'current_user', current_user);
END $$;
REVOKE EXECUTE ON FUNCTION public.svc_grant(uuid, integer, jsonb) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.svc_grant(uuid, integer, jsonb) TO service_role;

CREATE FUNCTION public.charge(p_account uuid, p_cost numeric) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
BEGIN
  INSERT INTO public.calls (fn, by_role) VALUES ('charge', auth.role());
  RAISE SQLSTATE 'PT402' USING
    MESSAGE = 'insufficient_credits',
    DETAIL = jsonb_build_object('account', p_account, 'needed', p_cost, 'available', 0)::text,
    HINT = 'buy_pack';
END $$;
REVOKE EXECUTE ON FUNCTION public.charge(uuid, numeric) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.charge(uuid, numeric) TO service_role;

CREATE FUNCTION public.whoami() RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT jsonb_build_object(
    'uid', auth.uid(), 'role', auth.role(), 'jwt', auth.jwt(), 'current_user', current_user,
    'claim_sub', nullif(current_setting('request.jwt.claim.sub', true), ''),
    'method', current_setting('request.method', true),
    'path', current_setting('request.path', true),
    'client_info', current_setting('request.headers', true)::jsonb ->> 'x-client-info',
    'search_path', current_setting('search_path'),
    'read_only', current_setting('transaction_read_only'))
$$;
GRANT EXECUTE ON FUNCTION public.whoami() TO anon, authenticated, service_role;

CREATE FUNCTION public.add_them(a integer, b numeric, label text DEFAULT 'sum') RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT label || '=' || (a + b)::text $$;

CREATE FUNCTION public.echo_types(p_id uuid, p_tags text[], p_doc json, p_flag boolean,
                                  p_at timestamptz)
RETURNS TABLE (id uuid, tags text[], doc json, flag boolean, at timestamptz)
LANGUAGE sql IMMUTABLE AS $$ SELECT p_id, p_tags, p_doc, p_flag, p_at $$;

CREATE FUNCTION public.series(n integer) RETURNS SETOF integer
LANGUAGE sql IMMUTABLE AS $$ SELECT generate_series(1, n) $$;

CREATE FUNCTION public.my_notes() RETURNS SETOF public.notes
LANGUAGE sql STABLE AS $$ SELECT * FROM public.notes $$;

CREATE FUNCTION public.one_note(p_id bigint) RETURNS public.notes
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = '' AS $$
  SELECT * FROM public.notes WHERE id = p_id
$$;

CREATE FUNCTION public.nothing() RETURNS void LANGUAGE sql AS $$ SELECT $$;

CREATE FUNCTION public.single_json(jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$ SELECT $1 || '{"seen": true}'::jsonb $$;

CREATE FUNCTION public.fail(kind text) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
BEGIN
  IF kind = 'raise' THEN
    RAISE EXCEPTION 'plain raise' USING DETAIL = 'some detail', HINT = 'some hint';
  ELSIF kind = 'unique' THEN
    INSERT INTO public.notes (user_id, body) VALUES (gen_random_uuid(), 'dup');
    INSERT INTO public.notes (user_id, body) VALUES (gen_random_uuid(), 'dup');
  ELSIF kind = 'check' THEN
    INSERT INTO public.notes (user_id, body, amount) VALUES (gen_random_uuid(), 'neg', -1);
  ELSIF kind = 'div' THEN
    RETURN 1 / 0;
  ELSIF kind = 'serialization' THEN
    RAISE SQLSTATE '40001' USING MESSAGE = 'could not serialize';
  ELSIF kind = 'conflict' THEN
    RAISE SQLSTATE 'PT409' USING MESSAGE = 'conflict', DETAIL = 'already settled';
  ELSIF kind = 'pgrst' THEN
    RAISE SQLSTATE 'PGRST' USING
      MESSAGE = '{"code":"CG001","message":"custom","details":"d","hint":"h"}',
      DETAIL = '{"status":429,"headers":{"Retry-After":"7"}}';
  END IF;
  RETURN 0;
END $$;

-- A STABLE function that writes (through a volatile helper, which plpgsql allows):
-- PostgREST runs STABLE functions read-only, so it must fail.
CREATE FUNCTION public.log_call(p_fn text) RETURNS integer LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO public.calls (fn, by_role) VALUES (p_fn, auth.role());
  RETURN 1;
END $$;
CREATE FUNCTION public.mislabeled() RETURNS integer LANGUAGE sql STABLE AS $$
  SELECT public.log_call('mislabeled')
$$;

CREATE FUNCTION public.bump(p_sleep double precision DEFAULT 0) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE v bigint;
BEGIN
  PERFORM pg_sleep(p_sleep);
  UPDATE public.counter SET n = n + 1 WHERE id = 1 RETURNING n INTO v;
  RETURN v;
END $$;
GRANT EXECUTE ON FUNCTION public.bump(double precision) TO service_role;

CREATE SCHEMA private;
GRANT USAGE ON SCHEMA private TO anon, authenticated, service_role;
CREATE FUNCTION private.hidden() RETURNS integer LANGUAGE sql AS $$ SELECT 42 $$;
"""


@pytest.fixture(scope="module")
def db(pg_dsn):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(COMPAT_SQL.read_text())
        conn.execute(SCHEMA_SQL)
        conn.execute(
            "INSERT INTO public.notes (user_id, body, amount) VALUES "
            "(%(a)s, 'a1', 5), (%(a)s, 'a2', 7), (%(a)s, 'a3', 9), (%(b)s, 'b1', 100), (%(b)s, 'b2', 5)",
            {"a": ALICE, "b": BOB},
        )
    return pg_dsn


@pytest.fixture(scope="module")
def server(db):
    with FakePostgREST(db, SECRET, schemas=("public", "private")) as srv:
        yield srv


def _scalar(dsn: str, query: str, params=None):
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(query, params).fetchone()[0]


def _calls(dsn: str, fn: str) -> int:
    return _scalar(dsn, "SELECT count(*) FROM public.calls WHERE fn = %s", (fn,))


@pytest.fixture(scope="module")
def service_client(server):
    return supabase.create_client(server.url, server.service_role_key)


def _rest(server: FakePostgREST, token: str | None, apikey: str | None = None) -> SyncPostgrestClient:
    """A bare postgrest client, as the gate may use one to skip supabase-py's import cost."""
    headers = {"apikey": apikey or server.anon_key}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return SyncPostgrestClient(server.rest_url, headers=headers)


def _user(sub: uuid.UUID, **kw) -> str:
    return make_jwt(SECRET, role="authenticated", sub=sub, **kw)


# ------------------------------------------------------------------------------- clients


def test_supabase_py_rpc_with_service_role(server, db, service_client):
    before = _calls(db, "svc_grant")
    res = service_client.rpc(
        "svc_grant", {"p_user": str(BOB), "p_amount": 3, "p_meta": {"note": "sb-py", "n": [1, 2]}}
    ).execute()
    assert res.data == {
        "user_id": str(BOB),
        "amount": 3,
        "meta": {"note": "sb-py", "n": [1, 2]},
        "jwt_role": "service_role",
        "current_user": "postgres",
    }
    assert _calls(db, "svc_grant") == before + 1
    # The row was committed by the request's transaction.
    assert _scalar(db, "SELECT amount FROM public.notes WHERE body = 'sb-py'") == 3


def test_bare_postgrest_client_rpc(server):
    client = _rest(server, server.service_role_key, apikey=server.service_role_key)
    assert client.rpc("add_them", {"a": 2, "b": 0.5}).execute().data == "sum=2.5"
    assert client.rpc("add_them", {"a": 1, "b": 1, "label": "x"}).execute().data == "x=2"


def test_claims_role_and_request_settings_reach_sql(server):
    res = _rest(server, _user(ALICE)).rpc("whoami", {}).execute().data
    assert res["uid"] == str(ALICE) and res["claim_sub"] == str(ALICE)
    assert res["role"] == "authenticated" and res["current_user"] == "authenticated"
    assert res["jwt"]["aud"] == "authenticated" and res["jwt"]["sub"] == str(ALICE)
    assert res["method"] == "POST" and res["path"] == "/rpc/whoami"
    assert res["client_info"].startswith("supabase-py/postgrest-py")
    assert res["search_path"] == '"public", "public"'
    # STABLE functions run read-only even over POST, as in PostgREST.
    assert res["read_only"] == "on"

    anon = _rest(server, None).rpc("whoami", {}).execute().data
    assert anon["role"] == "anon" and anon["current_user"] == "anon" and anon["uid"] is None

    # A JWT without a role claim runs as the anonymous role.
    no_role = make_jwt(SECRET, role=None, sub=ALICE)
    res = _rest(server, no_role).rpc("whoami", {}).execute().data
    assert res["current_user"] == "anon" and res["jwt"]["role"] == "anon"


def test_argument_types_follow_the_function_signature(server):
    client = _rest(server, server.service_role_key)
    uid = str(uuid.uuid4())
    rows = (
        client.rpc(
            "echo_types",
            {
                "p_id": uid,
                "p_tags": ["a", "b,c"],
                "p_doc": {"k": [1, None]},
                "p_flag": True,
                "p_at": "2024-01-02T03:04:05Z",
            },
        )
        .execute()
        .data
    )
    assert rows == [
        {"id": uid, "tags": ["a", "b,c"], "doc": {"k": [1, None]}, "flag": True, "at": "2024-01-02T03:04:05+00:00"}
    ]
    assert client.rpc("series", {"n": 3}).execute().data == [1, 2, 3]
    assert client.rpc("single_json", {"x": 1}).execute().data == {"x": 1, "seen": True}
    # void: 204 without a body; postgrest-py turns that into an empty list.
    assert client.rpc("nothing", {}).execute().data == []
    # A composite, non-SETOF result is one object.
    note_id = _scalar(server.dsn, "SELECT id FROM public.notes WHERE body = 'b1'")
    one = client.rpc("one_note", {"p_id": note_id}).execute().data
    assert one["body"] == "b1" and one["amount"] == 100


def test_get_rpc_for_stable_functions(server):
    client = _rest(server, server.service_role_key)
    assert client.rpc("add_them", {"a": 4, "b": 1}, get=True).execute().data == "sum=5"
    assert client.rpc("series", {"n": 4}, get=True).execute().data == [1, 2, 3, 4]


def test_rpc_result_filters_order_limit(server):
    user = _rest(server, _user(ALICE))
    rows = (
        user.rpc("my_notes", {})
        .select("body,amount")
        .gt("amount", 5)
        .order("amount", desc=True)
        .limit(5)
        .execute()
        .data
    )
    assert rows == [{"body": "a3", "amount": 9}, {"body": "a2", "amount": 7}]


# ------------------------------------------------------------------------ RLS via tables


def test_user_jwt_reads_only_its_own_rows(server):
    alice = _rest(server, _user(ALICE))
    bodies = {r["body"] for r in alice.from_("notes").select("*").execute().data}
    assert bodies == {"a1", "a2", "a3"}
    bob = _rest(server, _user(BOB))
    assert {r["user_id"] for r in bob.from_("notes").select("user_id").execute().data} == {str(BOB)}
    # Filtering on someone else's id finds nothing rather than their rows.
    assert alice.from_("notes").select("*").eq("user_id", str(BOB)).execute().data == []
    # anon has SELECT but no policy: nothing.
    assert _rest(server, None).from_("notes").select("*").execute().data == []
    # The same through supabase-py, with the user's token on a client of its own.
    user_client = supabase.create_client(
        server.url, server.anon_key, options=supabase.ClientOptions(headers={"Authorization": f"Bearer {_user(BOB)}"})
    )
    rows = user_client.table("notes").select("body,user_id").execute().data
    assert {r["user_id"] for r in rows} == {str(BOB)} and {"b1", "b2"} <= {r["body"] for r in rows}


def test_table_filters_order_limit_select(server):
    alice = _rest(server, _user(ALICE))
    q = alice.from_("notes").select("body, amount")
    assert q.in_("body", ["a1", "a3", "b1"]).order("amount", desc=True).execute().data == [
        {"body": "a3", "amount": 9},
        {"body": "a1", "amount": 5},
    ]
    assert [r["body"] for r in alice.from_("notes").select("body").neq("body", "a2").order("body").execute().data] == [
        "a1",
        "a3",
    ]
    assert alice.from_("notes").select("body").order("amount").limit(1).execute().data == [{"body": "a1"}]
    assert alice.from_("notes").select("body").eq("amount", 7).single().execute().data == {"body": "a2"}
    res = alice.from_("notes").select("body", count="exact").limit(2).execute()
    assert res.count == 3 and len(res.data) == 2


def test_service_role_bypasses_rls(server, service_client):
    bodies = {r["body"] for r in service_client.table("notes").select("body").execute().data}
    assert {"a1", "a2", "a3", "b1", "b2"} <= bodies


def test_schema_switching_and_unexposed_schema(server):
    client = _rest(server, server.service_role_key)
    assert client.schema("private").rpc("hidden", {}).execute().data == 42
    with pytest.raises(APIError) as err:
        client.schema("auth").from_("users").select("*").execute()
    assert err.value.code == "PGRST106"


# ------------------------------------------------------------------- grants and errors


def test_service_only_function_refused_to_anon_and_users(server, db):
    before_calls = _calls(db, "svc_grant")
    before_rows = _scalar(db, "SELECT count(*) FROM public.notes")
    args = {"p_user": str(ALICE), "p_amount": 1000}

    resp = httpx.post(
        f"{server.rest_url}/rpc/svc_grant",
        json=args,
        headers={"apikey": server.anon_key, "Authorization": f"Bearer {server.anon_key}"},
    )
    assert resp.status_code == 401
    assert resp.json()["code"] == "42501"
    assert "permission denied for function svc_grant" in resp.json()["message"]

    user_jwt = _user(ALICE)
    resp = httpx.post(
        f"{server.rest_url}/rpc/svc_grant",
        json=args,
        headers={"apikey": server.anon_key, "Authorization": f"Bearer {user_jwt}"},
    )
    assert resp.status_code == 403 and resp.json()["code"] == "42501"

    with pytest.raises(APIError) as err:
        supabase.create_client(server.url, server.anon_key).rpc("svc_grant", args).execute()
    assert err.value.code == "42501"

    assert _calls(db, "svc_grant") == before_calls
    assert _scalar(db, "SELECT count(*) FROM public.notes") == before_rows


def test_pt402_with_detail_and_hint(server, db, service_client):
    before = _calls(db, "charge")
    resp = httpx.post(
        f"{server.rest_url}/rpc/charge",
        json={"p_account": str(ALICE), "p_cost": 12.5},
        headers={"apikey": server.service_role_key, "Authorization": f"Bearer {server.service_role_key}"},
    )
    assert resp.status_code == 402
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert body["code"] == "PT402" and body["message"] == "insufficient_credits"
    assert body["hint"] == "buy_pack"
    assert json.loads(body["details"]) == {"account": str(ALICE), "needed": 12.5, "available": 0}

    # How supabase-py surfaces it: APIError with the JSON fields, no HTTP status.
    with pytest.raises(APIError) as err:
        service_client.rpc("charge", {"p_account": str(ALICE), "p_cost": 3}).execute()
    e = err.value
    assert (e.code, e.message, e.hint) == ("PT402", "insufficient_credits", "buy_pack")
    assert isinstance(e.details, str)  # DETAIL arrives as text; the adapter parses it
    assert json.loads(e.details)["needed"] == 3
    assert e.json() == {"code": "PT402", "message": "insufficient_credits", "details": e.details, "hint": "buy_pack"}
    # The function raised, so its own insert was rolled back with the transaction.
    assert _calls(db, "charge") == before


@pytest.mark.parametrize(
    "kind,status,code",
    [
        ("raise", 400, "P0001"),
        ("unique", 409, "23505"),
        ("check", 400, "23514"),
        ("div", 400, "22012"),
        ("serialization", 500, "40001"),
        ("conflict", 409, "PT409"),
    ],
)
def test_sqlstate_to_http_status(server, kind, status, code):
    resp = httpx.post(f"{server.rest_url}/rpc/fail", json={"kind": kind}, headers={"apikey": server.service_role_key})
    assert (resp.status_code, resp.json()["code"]) == (status, code)
    assert set(resp.json()) == {"code", "message", "details", "hint"}
    if kind == "raise":
        assert resp.json()["details"] == "some detail" and resp.json()["hint"] == "some hint"
    if kind == "conflict":
        assert resp.json()["details"] == "already settled"


def test_raise_pgrst_full_control(server):
    resp = httpx.post(
        f"{server.rest_url}/rpc/fail", json={"kind": "pgrst"}, headers={"apikey": server.service_role_key}
    )
    assert resp.status_code == 429 and resp.headers["retry-after"] == "7"
    assert resp.json() == {"code": "CG001", "message": "custom", "details": "d", "hint": "h"}


def test_stable_function_that_writes_fails_read_only(server, db):
    resp = httpx.post(f"{server.rest_url}/rpc/mislabeled", json={}, headers={"apikey": server.service_role_key})
    assert (resp.status_code, resp.json()["code"]) == (405, "25006")
    assert _calls(db, "mislabeled") == 0
    # GET always runs read-only, whatever the function's volatility.
    before = _scalar(db, "SELECT n FROM public.counter")
    with pytest.raises(APIError) as err:
        _rest(server, server.service_role_key).rpc("bump", {}, get=True).execute()
    assert err.value.code == "25006"
    assert _scalar(db, "SELECT n FROM public.counter") == before


def test_unknown_function_and_table(server):
    client = _rest(server, server.service_role_key)
    with pytest.raises(APIError) as err:
        client.rpc("no_such_fn", {"x": 1}).execute()
    assert err.value.code == "PGRST202"
    assert "public.no_such_fn(x)" in err.value.message
    # Known function, unknown argument name: also PGRST202.
    with pytest.raises(APIError) as err:
        client.rpc("add_them", {"a": 1, "zzz": 2}).execute()
    assert err.value.code == "PGRST202"
    with pytest.raises(APIError) as err:
        client.from_("no_such_table").select("*").execute()
    assert err.value.code == "PGRST205"
    resp = httpx.post(f"{server.rest_url}/rpc/no_such_fn", json={}, headers={"apikey": server.service_role_key})
    assert resp.status_code == 404


# ------------------------------------------------------------------------------------ JWT


@pytest.mark.parametrize(
    "token,code",
    [
        (make_jwt("another-secret-of-sufficient-length-0123456789", role="service_role"), "PGRST301"),
        (make_jwt(SECRET, role="service_role", exp_in=-120), "PGRST303"),
        ("not-a-jwt", "PGRST301"),
    ],
)
def test_bad_jwt_is_401(server, db, token, code):
    before = _scalar(db, "SELECT n FROM public.counter")
    resp = httpx.post(
        f"{server.rest_url}/rpc/bump", json={}, headers={"apikey": server.anon_key, "Authorization": f"Bearer {token}"}
    )
    assert resp.status_code == 401
    assert resp.json()["code"] == code
    assert resp.headers["www-authenticate"].startswith("Bearer")
    assert _scalar(db, "SELECT n FROM public.counter") == before
    with pytest.raises(APIError) as err:
        _rest(server, token).rpc("bump", {}).execute()
    assert err.value.code == code


def test_missing_keys_and_unknown_role(server):
    resp = httpx.post(f"{server.rest_url}/rpc/whoami", json={})
    assert resp.status_code == 401 and resp.json()["code"] == "PGRST302"
    # Supabase's gateway wants the project key even when a user token is sent.
    resp = httpx.post(f"{server.rest_url}/rpc/whoami", json={}, headers={"Authorization": f"Bearer {_user(ALICE)}"})
    assert resp.status_code == 401 and resp.json()["code"] == "PGRST302"
    # Only the apikey: the gateway uses it as the bearer token.
    resp = httpx.post(f"{server.rest_url}/rpc/whoami", json={}, headers={"apikey": server.service_role_key})
    assert resp.status_code == 200 and resp.json()["current_user"] == "service_role"
    # A validly signed token naming a role that does not exist.
    ghost = make_jwt(SECRET, role="ghost")
    resp = httpx.post(
        f"{server.rest_url}/rpc/whoami",
        json={},
        headers={"apikey": server.anon_key, "Authorization": f"Bearer {ghost}"},
    )
    assert resp.status_code == 401 and resp.json()["code"] == "22023"


def test_make_jwt_claim_sets():
    import jwt as pyjwt

    key = pyjwt.decode(make_jwt(SECRET, role="anon"), SECRET, algorithms=["HS256"])
    assert key["role"] == "anon" and key["iss"] == "supabase" and "aud" not in key
    user = pyjwt.decode(_user(ALICE, email="a@example.com"), SECRET, algorithms=["HS256"], audience="authenticated")
    assert user["sub"] == str(ALICE) and user["role"] == "authenticated"
    assert user["email"] == "a@example.com" and user["exp"] - user["iat"] == 3600
    assert user["iss"].endswith("/auth/v1")
    assert "aud" not in pyjwt.decode(_user(ALICE, aud=None), SECRET, algorithms=["HS256"])


# ------------------------------------------------------------------------ safety / load


def test_request_strings_are_quoted_not_executed(server, db):
    client = _rest(server, server.service_role_key)
    evil = 'notes"; DROP TABLE public.counter; --'
    with pytest.raises(APIError) as err:
        client.from_(evil).select("*").execute()
    assert err.value.code == "PGRST205"
    with pytest.raises(APIError) as err:
        client.from_("notes").select('id, "x; DROP TABLE public.counter"').execute()
    assert err.value.code == "42703"
    with pytest.raises(APIError):
        client.from_("notes").select("*").eq('body" = body OR true --', "x").execute()
    rows = client.from_("notes").select("body").eq("body", "' OR '1'='1").execute().data
    assert rows == []
    with pytest.raises(APIError):
        client.from_("notes").select("*").order("id; DROP TABLE public.counter").execute()
    with pytest.raises(APIError) as err:
        client.rpc("add_them); DROP TABLE public.counter; --", {}).execute()
    assert err.value.code == "PGRST202"
    with pytest.raises(APIError):
        client.rpc("add_them", {"a": "1); DROP TABLE public.counter; --", "b": 1}).execute()
    assert _scalar(db, "SELECT to_regclass('public.counter') IS NOT NULL")


def test_32_concurrent_calls(server, db, service_client):
    _ = service_client.postgrest  # built once here, not raced by 32 threads
    start_n = _scalar(db, "SELECT n FROM public.counter")
    sleep = 0.25
    barrier = threading.Barrier(32)

    def call(_):
        barrier.wait()
        return service_client.rpc("bump", {"p_sleep": sleep}).execute().data

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(call, range(32)))
    elapsed = time.monotonic() - t0
    # Each call ran exactly once and saw a distinct counter value.
    assert sorted(results) == list(range(start_n + 1, start_n + 33))
    assert _scalar(db, "SELECT n FROM public.counter") == start_n + 32
    # Served in parallel (pool of 10 connections): well below 32 sequential sleeps (8 s;
    # parallel it takes about 1 s here, so a much slower machine still passes).
    assert elapsed < 32 * sleep * 0.75


def test_status_mapping_table():
    assert pg_error_status("PT402", "", True) == 402
    assert pg_error_status("PTabc", "", True) == 500
    assert pg_error_status("42501", "", False) == 401
    assert pg_error_status("42501", "", True) == 403
    assert pg_error_status("23503", "", True) == 409
    assert pg_error_status("40P01", "", True) == 500
    assert pg_error_status("57014", "", True) == 500
    assert pg_error_status("42883", "function x() does not exist", True) == 404
    assert pg_error_status("XX000", "", True) == 500
    assert pg_error_status("P0002", "", True) == 500
    assert pg_error_status("22P02", "", True) == 400
