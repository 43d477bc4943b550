-- gate, mode commit: plan/feature/rate checks, priced estimate, guarded debit of credits
-- and of the plan's `requests` counter, grant burn, usage row, journal lines and the
-- idempotency record: one RPC, one transaction. A fresh idempotency key per call.
\set n random(1, :naccounts)
SELECT public.creditgate_gate(jsonb_build_object(
  'account_id', 'bench-' || :n::int, 'feature', 'chat', 'model', 'gpt-4o-mini', 'mode', 'commit',
  'estimate', jsonb_build_object('input_tokens', 1000, 'max_output_tokens', 500),
  'idempotency_key', gen_random_uuid()::text));
