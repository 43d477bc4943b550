"""Moving time for maintenance tests. The database clock cannot move, so an account's
period (and the allowance grants that end with it) is moved into the past instead."""

from __future__ import annotations

ZERO = {"allowances_granted": 0, "grants_expired": 0, "reservations_expired": 0, "guest_sessions_deleted": 0}


def drain(ledger) -> None:
    """Runs maintenance until nothing is due, so a test starts from a clean slate even
    after tests that left due work behind. Holds earlier tests left open are made due
    first: one reaching its expiry during the test would change the counts it checks.
    (Call it before the test makes holds of its own.)"""
    with ledger.pool.connection() as conn:
        conn.execute(
            "UPDATE creditgate.reservations SET expires_at = now() WHERE status = 'active' AND expires_at > now()"
        )
    for _ in range(200):
        if not ledger.run_maintenance({"limit": 5000})["more"]:
            return
    raise AssertionError("maintenance never finished")


def move_back(sql, account_id: str, interval: str) -> None:
    """Moves the account's anchor and period, and its allowance grants, `interval` back:
    as if it had signed up that much earlier and nothing had run since. Use a span that
    is not a whole number of months, or the 'current' period computed afterwards is the
    very period whose allowance was granted at signup."""
    sql(
        "UPDATE creditgate.accounts SET period_anchor = period_anchor - %s::interval,"
        " period_start = period_start - %s::interval, period_end = period_end - %s::interval WHERE id = %s",
        interval,
        interval,
        interval,
        account_id,
    )
    sql(
        "UPDATE creditgate.grants SET expires_at = expires_at - %s::interval,"
        " period_start = period_start - %s::interval WHERE account_id = %s AND source = 'allowance'",
        interval,
        interval,
        account_id,
    )


def current_allowances(sql, account_id: str) -> dict[str, int]:
    """{key: number of allowance grants} for the account's current period."""
    rows = sql(
        "SELECT g.key, count(*) FROM creditgate.grants g JOIN creditgate.accounts a ON a.id = g.account_id"
        " WHERE g.account_id = %s AND g.source = 'allowance' AND g.period_start = a.period_start GROUP BY g.key",
        account_id,
    )
    return dict(rows)


def counts(answer: dict) -> dict:
    return {k: answer[k] for k in ZERO}
