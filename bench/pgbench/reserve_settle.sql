-- A reserve + settle pair, as an app does it: two RPCs, two transactions (each commits
-- on its own, like two HTTP calls). One pgbench "transaction" = one pair.
\set n random(1, :naccounts)
SELECT public.creditgate_gate(jsonb_build_object(
  'account_id', 'bench-' || :n::int, 'feature', 'chat', 'model', 'gpt-4o-mini', 'mode', 'reserve',
  'estimate', jsonb_build_object('input_tokens', 1000, 'max_output_tokens', 500),
  'idempotency_key', gen_random_uuid()::text)) #>> '{reservation,id}' AS reservation_id \gset
SELECT public.creditgate_record_usage(jsonb_build_object(
  'account_id', 'bench-' || :n::int, 'reservation_id', :reservation_id::text, 'feature', 'chat',
  'model', 'gpt-4o-mini', 'usage', jsonb_build_object('input_tokens', 1000, 'output_tokens', 300),
  'idempotency_key', gen_random_uuid()::text));
