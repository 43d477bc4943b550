"""Maintenance releases stale holds, deletes expired guest sessions and old counters, and
records threshold notices once per kind and period."""

from __future__ import annotations

import uuid

from tests.conftest import MICRO, new_account_id, unique_ip
from tests.maintenance.helpers import drain


def credits(ledger, account):
    return next(b for b in ledger.balance(account)["balances"] if b["key"] == "credits")


def test_a_reservation_past_its_expiry_is_released(ledger, make_account, sql):
    drain(ledger)
    account = make_account("free")
    before = credits(ledger, account)["available"]
    gate = ledger.gate(
        {
            "account_id": account,
            "feature": "chat",
            "model": "gpt-4o-mini",
            "mode": "reserve",
            "estimate": {"input_tokens": 20000, "max_output_tokens": 20000},
            "idempotency_key": "hold-1",
        }
    )
    hold = gate["reservation"]
    assert hold["amount"] > 0 and credits(ledger, account)["available"] == before - hold["amount"]
    sql("UPDATE creditgate.reservations SET expires_at = now() - interval '1 second' WHERE id = %s", hold["id"])

    answer = ledger.run_maintenance({})

    assert answer["reservations_expired"] == 1
    assert sql("SELECT status FROM creditgate.reservations WHERE id = %s", hold["id"]) == [("expired",)]
    balance = credits(ledger, account)
    assert balance["available"] == before and balance["reserved"] == 0
    assert ledger.reconcile(account)["ok"], ledger.reconcile(account)
    assert ledger.run_maintenance({})["reservations_expired"] == 0


def test_a_live_reservation_is_left_alone(ledger, make_account, sql):
    drain(ledger)
    account = make_account("free")
    gate = ledger.gate(
        {
            "account_id": account,
            "feature": "ai_message",
            "mode": "reserve",
            "estimate": {"quantity": 5},
            "idempotency_key": "hold-live",
        }
    )
    assert ledger.run_maintenance({})["reservations_expired"] == 0
    assert sql("SELECT status FROM creditgate.reservations WHERE id = %s", gate["reservation"]["id"]) == [("active",)]


def test_expired_guest_sessions_and_old_counters_are_deleted(ledger, sql):
    drain(ledger)
    old, live = f"old-{uuid.uuid4().hex}", f"live-{uuid.uuid4().hex}"
    sql(
        "INSERT INTO creditgate.guest_sessions (session_id, ip, exchanges, expires_at) VALUES"
        " (%s, %s::inet, 3, now() - interval '1 hour'), (%s, %s::inet, 1, now() + interval '1 hour')",
        old,
        unique_ip(),
        live,
        unique_ip(),
    )
    sql(
        "INSERT INTO creditgate.idempotency_keys (account_id, scope, key, request_hash, response)"
        " VALUES (%s, 'gate', 'k1', 'h', '{}'), (%s, 'gate', 'k1', 'h', '{}')",
        f"guest:{old}",
        f"guest:{live}",
    )
    ip = unique_ip()
    sql(
        "INSERT INTO creditgate.guest_ip_days (ip, day, exchanges, sessions) VALUES"
        " (%s::inet, current_date - 120, 5, 2), (%s::inet, current_date, 1, 1)",
        ip,
        ip,
    )
    stale, current = new_account_id("rate-old"), new_account_id("rate-now")
    sql(
        "INSERT INTO creditgate.rate_windows (account_id, window_start, requests) VALUES"
        " (%s, date_trunc('minute', now()) - interval '2 hours', 4), (%s, date_trunc('minute', now()), 1)",
        stale,
        current,
    )

    answer = ledger.run_maintenance({})

    assert answer["guest_sessions_deleted"] == 1
    assert sql("SELECT session_id FROM creditgate.guest_sessions WHERE session_id IN (%s, %s)", old, live) == [(live,)]
    assert sql(
        "SELECT account_id FROM creditgate.idempotency_keys WHERE account_id IN (%s, %s)",
        f"guest:{old}",
        f"guest:{live}",
    ) == [(f"guest:{live}",)]
    assert sql("SELECT count(*) FROM creditgate.guest_ip_days WHERE ip = %s::inet", ip) == [(1,)]
    assert sql("SELECT account_id FROM creditgate.rate_windows WHERE account_id IN (%s, %s)", stale, current) == [
        (current,)
    ]


def notices(sql, account):
    rows = sql("SELECT key, kind FROM creditgate.notices WHERE account_id = %s ORDER BY kind", account)
    return [f"{key}:{kind}" for key, kind in rows]


def use(ledger, account, units, key):
    # ai_message costs 0.2 credits a unit.
    ledger.record_usage({"account_id": account, "feature": "ai_message", "quantity": units, "idempotency_key": key})


def test_threshold_notices_are_recorded_once_per_kind_and_period(ledger, make_account, sql):
    drain(ledger)
    account = make_account("free")  # 100 credits of allowance and 50 welcome credits

    use(ledger, account, 350, "u1")  # 70 credits: below every threshold
    ledger.run_maintenance({})
    assert notices(sql, account) == []

    use(ledger, account, 25, "u2")  # 75
    assert ledger.run_maintenance({})["notices"] >= 1
    assert notices(sql, account) == ["credits:allowance_75"]
    ledger.run_maintenance({})
    assert notices(sql, account) == ["credits:allowance_75"]

    use(ledger, account, 100, "u3")  # 95
    ledger.run_maintenance({})
    assert notices(sql, account) == ["credits:allowance_75", "credits:allowance_90"]

    use(ledger, account, 230, "u4")  # 141: over the allowance, 9 credits left, below low_balance (10)
    ledger.run_maintenance({})
    assert notices(sql, account) == [
        "credits:allowance_100",
        "credits:allowance_75",
        "credits:allowance_90",
        "credits:low_balance",
    ]
    ledger.run_maintenance({})
    assert len(notices(sql, account)) == 4
    assert credits(ledger, account)["available"] == 9 * MICRO
