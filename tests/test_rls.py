"""What a browser can do with Supabase's REST API: with a user's JWT it reads its own
accounts' rows and nothing else; with the anon key it reads nothing; with either it can
execute no creditgate routine but the public catalog and price list, and changes nothing.

Every request goes through a PostgREST-compatible server that runs it on the real database
under the JWT's role and claims, so grants and RLS are the database's own."""

from __future__ import annotations

import uuid

import httpx
import psycopg
import pytest
from psycopg import sql as pgsql

from tests.conftest import JWT_SECRET, MICRO
from tests.fakes.postgrest_server import make_jwt
from tests.ledger_fixtures import (
    ANON_EXECUTABLE,
    AUTHENTICATED_EXECUTABLE,
    ROUTINES_SQL,
    rest_server,  # noqa: F401 - fixture
)

VIEWS = ["creditgate_my_balances", "creditgate_my_transactions", "creditgate_my_usage", "creditgate_my_orders"]


class World:
    """Two personal accounts and an org account, each with usage, holds, grants and an order."""

    def __init__(self, ledger, dsn: str):
        self.user_a, self.user_b, self.member, self.stranger = (str(uuid.uuid4()) for _ in range(4))
        self.org = f"org-{uuid.uuid4().hex[:12]}"
        ledger.ensure_account({"account_id": self.user_a, "plan": "free", "owner": "user"})
        ledger.ensure_account({"account_id": self.user_b, "plan": "free", "owner": "user"})
        ledger.ensure_account({"account_id": self.org, "plan": "pro", "owner": "org"})
        ledger.set_member({"account_id": self.org, "user_id": self.member, "role": "member"})
        for account in self.accounts:
            ledger.record_usage(
                {
                    "account_id": account,
                    "feature": "chat",
                    "model": "gpt-4o-mini",
                    "idempotency_key": "rls-usage",
                    "usage": {"input_tokens": 500, "output_tokens": 200},
                }
            )
            ledger.gate(
                {
                    "account_id": account,
                    "feature": "chat",
                    "model": "gpt-4o-mini",
                    "mode": "reserve",
                    "estimate": {"input_tokens": 100, "max_output_tokens": 100},
                    "idempotency_key": "rls-hold",
                }
            )
            ledger.grant_credits(
                {
                    "account_id": account,
                    "amount": 5 * MICRO,
                    "source": "promo",
                    "reason": "rls",
                    "idempotency_key": "rls-promo",
                }
            )
        with psycopg.connect(dsn, autocommit=True) as conn:
            for account in self.accounts:
                conn.execute(
                    "INSERT INTO creditgate.orders (account_id, kind, item_id, amount_minor, currency, credits)"
                    " VALUES (%s, 'pack', 'starter', 1900, 'usd', 2000000000)",
                    (account,),
                )

    @property
    def accounts(self) -> list[str]:
        return [self.user_a, self.user_b, self.org]


@pytest.fixture(scope="module")
def world(ledger, dsn) -> World:
    return World(ledger, dsn)


@pytest.fixture(scope="module")
def http(rest_server):  # noqa: F811
    with httpx.Client(base_url=rest_server.rest_url, timeout=30) as client:
        yield client


def user_token(user_id: str) -> str:
    return make_jwt(JWT_SECRET, role="authenticated", sub=user_id)


def headers(server, token: str | None = None, profile: str | None = None, write: bool = False) -> dict:
    """What supabase-js sends: always the anon key as apikey, the user's JWT (if any) as bearer."""
    out = {"apikey": server.anon_key}
    if token:
        out["Authorization"] = f"Bearer {token}"
    if profile:
        out["Content-Profile" if write else "Accept-Profile"] = profile
    return out


def read(http, server, relation: str, token: str | None = None, profile: str | None = None, **params):
    return http.get(f"/{relation}", headers=headers(server, token, profile), params=params)


def owner_column(relation: str) -> str:
    return "id" if relation == "accounts" else "account_id"


@pytest.fixture(scope="module")
def tables(dsn) -> dict[str, bool]:
    """Every table of the private schema, and whether `authenticated` may SELECT it."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT c.relname, has_table_privilege('authenticated', c.oid, 'SELECT')"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'creditgate' AND c.relkind IN ('r', 'p') ORDER BY 1"
        ).fetchall()
    return dict(rows)


# ------------------------------------------------------------------------ reads


@pytest.mark.parametrize("view", VIEWS)
def test_a_user_reads_only_its_own_rows_from_the_views(http, rest_server, world, view):  # noqa: F811
    for user in (world.user_a, world.user_b):
        answer = read(http, rest_server, view, user_token(user))
        assert answer.status_code == 200, answer.text
        rows = answer.json()
        assert rows, f"{view} shows the user nothing of its own"
        assert {row["account_id"] for row in rows} == {user}

    # Asking for someone else's rows by name finds none.
    other = read(http, rest_server, view, user_token(world.user_a), account_id=f"eq.{world.user_b}")
    assert other.status_code == 200 and other.json() == []


def test_the_views_show_what_the_ledger_says(http, rest_server, world, ledger):  # noqa: F811
    token = user_token(world.user_a)
    seen = {row["key"]: row for row in read(http, rest_server, "creditgate_my_balances", token).json()}
    for line in ledger.balance(world.user_a)["balances"]:
        assert (seen[line["key"]]["available"], seen[line["key"]]["reserved"]) == (line["available"], line["reserved"])
    journal = read(http, rest_server, "creditgate_my_transactions", token).json()
    assert len(journal) == len(ledger.transactions({"account_id": world.user_a, "limit": 200})["items"])


def test_a_user_reads_only_its_own_rows_from_the_tables(http, rest_server, world, tables):  # noqa: F811
    """Supabase does not expose the private schema; if it ever were, RLS still holds."""
    readable = {name for name, granted in tables.items() if granted}
    assert {"accounts", "account_members", "balances", "ledger_entries", "usage_events", "orders"} <= readable
    token = user_token(world.user_a)
    for table, granted in tables.items():
        answer = read(http, rest_server, table, token, profile="creditgate")
        if not granted:
            assert answer.status_code == 403, (table, answer.text)
            assert answer.json()["code"] == "42501"
            continue
        assert answer.status_code == 200, (table, answer.text)
        rows = answer.json()
        assert rows, f"{table}: the user sees none of its own rows"
        assert {row[owner_column(table)] for row in rows} == {world.user_a}, table


def test_anon_reads_nothing(http, rest_server, world, tables):  # noqa: F811
    for view in VIEWS:
        answer = read(http, rest_server, view)
        assert answer.status_code == 401 and answer.json()["code"] == "42501", answer.text
    for table in tables:
        answer = read(http, rest_server, table, profile="creditgate")
        assert answer.status_code == 401 and answer.json()["code"] == "42501", (table, answer.text)
    # No key at all does not even reach the database.
    bare = http.get(f"/{VIEWS[0]}")
    assert bare.status_code == 401


def test_an_org_member_reads_the_org_rows(http, rest_server, world):  # noqa: F811
    for view in VIEWS:
        rows = read(http, rest_server, view, user_token(world.member)).json()
        assert rows and {row["account_id"] for row in rows} == {world.org}, view
        # The org's rows stay the org's: its other users and strangers see none of them.
        for outsider in (world.user_a, world.stranger):
            seen = read(http, rest_server, view, user_token(outsider)).json()
            assert world.org not in {row["account_id"] for row in seen}, view
        assert read(http, rest_server, view, user_token(world.stranger)).json() == []


def test_membership_is_what_opens_the_org(http, rest_server, ledger):  # noqa: F811
    user, org = str(uuid.uuid4()), f"org-{uuid.uuid4().hex[:12]}"
    ledger.ensure_account({"account_id": org, "plan": "free", "owner": "org"})
    before = read(http, rest_server, "creditgate_my_balances", user_token(user)).json()
    ledger.set_member({"account_id": org, "user_id": user, "role": "owner"})
    after = read(http, rest_server, "creditgate_my_balances", user_token(user)).json()
    assert before == [] and {row["account_id"] for row in after} == {org}


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(
            lambda user: make_jwt("some-other-projects-secret-0123456789", role="authenticated", sub=user),
            id="other-secret",
        ),
        pytest.param(lambda user: make_jwt(JWT_SECRET, role="authenticated", sub=user, exp_in=-3600), id="expired"),
        pytest.param(
            lambda user: make_jwt("some-other-projects-secret-0123456789", role="service_role"),
            id="forged-service-role",
        ),
    ],
)
def test_a_bad_token_reads_nothing(http, rest_server, world, token):  # noqa: F811
    answer = read(http, rest_server, "creditgate_my_balances", token(world.user_a))
    assert answer.status_code == 401 and answer.json()["code"] in {"PGRST301", "PGRST303"}


# ---------------------------------------------------------------------- writes


def attack(world: World) -> dict:
    """One request body that would do damage to user A's own account, were it accepted by
    any entry point: grants, plan changes, membership, usage, releases, catalog."""
    return {
        "account_id": world.user_a,
        "user_id": world.user_a,
        "plan": "enterprise",
        "owner": "user",
        "role": "owner",
        "amount": 10**6 * MICRO,
        "source": "promo",
        "reason": "free money",
        "idempotency_key": f"attack-{uuid.uuid4().hex}",
        "feature": "chat",
        "model": "gpt-4o-mini",
        "mode": "commit",
        "estimate": {"input_tokens": 1, "max_output_tokens": 1},
        "usage": {"input_tokens": 1, "output_tokens": 1},
        "reservation_id": str(uuid.uuid4()),
        "events": [],
        "days": 30,
    }


def fingerprint(dsn: str) -> dict[str, tuple[int, str]]:
    """Row count and a hash of every row of every creditgate table (and auth.users)."""
    with psycopg.connect(dsn) as conn:
        relations = conn.execute(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE (n.nspname = 'creditgate' AND c.relkind IN ('r', 'p'))"
            "    OR (n.nspname = 'auth' AND c.relname = 'users') ORDER BY 1, 2"
        ).fetchall()
        out = {}
        for schema, name in relations:
            query = pgsql.SQL("SELECT count(*), coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '') FROM {} t")
            out[f"{schema}.{name}"] = conn.execute(query.format(pgsql.Identifier(schema, name))).fetchone()
        return out


@pytest.fixture(scope="module")
def routines(dsn) -> list[dict]:
    """Every creditgate routine PostgREST could be asked to run (public and the private schema)."""
    with psycopg.connect(dsn) as conn:
        cursor = conn.execute(ROUTINES_SQL)
        names = [c.name for c in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        for row in rows:
            row["params"] = conn.execute(
                "SELECT coalesce(array_agg(a.name ORDER BY a.i), '{}') FROM unnest("
                " coalesce((SELECT proargnames FROM pg_proc WHERE oid = %s), '{}'),"
                " coalesce((SELECT proargmodes::text[] FROM pg_proc WHERE oid = %s), '{}')"
                ") WITH ORDINALITY a(name, mode, i) WHERE a.mode IS NULL OR a.mode IN ('i', 'b', 'v')",
                (row["oid"], row["oid"]),
            ).fetchone()[0]
    # PostgREST can run functions only, and no trigger function (PostgreSQL refuses to
    # call one outside a trigger); test_security_catalog checks those from the catalog.
    rows = [
        r
        for r in rows
        if r["nspname"] in ("public", "creditgate") and r["prokind"] == "f" and r["returns"] != "trigger"
    ]
    assert len([r for r in rows if r["nspname"] == "public"]) >= 15
    return rows


def call(http, server, routine: dict, token: str | None, body: dict) -> httpx.Response:
    if routine["nspname"] == "public":
        payload = {"request": body} if routine["params"] == ["request"] else {}
    else:
        # Internal routines: every argument NULL. The privilege check comes before any
        # argument is looked at, so what they are does not matter.
        payload = dict.fromkeys(routine["params"])
    profile = None if routine["nspname"] == "public" else "creditgate"
    return http.post(f"/rpc/{routine['proname']}", headers=headers(server, token, profile, write=True), json=payload)


@pytest.mark.parametrize("who", ["anon", "authenticated"])
def test_no_mutating_routine_is_executable_without_the_service_role(
    http,
    rest_server,  # noqa: F811
    world,
    routines,
    dsn,
    who,
):
    token = None if who == "anon" else user_token(world.user_a)
    allowed = ANON_EXECUTABLE if who == "anon" else AUTHENTICATED_EXECUTABLE
    refused_status = 401 if who == "anon" else 403
    before = fingerprint(dsn)

    answers = {r["sig"]: call(http, rest_server, r, token, attack(world)) for r in routines}

    executed = sorted(sig for sig, answer in answers.items() if answer.status_code < 300)
    assert executed == sorted(allowed)
    for sig, answer in answers.items():
        if sig in allowed:
            continue
        assert (answer.status_code, answer.json()["code"]) == (refused_status, "42501"), (sig, answer.text)
    assert fingerprint(dsn) == before


def test_the_attack_would_have_worked_with_the_service_role(http, rest_server, world, dsn):  # noqa: F811
    """The control: the refusals above are the grants at work, not a malformed request."""
    before = fingerprint(dsn)
    body = attack(world)
    answer = http.post(
        "/rpc/creditgate_grant_credits",
        headers={"apikey": rest_server.service_role_key, "Authorization": f"Bearer {rest_server.service_role_key}"},
        json={"request": body},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["amount"] == body["amount"]
    after = fingerprint(dsn)
    assert after["creditgate.grants"][0] == before["creditgate.grants"][0] + 1


def test_the_public_routines_answer_anyone(http, rest_server, ledger):  # noqa: F811
    for name, expected in (("creditgate_catalog", ledger.catalog()), ("creditgate_prices", ledger.prices())):
        answer = http.post(f"/rpc/{name}", headers=headers(rest_server), json={})
        assert answer.status_code == 200 and answer.json() == expected


def test_my_account_ids_tells_a_user_only_its_own(http, rest_server, world):  # noqa: F811
    answer = http.post(
        "/rpc/my_account_ids",
        headers=headers(rest_server, user_token(world.member), "creditgate", write=True),
        json={},
    )
    assert answer.status_code == 200 and answer.json() == [world.org]
