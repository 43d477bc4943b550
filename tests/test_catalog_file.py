"""The shipped catalog.toml is well-formed, consistent and carries the reference prices."""

from __future__ import annotations

import csv
import re
import tomllib
from decimal import Decimal, InvalidOperation
from pathlib import Path

import pytest

from functions.core.money import PRICE_FIELDS

ROOT = Path(__file__).resolve().parents[1]
CATALOG_PATH = ROOT / "catalog.toml"
REFERENCE_CSV = ROOT.parent / "shared" / "reference" / "model_prices.csv"

QUEST_BUCKETS = ("lead_generation", "goal_generation", "strategy_analysis", "forecast", "general")
PLAN_ORDER = ("anonymous", "free", "starter", "pro", "business", "enterprise")


@pytest.fixture(scope="module")
def catalog() -> dict:
    with CATALOG_PATH.open("rb") as fh:
        return tomllib.load(fh)


def _amounts(catalog: dict):
    """Every money or credit amount in the file, with where it is."""
    settings = catalog["settings"]
    for key in ("markup", "welcome_credits", "low_balance_credits"):
        yield f"settings.{key}", settings[key]
    for plan in catalog["plans"]:
        yield f"plans.{plan['id']}.price", plan["price"]
        for key, value in plan["allowances"].items():
            yield f"plans.{plan['id']}.allowances.{key}", value
    for pack in catalog["packs"]:
        for key in ("price", "credits", "bonus_credits"):
            yield f"packs.{pack['id']}.{key}", pack[key]
    for feature in catalog["features"]:
        if "credits_per_unit" in feature.get("pricing", {}):
            yield (
                f"features.{feature['id']}.credits_per_unit",
                feature["pricing"]["credits_per_unit"],
            )
    for model in catalog["models"]:
        for key in PRICE_FIELDS:
            if key in model:
                yield f"models.{model['provider']}/{model['model']}.{key}", model[key]


def test_every_amount_is_a_decimal_string_with_at_most_six_places(catalog):
    seen = 0
    for where, value in _amounts(catalog):
        seen += 1
        # A TOML float would already have been rounded to binary before we see it.
        assert isinstance(value, str), f"{where} must be a decimal string, got {value!r}"
        assert re.fullmatch(r"\d+(\.\d+)?", value), f"{where} is not a plain decimal: {value!r}"
        try:
            amount = Decimal(value)
        except InvalidOperation:  # pragma: no cover - the regex above already refused it
            pytest.fail(f"{where} is not a decimal: {value!r}")
        assert amount.is_finite() and amount >= 0, where
        # Stored as integer micro-units: a seventh decimal would be silently lost.
        assert amount == amount.quantize(Decimal("0.000001")), f"{where} has > 6 decimals"
        assert amount * 1_000_000 == int(amount * 1_000_000), where
    assert seen > 300


def test_settings(catalog):
    s = catalog["settings"]
    for key in (
        "credits_per_usd",
        "guest_exchanges_per_session",
        "guest_exchanges_per_ip_per_day",
        "guest_session_ttl_hours",
        "reservation_ttl_seconds",
        "abuse_sessions_per_ip",
    ):
        assert type(s[key]) is int and s[key] > 0, key
    assert s["credits_per_usd"] == 100
    assert Decimal(s["markup"]) >= 1
    assert s["currency"] == "usd"


@pytest.mark.parametrize("section", ["plans", "packs", "features", "agents"])
def test_ids_are_unique(catalog, section):
    ids = [item["id"] for item in catalog[section]]
    assert len(ids) == len(set(ids)), section


def test_models_are_unique(catalog):
    keys = [(m["provider"], m["model"]) for m in catalog["models"]]
    assert len(keys) == len(set(keys))


def test_plans_of_the_seeds(catalog):
    plans = {p["id"]: p for p in catalog["plans"]}
    assert tuple(sorted(plans, key=lambda i: plans[i]["display_order"])) == PLAN_ORDER
    expected = {  # id: (name, price, monthly credits)
        "anonymous": (None, "0", None),
        "free": ("Free", "0", "100"),
        "starter": ("Starter", "15", "500"),
        "pro": ("Professional", "39", "1500"),
        "business": ("Business", "99", "5000"),
        "enterprise": ("Enterprise", "299", "10000"),
    }
    for plan_id, (name, price, credits) in expected.items():
        plan = plans[plan_id]
        if name:
            assert plan["name"] == name
        assert Decimal(plan["price"]) == Decimal(price)
        assert plan["allowances"].get("credits") == credits
        assert plan["interval"] == "month"
        assert isinstance(plan["stripe_price_id"], str)
        assert type(plan["rate_limit_per_minute"]) is int and plan["rate_limit_per_minute"] >= 0
    assert plans["anonymous"]["display_order"] == 0
    free = plans["free"]["allowances"]
    assert (free["requests"], free["tokens"]) == ("100", "10000")


def test_quotas_grow_with_the_tier(catalog):
    paid = [p for p in catalog["plans"] if p["id"] != "anonymous"]
    paid.sort(key=lambda p: p["display_order"])
    for key in ("credits", "requests", "tokens"):
        values = [Decimal(p["allowances"][key]) for p in paid]
        assert values == sorted(values), key
    limits = [p["rate_limit_per_minute"] for p in paid]
    assert 0 not in limits[:-1] and limits[:-1] == sorted(limits[:-1])


def test_quest_buckets_only_on_plans_with_quests(catalog):
    plans = {p["id"]: p for p in catalog["plans"]}
    for plan in plans.values():
        has_quests = "quests" in plan["features"]
        for bucket in QUEST_BUCKETS:
            assert (bucket in plan["allowances"]) == has_quests, (plan["id"], bucket)
    assert "quests" not in plans["starter"]["features"]
    pro = plans["pro"]["allowances"]
    assert [pro[b] for b in QUEST_BUCKETS] == ["50", "20", "100", "30", "50"]


def test_plan_agents_and_features_exist(catalog):
    agents = {a["id"] for a in catalog["agents"]}
    features = {f["id"] for f in catalog["features"]}
    for plan in catalog["plans"]:
        assert set(plan["agents"]) <= agents, plan["id"]
        assert set(plan["features"]) <= features, plan["id"]
        assert len(plan["agents"]) == len(set(plan["agents"])), plan["id"]
        assert len(plan["features"]) == len(set(plan["features"])), plan["id"]


def test_metered_features_draw_from_keys_the_plan_grants(catalog):
    features = {f["id"]: f for f in catalog["features"]}
    for plan in catalog["plans"]:
        if plan["id"] == "anonymous":
            continue  # guests are bounded by the guest exchange limits, not balances
        for feature_id in plan["features"]:
            feature = features[feature_id]
            for key in ("balance_key", "requests_key"):
                if key in feature:
                    assert feature[key] in plan["allowances"], (plan["id"], feature_id, key)


def test_agents(catalog):
    agents = {a["id"]: a for a in catalog["agents"]}
    assert len(agents) == 13
    assert agents["commander"]["name"] == "Chief of Staff"
    for agent_id in ("connector", "conductor", "builder"):
        assert agent_id in agents
    for agent in agents.values():
        assert re.fullmatch(r"[a-z]+(-[a-z]+)*", agent["id"]), agent["id"]
        assert agent["name"] and agent["description"]
    plans = {p["id"]: p for p in catalog["plans"]}
    free_agents = {"commander", "connector", "conductor"}
    assert set(plans["free"]["agents"]) == free_agents
    assert set(plans["anonymous"]["agents"]) <= free_agents
    for plan_id in ("starter", "pro", "business", "enterprise"):
        assert set(plans[plan_id]["agents"]) == set(agents), plan_id


def test_anonymous_plan_is_basic_chat_only(catalog):
    anonymous = next(p for p in catalog["plans"] if p["id"] == "anonymous")
    assert anonymous["features"] == ["chat"]
    assert Decimal(anonymous["price"]) == 0


def test_packs_of_the_seeds(catalog):
    packs = {p["id"]: p for p in catalog["packs"]}
    assert {
        pack_id: (Decimal(p["price"]), Decimal(p["credits"]), Decimal(p["bonus_credits"]))
        for pack_id, p in packs.items()
    } == {
        "starter": (Decimal(19), Decimal(2000), Decimal(0)),
        "growth": (Decimal(49), Decimal(6000), Decimal(500)),
        "pro": (Decimal(99), Decimal(15000), Decimal(1500)),
    }
    for pack in packs.values():
        assert pack["currency"] == catalog["settings"]["currency"]
        assert isinstance(pack["stripe_price_id"], str)


def test_features(catalog):
    features = {f["id"]: f for f in catalog["features"]}
    for feature in features.values():
        assert feature["kind"] in ("access", "metered"), feature["id"]
        if feature["kind"] == "access":
            assert "balance_key" not in feature and "pricing" not in feature, feature["id"]
            continue
        assert feature["balance_key"], feature["id"]
        mode = feature["pricing"]["mode"]
        assert mode in ("model", "tokens", "per_unit"), feature["id"]
        assert ("credits_per_unit" in feature["pricing"]) == (mode == "per_unit"), feature["id"]
    assert features["chat"]["pricing"] == {"mode": "model"}
    assert features["chat"]["balance_key"] == "credits"
    assert features["chat"]["requests_key"] == "requests"
    assert features["chat_tokens"]["pricing"] == {"mode": "tokens"}
    assert features["chat_tokens"]["balance_key"] == "tokens"
    rates = {  # seed 002 action rates, in credits
        "vm_minute": "1",
        "screenshot": "0.5",
        "api_call": "0.1",
        "ai_message": "0.2",
        "file_upload_mb": "1",
    }
    for feature_id, rate in rates.items():
        assert features[feature_id]["balance_key"] == "credits"
        assert Decimal(features[feature_id]["pricing"]["credits_per_unit"]) == Decimal(rate)
    assert features["generate_goal"]["balance_key"] == "goal_generation"
    assert features["generate_goal"]["pricing"]["credits_per_unit"] == "3"
    assert features["generate_leads"]["balance_key"] == "lead_generation"
    assert features["general_query"]["balance_key"] == "general"
    for access in ("quests", "file_uploads", "api_access", "priority_support"):
        assert features[access]["kind"] == "access"


def test_models(catalog):
    models = catalog["models"]
    assert len(models) >= 30
    for model in models:
        where = f"{model['provider']}/{model['model']}"
        assert set(model) <= {
            "provider",
            "model",
            "source",
            "long_context_threshold",
            *PRICE_FIELDS,
        }, where
        assert model["input_per_mtok"] and model["output_per_mtok"], where
        assert model["source"], where
        if model["provider"] == "anthropic":
            assert "cache_write_per_mtok" in model, where
            write, base = Decimal(model["cache_write_per_mtok"]), Decimal(model["input_per_mtok"])
            # 1.25 x input is Anthropic's 5-minute cache write; a row that departs from
            # it must say where its figure comes from.
            assert write == base * Decimal("1.25") or "cache_creation_input_token_cost" in model["source"], where
        long_prices = [k for k in model if k.startswith("long_context_") and k in PRICE_FIELDS]
        if long_prices or "long_context_threshold" in model:
            assert type(model["long_context_threshold"]) is int, where
            assert model["long_context_threshold"] > 0, where
            assert "long_context_input_per_mtok" in model, where
            for key in long_prices:
                assert key.removeprefix("long_context_") in model, (where, key)
                assert Decimal(model[key]) >= Decimal(model[key.removeprefix("long_context_")])
            # Long-context figures must name the price-map keys they were read from.
            assert "above_200k_tokens" in model["source"], where


def test_long_context_tiers_of_the_reference(catalog):
    models = {(m["provider"], m["model"]): m for m in catalog["models"]}
    for key in (("gemini", "gemini/gemini-2.5-pro"), ("anthropic", "claude-sonnet-4-5")):
        model = models[key]
        assert model["long_context_threshold"] == 200_000
        assert "input_cost_per_token_above_200k_tokens" in model["source"]
    assert models[("gemini", "gemini/gemini-2.5-pro")]["long_context_input_per_mtok"] == "2.5"
    assert models[("anthropic", "claude-sonnet-4-5")]["long_context_output_per_mtok"] == "22.5"


@pytest.mark.skipif(not REFERENCE_CSV.exists(), reason="shared/reference not beside the repo")
def test_every_reference_model_is_present_with_its_prices(catalog):
    models = {(m["provider"], m["model"]): m for m in catalog["models"]}
    with REFERENCE_CSV.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows
    for row in rows:
        key = (row["provider"], row["model"])
        assert key in models, key
        model = models[key]
        # Exactly the CSV's strings: the catalog copies the reference, never re-rounds it.
        for column in ("input_per_mtok", "output_per_mtok", "cached_input_per_mtok"):
            if row[column]:
                assert model.get(column) == row[column], (key, column)
            else:
                assert column not in model, (key, column)
        assert model["source"].startswith(row["source"]), key
