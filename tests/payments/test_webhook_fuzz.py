"""Signed Stripe events with a field of the wrong shape: whatever Stripe (or a bug between
API versions) sends under a valid signature is answered 200, 400, or 502 when Stripe cannot
give what the event names, never 500, and the ledger stays reconciled. The events are the
real ones of a pack purchase, its refund and a dispute, and of a subscription's start,
renewal and cancellation, with one value replaced."""

from __future__ import annotations

import copy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.payments.conftest import assert_reconciled, checkout, deliver, deliver_all, new_key

ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(["", "0", "-1", "1e3", "9" * 30, "null", "acct-x", "cs_nope", "price_nope"]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


def paths(value, prefix=()):
    """Every place in the event a value sits, leaves and containers alike."""
    yield prefix
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from paths(inner, (*prefix, index))


def replaced(event: dict, path: tuple, new) -> dict:
    changed = copy.deepcopy(event)
    target = changed
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new
    return changed


@pytest.fixture(scope="module")
def story():
    """Filled by the first example: a real account and the events of its purchases."""
    return {}


def events_of_a_customer(stripe_http, fake, service_headers, make_account) -> tuple[str, list[dict]]:
    account = make_account("free")
    pack = checkout(stripe_http, service_headers, account, key=new_key(), pack="growth").json()
    bought = fake.complete_checkout(pack["session_id"])
    deliver_all(stripe_http, fake, bought)
    charge = fake.get(bought[0]["data"]["object"]["payment_intent"])["latest_charge"]
    refunded = fake.refund(charge, amount=100)
    disputed = fake.dispute(charge)
    plan = checkout(stripe_http, service_headers, account, key=new_key(), plan="pro").json()
    subscribed = fake.complete_checkout(plan["session_id"])
    deliver_all(stripe_http, fake, subscribed)
    subscription = fake.objects("subscription")[-1]["id"]
    renewed = fake.renew_subscription(subscription)
    cancelled = fake.cancel_subscription(subscription)
    return account, [*bought, *refunded, *disputed, *subscribed, *renewed, *cancelled]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_signed_event_with_an_odd_field_is_never_a_500(
    stripe_http, fake, service_headers, make_account, ledger, story, data
):
    if not story:
        story["account"], story["events"] = events_of_a_customer(stripe_http, fake, service_headers, make_account)
    event = data.draw(st.sampled_from(story["events"]))
    where = data.draw(st.sampled_from([p for p in paths(event) if p and p[0] in ("data", "type", "created")]))
    odd = replaced(event, where, data.draw(ODD_VALUES))
    odd["id"] = f"evt_fuzz_{new_key()}"  # a new delivery, not a replay of the real one

    answer = deliver(stripe_http, fake, odd)

    # 502: Stripe cannot give what the event names (line items, a disputed charge); Stripe
    # retries, and the event applies once the key is right.
    assert answer.status_code in (200, 400, 502), (where, answer.status_code, answer.text)
    if answer.status_code != 200:
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["code"] in ("invalid_payload", "payment_provider_error")
    assert_reconciled(ledger, story["account"])


def test_what_the_fuzzing_found(stripe_http, fake, service_headers, make_account, ledger, sql):
    """What was a 500 (or, for a subscription Stripe cannot give, a 502 retrying cannot fix)."""
    account, events = events_of_a_customer(stripe_http, fake, service_headers, make_account)
    first = {}
    for event in events:
        first.setdefault(event["type"], event)
    cases = [
        # A field the ledger keeps in a NOT NULL or non-negative column: the payload's fault.
        ("checkout.session.completed", ("data", "object", "id"), None, 400),
        ("charge.dispute.created", ("data", "object", "amount"), -5, 400),
        ("charge.dispute.created", ("data", "object", "amount"), None, 400),
        ("charge.dispute.created", ("data", "object", "id"), None, 400),
        # Metadata that is not an object is no metadata.
        ("checkout.session.completed", ("data", "object", "metadata"), "x", 200),
        # A subscription this key cannot fetch: its own events apply its plan.
        ("checkout.session.completed", ("data", "object", "subscription"), "sub_nowhere", 200),
        # A disputed charge it cannot fetch stays a 502: without it the account is not held.
        ("charge.dispute.created", ("data", "object", "charge"), "ch_nowhere", 502),
    ]
    for event_type, where, value, status in cases:
        stored = sql("SELECT count(*) FROM creditgate.stripe_events")[0][0]
        odd = replaced(first[event_type], where, value)
        odd["id"] = f"evt_found_{new_key()}"
        answer = deliver(stripe_http, fake, odd)
        assert answer.status_code == status, (event_type, where, value, answer.text)
        if status != 200:  # refused, or Stripe is asked again later: nothing stored
            assert answer.json()["code"] == ("invalid_payload" if status == 400 else "payment_provider_error")
            assert sql("SELECT count(*) FROM creditgate.stripe_events")[0][0] == stored
    assert_reconciled(ledger, account)
