-- The floor: the writes the ledger's design asks of every committed call, and nothing
-- else. A guarded debit of the credits balance, the grant it burns, one usage row, one
-- journal line and one idempotency row holding the answer, through the ledger's own
-- helpers, in one function call. No feature, plan, price, rate or `requests` checks.
-- It measures how close to the bare UPDATE any gate that keeps the journal, the usage
-- history and idempotency can come on this machine. Loaded into the bench's throwaway
-- database only (bench/run.py), never by a migration.
CREATE SCHEMA IF NOT EXISTS bench;

CREATE OR REPLACE FUNCTION bench.floor_commit(p_account_id text, p_cost bigint, p_idempotency_key text)
RETURNS jsonb LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v_balance creditgate.balances;
  v_usage_id uuid := gen_random_uuid();
  v_response jsonb;
BEGIN
  UPDATE creditgate.balances SET available = available - p_cost, used_this_period = used_this_period + p_cost
   WHERE account_id = p_account_id AND key = 'credits' AND available >= p_cost
  RETURNING * INTO v_balance;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'insufficient credits';
  END IF;
  PERFORM creditgate.burn_grants(p_account_id, 'credits', p_cost);
  INSERT INTO creditgate.usage_events (id, account_id, feature_id, model, input_tokens, output_tokens, key, cost)
  VALUES (v_usage_id, p_account_id, 'chat', 'gpt-4o-mini', 1000, 500, 'credits', p_cost);
  PERFORM creditgate.journal(v_balance, 'consume', -p_cost, NULL, v_usage_id);
  v_response := jsonb_build_object('allowed', true, 'usage_id', v_usage_id, 'charged', p_cost,
                                   'balance', jsonb_build_object('key', 'credits', 'available', v_balance.available));
  INSERT INTO creditgate.idempotency_keys (account_id, scope, key, request_hash, response)
  VALUES (p_account_id, 'bench', p_idempotency_key, md5(p_idempotency_key), v_response);
  RETURN v_response;
END
$$;
