-- The floor (bench/floor_function.sql): only the writes every committed call must make —
-- guarded debit, grant burn, usage row, journal line, idempotency row — in one function.
\set n random(1, :naccounts)
SELECT bench.floor_commit('bench-' || :n::int, :cost::bigint, gen_random_uuid()::text);
