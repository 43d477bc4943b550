-- What guests' calls cost. A guest's chat is paid by the operator, but only signed-in
-- accounts could report usage, so the trial's provider cost was missing from the daily
-- cost alert, the metrics' cost and margin, and top models. The app's server now reports
-- a guest's call as any other, naming the guest session instead of an account
-- (`guest_session_id`, the X-Session-Id the gate saw): the call is priced as an account's
-- would be, kept as a usage row of `guest:<session>` with its provider cost and no credits,
-- and nothing is charged (guests have no balance; their limit is the gate's count). It is
-- recorded whether or not the session still exists, since usage that happened is kept, and
-- its idempotency key is kept as an account's is (not swept with the session).

CREATE FUNCTION creditgate.record_guest_usage(request jsonb)
RETURNS jsonb LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  u jsonb := coalesce(request -> 'usage', '{}');
  v_in bigint := coalesce((u ->> 'input_tokens')::bigint, 0);
  v_out bigint := coalesce((u ->> 'output_tokens')::bigint, 0);
  v_cached bigint := coalesce((u ->> 'cached_input_tokens')::bigint, 0);
  v_reasoning bigint := coalesce((u ->> 'reasoning_tokens')::bigint, 0);
  v_cache_write bigint := coalesce((u ->> 'cache_write_tokens')::bigint, 0);
  v_quantity bigint := coalesce((request ->> 'quantity')::bigint, 1);
  v_session text := request ->> 'guest_session_id';
  -- Not the session's own 'guest:<session>': maintenance deletes those keys with the
  -- session, and a report retried after that would be recorded twice. ('/' is never in a
  -- session id, so this holder is no session's, and the 'guest:' prefix no account's.)
  v_holder text := 'guest:usage/' || (request ->> 'guest_session_id');
  v_idem text := request ->> 'idempotency_key';
  v_feature creditgate.features;
  v_price creditgate.model_prices;
  v_previous jsonb;
  v_pico bigint := 0;
  v_usage_id uuid := gen_random_uuid();
BEGIN
  IF v_session IS NULL OR v_session !~ '^[A-Za-z0-9._:-]{8,128}$'
     OR request ? 'account_id' OR request ? 'reservation_id' OR request ? 'user_id' THEN
    PERFORM creditgate.fail(422, 'invalid_request', jsonb_build_object('errors', jsonb_build_array(
      jsonb_build_object('loc', jsonb_build_array('body', 'guest_session_id'),
        'msg', 'a guest session id (8-128 letters, digits, ._:-), without account_id, reservation_id or user_id'))));
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

  v_previous := creditgate.claim_idempotency(v_holder, 'usage', v_idem, request);
  IF v_previous IS NOT NULL THEN
    RETURN v_previous || '{"replayed": true}';
  END IF;

  -- Priced as an account's call is (record_usage of 108_request_holds.sql): a model the
  -- catalog does not price is 422 for a feature priced by model, so its cost is not lost.
  IF request ->> 'model' IS NOT NULL AND v_feature.pricing_mode = 'model' THEN
    v_price := creditgate.find_price(request ->> 'model', request ->> 'provider');
  ELSIF request ->> 'model' IS NOT NULL THEN
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
  IF v_feature.pricing_mode IN ('model', 'tokens') AND NOT (request ? 'usage') THEN
    PERFORM creditgate.fail(422, 'invalid_request', jsonb_build_object('errors', jsonb_build_array(
      jsonb_build_object('loc', jsonb_build_array('body', 'usage'),
                         'msg', 'this feature is priced by tokens: usage (or raw_usage) is required'))));
  END IF;
  IF v_price.id IS NOT NULL THEN
    v_pico := creditgate.model_cost_pico_usd(v_price, v_in, v_out, v_cached, v_reasoning, v_cache_write);
  END IF;

  INSERT INTO creditgate.usage_events (id, account_id, session_id, feature_id, agent_id, provider, model,
    price_id, prices, input_tokens, output_tokens, cached_input_tokens, reasoning_tokens, cache_write_tokens,
    quantity, key, cost, cost_pico_usd, metadata, created_at)
  SELECT v_usage_id, 'guest:' || v_session, request ->> 'session_id', v_feature.id, request ->> 'agent',
    coalesce(request ->> 'provider', v_price.provider), request ->> 'model', v_price.id,
    CASE WHEN v_price.id IS NOT NULL THEN jsonb_build_object(
      'input_per_mtok', v_price.input_per_mtok, 'output_per_mtok', v_price.output_per_mtok,
      'cached_input_per_mtok', v_price.cached_input_per_mtok, 'reasoning_per_mtok', v_price.reasoning_per_mtok,
      'cache_write_per_mtok', v_price.cache_write_per_mtok,
      'credits_per_usd', s.credits_per_usd, 'markup_bps', s.markup_bps) END,
    v_in, v_out, v_cached, v_reasoning, v_cache_write,
    CASE WHEN v_feature.pricing_mode = 'per_unit' THEN v_quantity ELSE 0 END,
    v_feature.balance_key, 0, v_pico, request -> 'metadata',
    least(coalesce((request ->> 'occurred_at')::timestamptz, now()), now())
  FROM creditgate.settings s;

  RETURN creditgate.remember_response(v_holder, 'usage', v_idem, jsonb_build_object(
    'usage_id', v_usage_id, 'account_id', NULL, 'guest_session_id', v_session, 'feature', v_feature.id,
    'cost', 0, 'cost_pico_usd', v_pico, 'balance', NULL, 'reservation', NULL, 'overdraft', false));
END
$$;

-- One event, an account's or a guest's.
CREATE FUNCTION creditgate.record_any_usage(request jsonb)
RETURNS jsonb LANGUAGE sql SET search_path = '' AS $$
  SELECT CASE WHEN request ? 'guest_session_id' THEN creditgate.record_guest_usage(request)
              ELSE creditgate.record_usage(request) END;
$$;

-- The usage RPC of 60_usage.sql, for guests too.
CREATE OR REPLACE FUNCTION public.creditgate_record_usage(request jsonb)
RETURNS jsonb LANGUAGE sql SECURITY DEFINER SET search_path = '' AS $$
  SELECT creditgate.record_any_usage(request);
$$;

-- The batch of 60_usage.sql, for guests too.
CREATE OR REPLACE FUNCTION public.creditgate_record_usage_batch(request jsonb)
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
                     WHERE r.id = creditgate.to_uuid(x.value ->> 'reservation_id')),
                    'guest:' || (x.value ->> 'guest_session_id'), '') AS account_id
    FROM jsonb_array_elements(request -> 'events') WITH ORDINALITY x
    -- One order for every batch, so two batches never wait on each other in a cycle: an
    -- account's events under its lock, a guest's (no lock) by the idempotency key each claims.
    ORDER BY 3, CASE WHEN x.value ? 'guest_session_id' THEN x.value ->> 'idempotency_key' END, 2
  LOOP
    BEGIN
      v_result := creditgate.record_any_usage(e.event);
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

SELECT creditgate.secure();
