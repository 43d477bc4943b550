-- Baseline: the bare guarded debit the gate is built around, on the same balances
-- table, with nothing else (no journal, no usage row, no idempotency, no plan checks).
-- Variables from bench/run.py: -D naccounts=N -D cost=<micro-credits>.
\set n random(1, :naccounts)
UPDATE creditgate.balances SET available = available - :cost::bigint
 WHERE account_id = 'bench-' || :n::int AND key = 'credits' AND available >= :cost::bigint
RETURNING available;
