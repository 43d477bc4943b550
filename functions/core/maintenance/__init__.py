"""Scheduled maintenance: period allowances, expiries, stale reservations, guest
sessions and threshold notices, in bounded batches (one RPC each)."""
