-- Usage: what a call actually used. It settles the call's reservation (charging the actual
-- cost and freeing the rest) or charges the balance directly. Usage that happened is
-- always recorded: a shortfall becomes debt, never a lost row.

CREATE FUNCTION creditgate.record_usage(request jsonb)
RETURNS jsonb LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  u jsonb := coalesce(request -> 'usage', '{}');
  v_in bigint := coalesce((u ->> 'input_tokens')::bigint, 0);
  v_out bigint := coalesce((u ->> 'output_tokens')::bigint, 0);
  v_cached bigint := coalesce((u ->> 'cached_input_tokens')::bigint, 0);
  v_reasoning bigint := coalesce((u ->> 'reasoning_tokens')::bigint, 0);
  v_cache_write bigint := coalesce((u ->> 'cache_write_tokens')::bigint, 0);
  v_quantity bigint := coalesce((request ->> 'quantity')::bigint, 1);
  v_account_id text := request ->> 'account_id';
  v_idem text := request ->> 'idempotency_key';
  v_res creditgate.reservations;
  v_feature creditgate.features;
  v_account creditgate.accounts;
  v_plan creditgate.plans;
  v_price creditgate.model_prices;
  v_balance creditgate.balances;
  v_previous jsonb;
  v_pico bigint := 0;
  v_cost bigint;
  v_debt bigint;
  v_usage_id uuid := gen_random_uuid();
  v_settling boolean := false;
BEGIN
  IF request ->> 'reservation_id' IS NOT NULL THEN
    SELECT * INTO v_res FROM creditgate.reservations
    WHERE id = creditgate.to_uuid(request ->> 'reservation_id');
    IF NOT FOUND OR (v_account_id IS NOT NULL AND v_account_id <> v_res.account_id) THEN
      PERFORM creditgate.fail(404, 'reservation_not_found',
        jsonb_build_object('reservation_id', request ->> 'reservation_id'));
    END IF;
    v_account_id := v_res.account_id;
  END IF;
  SELECT * INTO v_feature FROM creditgate.features WHERE id = request ->> 'feature' AND active;
  IF NOT FOUND THEN
    PERFORM creditgate.fail(422, 'unknown_feature', jsonb_build_object('feature', request ->> 'feature'));
  END IF;
  IF v_feature.kind <> 'metered' THEN
    PERFORM creditgate.fail(422, 'feature_not_metered', jsonb_build_object('feature', v_feature.id));
  END IF;
  IF request ->> 'agent' IS NOT NULL
     AND NOT EXISTS (SELECT 1 FROM creditgate.agents WHERE id = request ->> 'agent') THEN
    PERFORM creditgate.fail(422, 'unknown_agent', jsonb_build_object('agent', request ->> 'agent'));
  END IF;

  -- Unlike the gate, usage claims its key under the account lock: a batch holds the locks
  -- of the accounts it has done while it claims the next event's key, and a claim taken
  -- before waiting for a lock could close a cycle with it.
  v_account := creditgate.lock_account(v_account_id);
  v_previous := creditgate.claim_idempotency(v_account_id, 'usage', v_idem, request);
  IF v_previous IS NOT NULL THEN
    RETURN v_previous || '{"replayed": true}';
  END IF;
  v_account := creditgate.roll_period(v_account);
  SELECT * INTO v_plan FROM creditgate.plans WHERE id = v_account.plan_id;

  IF request ->> 'model' IS NOT NULL AND v_feature.pricing_mode = 'model' THEN
    v_price := creditgate.find_price(request ->> 'model', request ->> 'provider');
  ELSIF request ->> 'model' IS NOT NULL THEN
    -- Not charged by the model, but its provider cost is still worth knowing.
    BEGIN
      v_price := creditgate.find_price(request ->> 'model', request ->> 'provider');
    EXCEPTION WHEN SQLSTATE 'PT422' THEN
      v_price := NULL;
    END;
  ELSIF v_feature.pricing_mode = 'model' THEN
    PERFORM creditgate.fail(422, 'invalid_request', jsonb_build_object('errors', jsonb_build_array(
      jsonb_build_object('loc', jsonb_build_array('body', 'model'),
                         'msg', 'this feature is priced by model: model is required'))));
  END IF;
  IF v_price.id IS NOT NULL THEN
    v_pico := creditgate.model_cost_pico_usd(v_price, v_in, v_out, v_cached, v_reasoning, v_cache_write);
  END IF;
  v_cost := CASE v_feature.pricing_mode
              WHEN 'model' THEN creditgate.usd_to_credits(v_pico)
              WHEN 'tokens' THEN (v_in + v_out) * 1000000
              ELSE v_quantity * v_feature.credits_per_unit END;

  IF v_res.id IS NOT NULL THEN
    IF v_res.key <> v_feature.balance_key THEN
      PERFORM creditgate.fail(422, 'reservation_feature_mismatch',
        jsonb_build_object('reservation_id', v_res.id, 'reservation_key', v_res.key, 'feature', v_feature.id));
    END IF;
    SELECT * INTO v_res FROM creditgate.reservations WHERE id = v_res.id;
    IF v_res.status = 'settled' THEN
      PERFORM creditgate.fail(409, 'reservation_settled', jsonb_build_object('reservation_id', v_res.id));
    END IF;
    -- A released or expired hold no longer covers the call, but the call happened: it is
    -- charged to the balance all the same.
    IF v_res.status = 'active' THEN
      v_settling := true;
      UPDATE creditgate.reservations SET status = 'settled', usage_id = v_usage_id, closed_at = now()
       WHERE id = v_res.id;
    END IF;
  END IF;

  INSERT INTO creditgate.usage_events (id, account_id, user_id, session_id, feature_id, agent_id,
    provider, model, price_id, prices, input_tokens, output_tokens, cached_input_tokens,
    reasoning_tokens, cache_write_tokens, quantity, key, cost, cost_pico_usd, reservation_id, metadata)
  SELECT v_usage_id, v_account_id, request ->> 'user_id', request ->> 'session_id', v_feature.id,
    request ->> 'agent', coalesce(request ->> 'provider', v_price.provider), request ->> 'model', v_price.id,
    CASE WHEN v_price.id IS NOT NULL THEN jsonb_build_object(
      'input_per_mtok', v_price.input_per_mtok, 'output_per_mtok', v_price.output_per_mtok,
      'cached_input_per_mtok', v_price.cached_input_per_mtok, 'reasoning_per_mtok', v_price.reasoning_per_mtok,
      'cache_write_per_mtok', v_price.cache_write_per_mtok,
      'credits_per_usd', s.credits_per_usd, 'markup_bps', s.markup_bps) END,
    v_in, v_out, v_cached, v_reasoning, v_cache_write,
    CASE WHEN v_feature.pricing_mode = 'per_unit' THEN v_quantity ELSE 0 END,
    v_feature.balance_key, v_cost, v_pico, v_res.id, request -> 'metadata'
  FROM creditgate.settings s;

  -- Settling frees the hold and charges the actual cost in one movement of the balance.
  v_debt := creditgate.consume(v_account_id, v_feature.balance_key, v_cost, v_usage_id,
                               CASE WHEN v_settling THEN v_res.amount ELSE 0 END);
  IF v_debt > 0 THEN
    UPDATE creditgate.usage_events SET debt_added = v_debt WHERE id = v_usage_id;
  END IF;
  IF v_res.id IS NULL THEN
    -- A call that went through a reservation was counted at the gate.
    PERFORM creditgate.count_request(v_account, v_plan, v_feature.requests_key, v_usage_id, false);
  END IF;
  IF v_settling THEN
    PERFORM creditgate.expire_grants(v_account_id, v_feature.balance_key);
  END IF;

  SELECT * INTO v_balance FROM creditgate.balances
  WHERE account_id = v_account_id AND key = v_feature.balance_key;
  RETURN creditgate.remember_response(v_account_id, 'usage', v_idem, jsonb_build_object(
    'usage_id', v_usage_id, 'account_id', v_account_id, 'feature', v_feature.id,
    'cost', v_cost, 'cost_pico_usd', v_pico,
    'balance', jsonb_build_object('key', v_balance.key, 'available', v_balance.available, 'debt', v_balance.debt),
    'reservation', CASE WHEN v_res.id IS NOT NULL THEN jsonb_build_object(
      'id', v_res.id, 'status', CASE WHEN v_settling THEN 'settled' ELSE v_res.status END,
      'released', CASE WHEN v_settling THEN greatest(v_res.amount - v_cost, 0) ELSE 0 END) END,
    'overdraft', v_debt > 0));
END
$$;

CREATE FUNCTION public.creditgate_record_usage(request jsonb)
RETURNS jsonb LANGUAGE sql SECURITY DEFINER SET search_path = '' AS $$
  SELECT creditgate.record_usage(request);
$$;

-- Up to 1000 independent events in one round trip. Each runs in its own subtransaction,
-- so a refused event rolls back alone; accounts are visited in a fixed order so two
-- batches touching the same accounts cannot deadlock.
CREATE FUNCTION public.creditgate_record_usage_batch(request jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  e record;
  v_results jsonb[] := '{}';
  v_result jsonb;
  v_state text;
  v_message text;
  v_detail text;
BEGIN
  v_results := array_fill(NULL::jsonb, ARRAY[jsonb_array_length(request -> 'events')]);
  FOR e IN
    SELECT x.value AS event, x.ordinality AS n,
           coalesce(x.value ->> 'account_id',
                    (SELECT r.account_id FROM creditgate.reservations r
                     WHERE r.id = creditgate.to_uuid(x.value ->> 'reservation_id')), '') AS account_id
    FROM jsonb_array_elements(request -> 'events') WITH ORDINALITY x
    ORDER BY 3, 2
  LOOP
    BEGIN
      v_result := creditgate.record_usage(e.event);
    EXCEPTION WHEN OTHERS THEN
      GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT, v_detail = PG_EXCEPTION_DETAIL;
      -- A refusal (PTxxx) or a value the database cannot hold (class 22) is that event's
      -- problem alone; anything else is a bug and fails the batch loudly.
      IF v_state LIKE 'PT%' THEN
        v_result := jsonb_build_object('error', jsonb_build_object('status', substr(v_state, 3)::integer,
          'code', v_message, 'detail', coalesce(nullif(v_detail, '')::jsonb, '{}')));
      ELSIF v_state LIKE '22%' THEN
        v_result := jsonb_build_object('error', jsonb_build_object('status', 422, 'code', 'invalid_request',
          'detail', jsonb_build_object('detail', v_message)));
      ELSE
        RAISE;
      END IF;
    END;
    v_results[e.n] := v_result;
  END LOOP;
  RETURN jsonb_build_object('results', to_jsonb(v_results));
END
$$;
