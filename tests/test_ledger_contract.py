"""One contract, two adapters: PostgresLedger (psycopg on the test database) and
SupabaseLedger (postgrest-py over HTTP to a PostgREST-compatible server on the same
database) must answer every call the same way, denials included."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from functions.core.errors import ProblemError
from functions.core.ledger.supabase import SupabaseLedger
from functions.core.money import format_micro
from tests.conftest import JWT_SECRET, MICRO, new_account_id
from tests.fakes.postgrest_server import make_jwt
from tests.ledger_fixtures import rest_server  # noqa: F401 - fixture

ROOT = Path(__file__).resolve().parents[1]
GPT = "gpt-4o-mini"


@pytest.fixture(scope="module")
def supabase_ledger(rest_server):  # noqa: F811
    ledger = SupabaseLedger(rest_server.url, rest_server.service_role_key)
    yield ledger
    ledger.close()


@pytest.fixture(scope="module")
def adapters(ledger, supabase_ledger):
    return {"postgres": ledger, "supabase": supabase_ledger}


@pytest.fixture(params=["postgres", "supabase"])
def adapter(request, adapters):
    return adapters[request.param]


def new_account(ledger, plan: str = "free", owner: str = "user") -> str:
    account_id = new_account_id("contract")
    assert ledger.ensure_account({"account_id": account_id, "plan": plan, "owner": owner})["created"] is True
    return account_id


def problem_of(call, *args) -> ProblemError:
    with pytest.raises(ProblemError) as caught:
        call(*args)
    return caught.value


def balances(ledger, account_id: str) -> dict[str, dict]:
    return {line["key"]: line for line in ledger.balance(account_id)["balances"]}


def chat_reserve(account_id: str, key: str, input_tokens: int = 1000, output_tokens: int = 1000) -> dict:
    return {
        "account_id": account_id,
        "feature": "chat",
        "model": GPT,
        "mode": "reserve",
        "estimate": {"input_tokens": input_tokens, "max_output_tokens": output_tokens},
        "idempotency_key": key,
    }


def chat_usage(account_id: str, key: str, input_tokens: int = 1200, output_tokens: int = 300, **extra) -> dict:
    return {
        "account_id": account_id,
        "feature": "chat",
        "model": GPT,
        "idempotency_key": key,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        **extra,
    }


# --------------------------------------------------------------------- accounts


def test_ensure_account_creates_once_with_welcome_and_allowance(adapter, welcome):
    account_id = new_account_id("contract")
    first = adapter.ensure_account({"account_id": account_id, "plan": "free", "email": "a@example.com"})
    again = adapter.ensure_account({"account_id": account_id, "plan": "pro"})

    assert first["created"] is True and again["created"] is False
    assert first["plan"] == {"id": "free", "name": "Free"} and again["plan"]["id"] == "free"
    lines = {b["key"]: b["available"] for b in first["balances"]}
    assert lines == {"credits": welcome + 100 * MICRO, "requests": 100 * MICRO, "tokens": 10_000 * MICRO}
    assert {b["key"]: b["available"] for b in again["balances"]} == lines

    journal = adapter.transactions({"account_id": account_id})["items"]
    grants = sorted((line["source"], line["key"], line["amount"]) for line in journal)
    assert grants == [
        ("allowance", "credits", 100 * MICRO),
        ("allowance", "requests", 100 * MICRO),
        ("allowance", "tokens", 10_000 * MICRO),
        ("welcome", "credits", welcome),
    ]
    assert adapter.is_member(account_id, account_id) is True
    assert adapter.is_member(account_id, "someone-else") is False


def test_ensure_account_unknown_plan(adapter):
    problem = problem_of(adapter.ensure_account, {"account_id": new_account_id(), "plan": "platinum"})
    assert (problem.status, problem.code, problem.fields) == (422, "unknown_plan", {"plan": "platinum"})


def test_ensure_account_concurrently_through_both_adapters_creates_once(adapters, welcome):
    account_id = new_account_id("contract-race")
    barrier = threading.Barrier(8)
    answers: list[dict] = []

    def create(ledger):
        barrier.wait()
        answers.append(ledger.ensure_account({"account_id": account_id, "plan": "free"}))

    threads = [threading.Thread(target=create, args=(adapters[name],)) for name in ["postgres", "supabase"] * 4]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(a["created"] for a in answers) == [False] * 7 + [True]
    credits = balances(adapters["postgres"], account_id)["credits"]
    assert credits["available"] == welcome + 100 * MICRO
    assert adapters["supabase"].reconcile(account_id)["ok"] is True


# ------------------------------------------------------------------------- gate


def test_gate_check_reserve_commit(adapter, welcome):
    account_id = new_account(adapter)
    start = welcome + 100 * MICRO

    check = adapter.gate({"account_id": account_id, "feature": "chat", "model": GPT})
    assert check["allowed"] is True and check["mode"] == "check"
    assert check["reservation"] is None and check["cost_estimate"] == 0
    assert check["balance"] == {"key": "credits", "available": start}

    reserve = adapter.gate(chat_reserve(account_id, "r1"))
    cost = reserve["cost_estimate"]
    assert cost > 0 and reserve["plan"] == "free" and reserve["feature"] == "chat"
    assert uuid.UUID(reserve["reservation"]["id"]) and reserve["reservation"]["amount"] == cost
    assert reserve["balance"] == {"key": "credits", "available": start - cost}
    assert adapter.gate(chat_reserve(account_id, "r1")) == reserve  # a replay answers the same

    commit = adapter.gate(
        {
            "account_id": account_id,
            "feature": "ai_message",
            "mode": "commit",
            "estimate": {"quantity": 2},
            "idempotency_key": "c1",
        }
    )
    assert commit["charged"] == commit["cost_estimate"] == 400_000  # 2 x 0.2 credits
    assert uuid.UUID(commit["usage_id"]) and commit["reservation"] is None
    assert commit["balance"]["available"] == start - cost - 400_000

    lines = balances(adapter, account_id)
    assert lines["credits"]["reserved"] == cost
    assert lines["credits"]["available"] == start - cost - 400_000
    assert lines["requests"]["available"] == 99 * MICRO  # the reserve counted one; a check counts none
    assert adapter.reconcile(account_id)["ok"] is True


def test_gate_denials_are_problems_with_what_unlocks_them(adapter, welcome):
    account_id = new_account(adapter)
    before = balances(adapter, account_id)

    short = problem_of(adapter.gate, chat_reserve(account_id, "big", 10**9, 10**9))
    assert (short.status, short.code) == (402, "insufficient_credits")
    assert short.fields["allowed"] is False and short.fields["key"] == "credits"
    assert short.fields["available"] == format_micro(welcome + 100 * MICRO)
    assert Decimal(short.fields["required"]) > Decimal(short.fields["available"])
    assert [p["id"] for p in short.fields["packs"]] == ["starter", "growth", "pro"]
    assert short.fields["packs"][1] == {
        "id": "growth",
        "name": "Growth",
        "price": "49.00",
        "currency": "usd",
        "key": "credits",
        "credits": "6000",
        "bonus_credits": "500",
    }

    feature = problem_of(adapter.gate, {"account_id": account_id, "feature": "quests"})
    assert (feature.status, feature.code) == (403, "feature_not_in_plan")
    assert feature.fields["allowed"] is False and feature.fields["plan"] == "free"
    assert "pro" in feature.fields["upgrade_to"] and "free" not in feature.fields["upgrade_to"]

    agent = problem_of(adapter.gate, {"account_id": account_id, "feature": "chat", "agent": "builder"})
    assert (agent.status, agent.code) == (403, "agent_not_in_plan")
    assert agent.fields["agent"] == "builder" and "starter" in agent.fields["upgrade_to"]

    unknown = problem_of(adapter.gate, {"account_id": account_id, "feature": "teleport"})
    assert (unknown.status, unknown.code, unknown.fields) == (422, "unknown_feature", {"feature": "teleport"})

    model = problem_of(adapter.gate, {**chat_reserve(account_id, "m"), "model": "gpt-0-imaginary"})
    assert (model.status, model.code) == (422, "unknown_model")
    assert model.fields["model"] == "gpt-0-imaginary"

    missing = problem_of(adapter.gate, {"account_id": "contract-nobody", "feature": "chat"})
    assert (missing.status, missing.code) == (404, "account_not_found")
    assert missing.fields == {"account_id": "contract-nobody"}

    # A denial rolls the whole call back: nothing reserved, counted or claimed.
    assert balances(adapter, account_id) == before
    assert adapter.gate(chat_reserve(account_id, "big", 10, 10))["allowed"] is True


def test_a_value_the_database_cannot_take_is_bad_input_and_changes_nothing(adapter, welcome):
    """The schemas refuse such values first; this is the net under them (SQLSTATE class 22)."""
    account_id = new_account(adapter)
    refused = problem_of(adapter.gate, {**chat_reserve(account_id, "x"), "estimate": {"input_tokens": "lots"}})
    assert (refused.status, refused.code) == (422, "invalid_request")
    assert balances(adapter, account_id)["credits"]["available"] == welcome + 100 * MICRO


# ------------------------------------------------------------------------ usage


def test_record_usage_replay_and_conflict(adapter, welcome):
    account_id = new_account(adapter)
    first = adapter.record_usage(chat_usage(account_id, "u1", metadata={"chat": 7}))
    assert first["cost"] > 0 and first["overdraft"] is False and first["reservation"] is None
    assert first["balance"] == {"key": "credits", "available": welcome + 100 * MICRO - first["cost"], "debt": 0}
    assert "replayed" not in first

    replay = adapter.record_usage(chat_usage(account_id, "u1", metadata={"chat": 7}))
    assert replay == {**first, "replayed": True}

    conflict = problem_of(adapter.record_usage, chat_usage(account_id, "u1", output_tokens=301))
    assert (conflict.status, conflict.code) == (409, "idempotency_conflict")
    assert conflict.fields["idempotency_key"] == "u1"

    assert balances(adapter, account_id)["credits"]["available"] == welcome + 100 * MICRO - first["cost"]
    summary = adapter.usage_summary({"account_id": account_id, "group_by": "model"})
    assert [(i["group"], i["requests"], i["cost"]) for i in summary["items"]] == [(GPT, 1, first["cost"])]


def test_usage_settles_a_reservation(adapter):
    account_id = new_account(adapter)
    hold = adapter.gate(chat_reserve(account_id, "s1"))["reservation"]
    settled = adapter.record_usage(chat_usage(account_id, "s1", reservation_id=hold["id"]))
    assert settled["reservation"] == {
        "id": hold["id"],
        "status": "settled",
        "released": hold["amount"] - settled["cost"],
    }
    assert balances(adapter, account_id)["credits"]["reserved"] == 0
    again = problem_of(adapter.record_usage, chat_usage(account_id, "s2", reservation_id=hold["id"]))
    assert (again.status, again.code) == (409, "reservation_settled")
    assert adapter.reconcile(account_id)["ok"] is True


def test_release_twice_is_a_no_op(adapter, welcome):
    account_id = new_account(adapter)
    hold = adapter.gate(chat_reserve(account_id, "rel"))["reservation"]

    first = adapter.release_reservation({"reservation_id": hold["id"]})
    second = adapter.release_reservation({"reservation_id": hold["id"]})
    assert first == {"id": hold["id"], "status": "released", "released": hold["amount"]}
    assert second == {"id": hold["id"], "status": "released", "released": 0}
    credits = balances(adapter, account_id)["credits"]
    assert (credits["available"], credits["reserved"]) == (welcome + 100 * MICRO, 0)

    gone = problem_of(adapter.release_reservation, {"reservation_id": str(uuid.uuid4())})
    assert (gone.status, gone.code) == (404, "reservation_not_found")


def test_batch_with_one_bad_event(adapter):
    account_id = new_account(adapter)
    results = adapter.record_usage_batch(
        [
            chat_usage(account_id, "b1"),
            {**chat_usage(account_id, "b2"), "feature": "teleport"},
            {"account_id": account_id, "feature": "ai_message", "quantity": 3, "idempotency_key": "b3"},
        ]
    )
    assert len(results) == 3
    assert results[0]["cost"] > 0 and uuid.UUID(results[0]["usage_id"])
    assert results[1] == {"error": {"status": 422, "code": "unknown_feature", "detail": {"feature": "teleport"}}}
    assert results[2]["cost"] == 600_000
    # Each event is idempotent on its own: the replayed batch charges nothing more.
    replayed = adapter.record_usage_batch([chat_usage(account_id, "b1")])
    assert replayed[0] == {**results[0], "replayed": True}
    assert adapter.usage_summary({"account_id": account_id})["totals"]["requests"] == 2


# ------------------------------------------------------------------------ reads


def test_balance_and_transactions(adapter, welcome):
    account_id = new_account(adapter)
    adapter.record_usage(chat_usage(account_id, "t1"))
    hold = adapter.gate(chat_reserve(account_id, "t2"))["reservation"]

    answer = adapter.balance(account_id)
    assert answer["account_id"] == account_id and answer["plan"] == {"id": "free", "name": "Free"}
    assert [b["key"] for b in answer["balances"]] == ["credits", "requests", "tokens"]
    credits = answer["balances"][0]
    assert credits["allowance"] == 100 * MICRO and credits["reserved"] == hold["amount"]
    assert credits["status"] == "ok" and answer["low_balance"] is False

    page = adapter.transactions({"account_id": account_id, "limit": 2})
    assert len(page["items"]) == 2 and page["next_cursor"] is not None
    ids = [line["id"] for line in page["items"]]
    assert ids == sorted(ids, reverse=True)
    everything = adapter.transactions({"account_id": account_id, "key": "credits", "limit": 200})["items"]
    assert sum(line["amount"] for line in everything) == credits["available"] + credits["reserved"] - credits["debt"]

    assert adapter.orders(account_id) == {"items": []}
    for read in (
        adapter.balance,
        lambda a: adapter.transactions({"account_id": a}),
        lambda a: adapter.usage_summary({"account_id": a}),
        lambda a: adapter.entitlements(a),
    ):
        missing = problem_of(read, "contract-nobody")
        assert (missing.status, missing.code) == (404, "account_not_found")


def test_entitlements(adapter):
    account_id = new_account(adapter)
    answer = adapter.entitlements(account_id)
    assert answer["plan"]["id"] == "free"
    assert answer["features"]["chat"]["allowed"] is True
    assert answer["features"]["quests"]["allowed"] is False
    assert answer["features"]["quests"]["reason"] == "feature_not_in_plan"
    assert answer["agents"]["builder"]["allowed"] is False
    assert adapter.entitlements(None)["plan"]["id"] == "anonymous"


def test_reconcile(adapter):
    account_id = new_account(adapter)
    adapter.record_usage(chat_usage(account_id, "rc"))
    mine = adapter.reconcile(account_id)
    assert mine == {"ok": True, "balances_checked": 3, "problems": []}
    everyone = adapter.reconcile()
    assert everyone["balances_checked"] >= 3 and isinstance(everyone["problems"], list)


def test_catalog_prices_health_are_identical(adapters):
    postgres, supabase = adapters["postgres"], adapters["supabase"]
    catalog = postgres.catalog()
    assert supabase.catalog() == catalog
    assert {"free", "pro", "anonymous"} <= {p["id"] for p in catalog["plans"]}
    prices = postgres.prices()
    assert supabase.prices() == prices
    assert len(prices["items"]) >= 30 and GPT in {p["model"] for p in prices["items"]}
    assert all(isinstance(p["input_per_mtok"], int) for p in prices["items"])
    health = postgres.health()
    assert supabase.health() == health and health["schema_version"]


# ----------------------------------------------- the same story, told twice


UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[+-]\d{2}(?::\d{2})?|Z)?")
ID_KEYS = {"id", "grant_id", "next_cursor"}


def normalise(value, account_id: str):
    """Everything but the parts that differ by nature: generated ids, clock times and the
    account's own id."""
    if isinstance(value, dict):
        return {k: "<id>" if k in ID_KEYS and v is not None else normalise(v, account_id) for k, v in value.items()}
    if isinstance(value, list):
        return [normalise(v, account_id) for v in value]
    if isinstance(value, str):
        return TIME_RE.sub("<time>", UUID_RE.sub("<uuid>", value.replace(account_id, "<account>")))
    return value


def story(ledger) -> list:
    """A day in an account's life, every answer and every refusal written down."""
    account_id = new_account_id("story")
    transcript = []

    def step(call, *args):
        try:
            transcript.append(normalise(call(*args), account_id))
        except ProblemError as problem:
            transcript.append(normalise({"problem": problem.body(), "headers": problem.headers}, account_id))
        return transcript[-1]

    step(ledger.ensure_account, {"account_id": account_id, "plan": "free"})
    step(ledger.ensure_account, {"account_id": account_id, "plan": "free"})
    step(ledger.gate, {"account_id": account_id, "feature": "chat", "model": GPT})
    hold = ledger.gate(chat_reserve(account_id, "g1"))["reservation"]
    step(ledger.gate, chat_reserve(account_id, "g1"))
    step(ledger.record_usage, chat_usage(account_id, "g1", reservation_id=hold["id"]))
    step(ledger.record_usage, chat_usage(account_id, "g1", reservation_id=hold["id"]))
    step(ledger.record_usage, chat_usage(account_id, "g1", output_tokens=1))
    step(
        ledger.gate,
        {
            "account_id": account_id,
            "feature": "ai_message",
            "mode": "commit",
            "estimate": {"quantity": 5},
            "idempotency_key": "c",
        },
    )
    hold = ledger.gate(chat_reserve(account_id, "g2", 5000, 2000))["reservation"]
    step(ledger.release_reservation, {"reservation_id": hold["id"]})
    step(ledger.release_reservation, {"reservation_id": hold["id"]})
    step(ledger.gate, chat_reserve(account_id, "g3", 10**8, 10**8))
    step(ledger.gate, {"account_id": account_id, "feature": "forecast"})
    step(ledger.gate, {"account_id": account_id, "feature": "chat", "agent": "analyst"})
    step(ledger.gate, {"account_id": account_id, "feature": "nope"})
    step(ledger.gate, {**chat_reserve(account_id, "g4"), "model": "no-such-model"})
    step(ledger.record_usage_batch, [chat_usage(account_id, "b1"), {**chat_usage(account_id, "b2"), "model": "x"}])
    step(
        ledger.grant_credits,
        {"account_id": account_id, "amount": 25 * MICRO, "source": "promo", "reason": "story", "idempotency_key": "p1"},
    )
    step(ledger.change_plan, {"account_id": account_id, "plan": "starter"})
    step(ledger.balance, account_id)
    step(ledger.transactions, {"account_id": account_id, "limit": 200})
    step(ledger.usage_summary, {"account_id": account_id, "group_by": "feature"})
    step(ledger.entitlements, account_id)
    step(ledger.orders, account_id)
    step(ledger.reconcile, account_id)
    step(ledger.balance, "story-nobody")
    return transcript


def test_both_adapters_tell_the_same_story(adapters):
    postgres, supabase = story(adapters["postgres"]), story(adapters["supabase"])
    assert len(postgres) == len(supabase) == 25
    for n, (left, right) in enumerate(zip(postgres, supabase, strict=True)):
        assert left == right, f"step {n} differs"
    refusals = [s["problem"]["code"] for s in postgres if "problem" in s]
    assert refusals == [
        "idempotency_conflict",
        "insufficient_credits",
        "feature_not_in_plan",
        "agent_not_in_plan",
        "unknown_feature",
        "unknown_model",
        "account_not_found",
    ]


# ------------------------------------------------------- the Supabase adapter's own


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_is_503_database_unavailable(rest_server):  # noqa: F811
    ledger = SupabaseLedger(f"http://127.0.0.1:{closed_port()}", rest_server.service_role_key, connect_timeout=2)
    try:
        for call in (ledger.health, lambda: ledger.gate({"account_id": "a", "feature": "chat"})):
            problem = problem_of(call)
            assert (problem.status, problem.code) == (503, "database_unavailable")
            assert problem.body()["code"] == "database_unavailable"
    finally:
        ledger.close()


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(lambda server: server.anon_key, id="anon-key"),
        pytest.param(
            lambda server: make_jwt("not-the-project-secret-not-at-all-0123", role="service_role"), id="bad-signature"
        ),
        pytest.param(lambda server: make_jwt(JWT_SECRET, role="service_role", exp_in=-3600), id="expired"),
        pytest.param(lambda server: make_jwt(JWT_SECRET, role="authenticated", sub=uuid.uuid4()), id="user-token"),
    ],
)
def test_a_key_that_is_not_the_service_role_is_a_configuration_error(rest_server, key):  # noqa: F811
    ledger = SupabaseLedger(rest_server.url, key(rest_server))
    try:
        for call in (ledger.health, lambda: ledger.ensure_account({"account_id": new_account_id(), "plan": "free"})):
            problem = problem_of(call)
            assert (problem.status, problem.code) == (503, "database_misconfigured")
            assert "SUPABASE_SERVICE_ROLE_KEY" in problem.detail
    finally:
        ledger.close()


def test_a_missing_function_is_a_configuration_error(supabase_ledger):
    problem = problem_of(supabase_ledger.rpc, "creditgate_not_migrated_yet", {})
    assert (problem.status, problem.code) == (503, "database_misconfigured")


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (
            {"code": "PT402", "message": "insufficient_credits", "details": '{"required": 5, "available": 1}'},
            402,
            "insufficient_credits",
        ),
        ({"code": "PT404", "message": "account_not_found", "details": None}, 404, "account_not_found"),
        ({"code": "PT429", "message": "rate_limited", "details": '{"retry_after": 7}'}, 429, "rate_limited"),
        ({"code": "PGRST001", "message": "Database client error"}, 503, "database_unavailable"),
        ({"code": "PGRST003", "message": "Timed out acquiring connection"}, 503, "database_unavailable"),
        ({"code": "502", "message": "Bad Gateway", "details": "<html>"}, 503, "database_unavailable"),
        ({"code": None, "message": "upstream connect error"}, 503, "database_unavailable"),
        ({"code": None, "message": "Invalid API key", "hint": "Double check your key"}, 503, "database_misconfigured"),
        ({"code": "PGRST301", "message": "JWT cryptographic operation failed"}, 503, "database_misconfigured"),
        ({"code": "42501", "message": "permission denied for function creditgate_gate"}, 503, "database_misconfigured"),
    ],
)
def test_postgrest_error_mapping(error, status, code):
    from postgrest.exceptions import APIError

    from functions.core.ledger.supabase import _problem

    problem = _problem(APIError(error))
    assert isinstance(problem, ProblemError)
    assert (problem.status, problem.code) == (status, code)
    if code == "insufficient_credits":
        assert (problem.fields["required"], problem.fields["available"]) == ("0.000005", "0.000001")
    if code == "rate_limited":
        assert problem.headers["Retry-After"] == "7"


def test_a_bug_stays_a_bug():
    from postgrest.exceptions import APIError

    from functions.core.ledger.supabase import _problem

    # The journal's append-only trigger raises 42501 too: that is not a key problem.
    for raw in (
        {"code": "42501", "message": "ledger_entries is append-only"},
        {"code": "40P01", "message": "deadlock detected"},
    ):
        error = APIError(raw)
        assert _problem(error) is error
    bad_input = _problem(APIError({"code": "22P02", "message": 'invalid input syntax for type bigint: "lots"'}))
    assert (bad_input.status, bad_input.code) == (422, "invalid_request")


def test_importing_the_adapter_costs_nothing():
    code = (
        "import sys\n"
        "from functions.core.ledger.supabase import SupabaseLedger\n"
        "SupabaseLedger('http://127.0.0.1:1', 'key')\n"
        "heavy = [m for m in ('postgrest', 'httpx', 'supabase', 'psycopg') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_one_shared_client_under_threads_never_carrying_a_user_token(rest_server, ledger, welcome):  # noqa: F811
    # No rate limit on this plan, and the account is made through the other adapter: the
    # 16 threads race for the first, lazy, build of the client.
    account_id = new_account(ledger, plan="test_open")
    key = rest_server.service_role_key
    ledger = SupabaseLedger(rest_server.url, key)
    try:
        barrier = threading.Barrier(16)
        clients, errors = set(), []

        def work(n: int) -> None:
            barrier.wait()
            try:
                clients.add(id(ledger.client))
                ledger.gate(
                    {
                        "account_id": account_id,
                        "feature": "ai_message",
                        "mode": "commit",
                        "estimate": {"quantity": 1},
                        "idempotency_key": f"t{n}",
                    }
                )
            except Exception as error:  # noqa: BLE001 - reported below
                errors.append(error)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert errors == [] and len(clients) == 1
        # 16 commits of 0.2 credits each, none lost and none doubled.
        assert balances(ledger, account_id)["credits"]["available"] == welcome - 16 * 200_000
        assert ledger.reconcile(account_id)["ok"] is True
        assert ledger.client.headers["authorization"] == f"Bearer {key}"
        assert ledger.client.headers["apikey"] == key
    finally:
        ledger.close()


def test_close_closes_the_session_and_a_later_call_reopens(rest_server):  # noqa: F811
    ledger = SupabaseLedger(rest_server.url, rest_server.service_role_key)
    ledger.close()  # nothing built yet: nothing to close
    ledger.health()
    session = ledger.client.session
    ledger.close()
    assert session.is_closed
    assert ledger.health()["schema_version"]
    assert ledger.client.session is not session
    ledger.close()


def test_build_ledger_picks_the_supabase_adapter_without_a_database_url(rest_server, ledger):  # noqa: F811
    from functions.core.ledger import build_ledger
    from functions.core.settings import Settings

    settings = Settings(
        environment="test",
        database_url=None,
        supabase_url=rest_server.url + "/",
        supabase_service_role_key=rest_server.service_role_key,
    )
    built = build_ledger(settings)
    try:
        assert isinstance(built, SupabaseLedger)
        assert built.health() == ledger.health()
    finally:
        built.close()
