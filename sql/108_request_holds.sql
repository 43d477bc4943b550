-- A reserved call holds its `requests` too. The gate counted a reserved call's request at
-- once, so a hold released because the model call failed (or left to expire) still cost
-- the user one request of their quota. Now a reserve sets the request aside like the
-- credits: a second hold on the plan's request key, made with the call's hold and ended
-- with it. Settling the call counts the request (from that hold); releasing or expiring it
-- gives the request back. A released or expired hold that usage still settles (the call
-- did happen) counts its request then, as usage without a hold does. Holds made before
-- this migration counted their request at the gate and have no request hold: settling them
-- counts nothing more.
--
-- The request hold is an ordinary reservation row (parent_id names the call's hold), so
-- the balance's `reserved`, reconcile and hold-aware expiry need nothing new; only the
-- call's hold can be named by the API.
--
-- Ending a hold while the balance is in debt (released, expired, or settled for less than
-- it held) paid the debt with all it freed, even the part of a grant past its expiry (a
-- promo that ended while the hold was open), which only the hold's own call may spend:
-- that part now expires (free_hold). A settle's `overdraft` is whether the debt grew.

ALTER TABLE creditgate.reservations ADD COLUMN parent_id uuid REFERENCES creditgate.reservations (id);
CREATE INDEX reservations_parent ON creditgate.reservations (parent_id) WHERE parent_id IS NOT NULL;

-- Sets one request aside for the hold `p_hold`, when the plan meters requests; refused
-- (quota_exhausted) when none is available, as counting it was.
CREATE FUNCTION creditgate.hold_request(p_plan creditgate.plans, p_key text, p_hold creditgate.reservations)
RETURNS void LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
  IF p_key IS NULL OR NOT (p_plan.allowances ? p_key) THEN
    RETURN;
  END IF;
  PERFORM creditgate.charge(p_hold.account_id, p_key, 1000000, NULL, true);
  INSERT INTO creditgate.reservations (account_id, key, amount, feature_id, model, expires_at, created_at, parent_id)
  VALUES (p_hold.account_id, p_key, 1000000, p_hold.feature_id, p_hold.model, p_hold.expires_at,
          p_hold.created_at, p_hold.id);
END
$$;

-- Counts the request of a call settled through `p_hold`: from its request hold while that
-- is active; else, when the hold had one (it was given back), as usage that happened (debt
-- past the quota). Returns the debt added.
CREATE FUNCTION creditgate.settle_request(p_hold creditgate.reservations, p_plan creditgate.plans, p_usage_id uuid)
RETURNS bigint LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v_request creditgate.reservations;
  v_debt bigint := 0;
BEGIN
  SELECT * INTO v_request FROM creditgate.reservations WHERE parent_id = p_hold.id;
  IF NOT FOUND THEN
    RETURN 0;
  END IF;
  IF v_request.status = 'active' THEN
    -- The held request covers the call: it adds no debt (its freed hold may pay older debt
    -- first, which the call then owes instead; the total does not grow).
    PERFORM creditgate.consume(v_request.account_id, v_request.key, 1000000, p_usage_id,
                               v_request.amount, v_request.created_at);
  ELSIF p_plan.allowances ? v_request.key THEN
    v_debt := creditgate.consume(v_request.account_id, v_request.key, 1000000, p_usage_id);
  END IF;
  UPDATE creditgate.reservations SET status = 'settled', usage_id = p_usage_id,
    closed_at = coalesce(closed_at, now())
   WHERE id = v_request.id;
  IF v_request.status = 'active' THEN
    PERFORM creditgate.expire_grants(v_request.account_id, v_request.key);
  END IF;
  RETURN v_debt;
END
$$;

-- Frees `p_amount` of a hold that has ended (its row no longer active). While the balance
-- is in debt nothing is unreserved, so the amount is exactly what the hold kept: its part
-- of grants past their expiry leaves the hold and expires (available stays 0), as
-- expire_grants would take it were that amount available; only the rest pays the debt.
-- Credits of an expired grant pay for nothing but the call whose hold kept them.
CREATE FUNCTION creditgate.free_hold(p_account_id text, p_key text, p_amount bigint)
RETURNS void LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v_balance creditgate.balances;
  v_left bigint := p_amount;
  v_take bigint;
  g creditgate.grants;
BEGIN
  IF p_amount <= 0 THEN
    RETURN;
  END IF;
  SELECT * INTO v_balance FROM creditgate.balances WHERE account_id = p_account_id AND key = p_key;
  IF v_balance.debt > 0 THEN
    FOR g IN
      SELECT * FROM creditgate.grants
      WHERE account_id = p_account_id AND key = p_key AND live AND expires_at <= now()
      ORDER BY priority, expires_at, id
    LOOP
      v_balance.available := v_left;
      v_take := creditgate.expirable(g, v_balance);
      CONTINUE WHEN v_take <= 0;
      UPDATE creditgate.grants SET remaining = remaining - v_take WHERE id = g.id;
      UPDATE creditgate.balances SET reserved = reserved - v_take
       WHERE account_id = p_account_id AND key = p_key
      RETURNING * INTO v_balance;
      PERFORM creditgate.journal(v_balance, 'expire', -v_take, g.id, NULL, g.source, g.external_ref);
      v_left := v_left - v_take;
    END LOOP;
  END IF;
  -- Nothing consumed, the rest freed (paying debt first).
  PERFORM creditgate.consume(p_account_id, p_key, 0, NULL, v_left);
  PERFORM creditgate.expire_grants(p_account_id, p_key);
END
$$;

-- Ends a hold without a call to pay, and the request the call held with it.
CREATE OR REPLACE FUNCTION creditgate.close_reservation(p_reservation creditgate.reservations, p_status text)
RETURNS void LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v_request creditgate.reservations;
BEGIN
  -- Only an active hold is freed, once: a caller may hold a copy of the row read before
  -- another path closed it (maintenance walks its holds from one snapshot).
  UPDATE creditgate.reservations SET status = p_status, closed_at = now()
   WHERE id = p_reservation.id AND status = 'active';
  IF NOT FOUND THEN
    RETURN;
  END IF;
  PERFORM creditgate.free_hold(p_reservation.account_id, p_reservation.key, p_reservation.amount);
  FOR v_request IN
    SELECT * FROM creditgate.reservations WHERE parent_id = p_reservation.id AND status = 'active'
  LOOP
    PERFORM creditgate.close_reservation(v_request, p_status);
  END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION public.creditgate_release_reservation(request jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  v_id uuid := creditgate.to_uuid(request ->> 'reservation_id');
  v_res creditgate.reservations;
BEGIN
  SELECT * INTO v_res FROM creditgate.reservations WHERE id = v_id AND parent_id IS NULL;
  IF NOT FOUND OR (request ->> 'account_id' IS NOT NULL AND request ->> 'account_id' <> v_res.account_id) THEN
    PERFORM creditgate.fail(404, 'reservation_not_found', jsonb_build_object('reservation_id', request ->> 'reservation_id'));
  END IF;
  PERFORM creditgate.lock_account(v_res.account_id);
  SELECT * INTO v_res FROM creditgate.reservations WHERE id = v_id;
  IF v_res.status = 'active' THEN
    PERFORM creditgate.close_reservation(v_res, 'released');
    RETURN jsonb_build_object('id', v_id, 'status', 'released', 'released', v_res.amount);
  ELSIF v_res.status = 'settled' THEN
    PERFORM creditgate.fail(409, 'reservation_settled', jsonb_build_object('reservation_id', v_id));
  END IF;
  RETURN jsonb_build_object('id', v_id, 'status', v_res.status, 'released', 0);
END
$$;

CREATE OR REPLACE FUNCTION creditgate.maintain_account(p_account creditgate.accounts)
RETURNS jsonb LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v_mark bigint;
  v_res creditgate.reservations;
  v_holds integer := 0;
  v_granted integer;
  v_expired integer;
BEGIN
  SELECT coalesce(max(id), 0) INTO v_mark FROM creditgate.ledger_entries WHERE account_id = p_account.id;
  FOR v_res IN
    SELECT * FROM creditgate.reservations
    WHERE account_id = p_account.id AND status = 'active' AND expires_at <= now() AND parent_id IS NULL
    ORDER BY expires_at, id
  LOOP
    PERFORM creditgate.close_reservation(v_res, 'expired');
    v_holds := v_holds + 1;
  END LOOP;
  PERFORM creditgate.roll_period(p_account);
  PERFORM creditgate.expire_grants(p_account.id);
  SELECT count(*) FILTER (WHERE kind = 'grant' AND source = 'allowance'),
         count(DISTINCT grant_id) FILTER (WHERE kind = 'expire')
  INTO v_granted, v_expired
  FROM creditgate.ledger_entries WHERE account_id = p_account.id AND id > v_mark;
  RETURN jsonb_build_object('allowances_granted', v_granted, 'grants_expired', v_expired,
                            'reservations_expired', v_holds);
END
$$;

CREATE OR REPLACE FUNCTION public.creditgate_gate(request jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  v_feature creditgate.features;
  v_account creditgate.accounts;
  v_plan creditgate.plans;
  v_balance creditgate.balances;
  v_account_id text := request ->> 'account_id';
  v_mode text := coalesce(request ->> 'mode', 'check');
  v_agent text := request ->> 'agent';
  v_idem text := request ->> 'idempotency_key';
  v_cost bigint;
  v_pico bigint;
  v_price_id bigint;
  v_previous jsonb;
  v_hold creditgate.reservations;
  v_reservation jsonb;
  v_usage_id uuid;
  v_count integer;
  v_low bigint;
  v_ttl integer;
  v_response jsonb;
BEGIN
  SELECT * INTO v_feature FROM creditgate.features WHERE id = request ->> 'feature' AND active;
  IF NOT FOUND THEN
    PERFORM creditgate.fail(422, 'unknown_feature', jsonb_build_object('feature', request ->> 'feature'));
  END IF;
  IF v_agent IS NOT NULL AND NOT EXISTS (SELECT 1 FROM creditgate.agents WHERE id = v_agent AND active) THEN
    PERFORM creditgate.fail(422, 'unknown_agent', jsonb_build_object('agent', v_agent));
  END IF;
  IF v_account_id IS NULL THEN
    RETURN creditgate.guest_gate(request, v_feature);
  END IF;
  SELECT e.cost, e.cost_pico_usd, e.price_id INTO v_cost, v_pico, v_price_id
  FROM creditgate.estimate_cost(v_feature, request) e;

  -- A signed-in user's first call creates their account.
  IF (request ->> 'auto_create')::boolean THEN
    IF NOT EXISTS (SELECT 1 FROM creditgate.accounts WHERE id = v_account_id) THEN
      PERFORM creditgate.create_account(v_account_id, 'free', 'user', request ->> 'email');
    END IF;
  END IF;
  -- The key is claimed, and a commit's usage row written, before the account is locked:
  -- a replay waits on the claim, not in the account's queue, and the lock is held for the
  -- money part only. A denial rolls all of it back. No cycle can form: gate keys are
  -- claimed by gate calls only, and a gate call holds no lock while it claims.
  IF v_mode <> 'check' THEN
    v_previous := creditgate.claim_idempotency(v_account_id, 'gate', v_idem, request);
    IF v_previous IS NOT NULL THEN
      RETURN v_previous;
    END IF;
  END IF;
  IF v_mode = 'commit' AND v_feature.kind = 'metered' THEN
    v_usage_id := gen_random_uuid();
    INSERT INTO creditgate.usage_events (id, account_id, user_id, feature_id, agent_id, provider, model,
      price_id, input_tokens, output_tokens, quantity, key, cost, cost_pico_usd, metadata)
    VALUES (v_usage_id, v_account_id, request ->> 'user_id', v_feature.id, v_agent, request ->> 'provider',
      request ->> 'model', v_price_id, coalesce((request #>> '{estimate,input_tokens}')::bigint, 0),
      coalesce((request #>> '{estimate,max_output_tokens}')::bigint, 0),
      coalesce((request #>> '{estimate,quantity}')::bigint, 0), v_feature.balance_key, v_cost, v_pico,
      '{"mode": "commit"}');
  END IF;
  SELECT low_balance, reservation_ttl_seconds INTO v_low, v_ttl FROM creditgate.settings;

  v_account := creditgate.roll_period(creditgate.lock_account(v_account_id));
  SELECT * INTO v_plan FROM creditgate.plans WHERE id = v_account.plan_id;

  IF v_account.status = 'disputed' THEN
    PERFORM creditgate.fail(403, 'account_disputed', jsonb_build_object('allowed', false,
      'account_id', v_account_id));
  END IF;
  IF NOT (v_feature.id = ANY (v_plan.features)) THEN
    PERFORM creditgate.fail(403, 'feature_not_in_plan', jsonb_build_object('allowed', false,
      'plan', v_plan.id, 'feature', v_feature.id, 'upgrade_to', creditgate.upgrade_to(v_feature.id, v_agent)));
  END IF;
  IF v_agent IS NOT NULL AND NOT (v_agent = ANY (v_plan.agents)) THEN
    PERFORM creditgate.fail(403, 'agent_not_in_plan', jsonb_build_object('allowed', false,
      'plan', v_plan.id, 'agent', v_agent, 'upgrade_to', creditgate.upgrade_to(NULL, v_agent)));
  END IF;
  IF v_plan.rate_limit_per_minute > 0 THEN
    INSERT INTO creditgate.rate_windows AS w (account_id, window_start, requests)
    VALUES (v_account_id, date_trunc('minute', now()), 1)
    ON CONFLICT (account_id, window_start) DO UPDATE SET requests = w.requests + 1
    RETURNING requests INTO v_count;
    IF v_count > v_plan.rate_limit_per_minute THEN
      PERFORM creditgate.fail(429, 'rate_limited', jsonb_build_object('allowed', false,
        'limit', v_plan.rate_limit_per_minute,
        'retry_after', greatest(1, ceil(60 - extract(epoch FROM now() - date_trunc('minute', now()))))::bigint));
    END IF;
  END IF;

  IF v_feature.kind = 'metered' THEN
    IF v_mode = 'check' THEN
      SELECT * INTO v_balance FROM creditgate.balances
      WHERE account_id = v_account_id AND key = v_feature.balance_key;
      IF coalesce(v_balance.debt, 0) > 0 OR coalesce(v_balance.available, 0) < greatest(v_cost, 1) THEN
        PERFORM creditgate.deny_short(v_feature.balance_key, v_cost, v_balance);
      END IF;
      -- The request the call would count, as a reserve or commit would take it.
      IF v_feature.requests_key IS NOT NULL AND v_plan.allowances ? v_feature.requests_key THEN
        PERFORM creditgate.check_short(v_account_id, v_feature.requests_key, 1000000);
      END IF;
    ELSE
      v_balance := creditgate.charge(v_account_id, v_feature.balance_key, v_cost, v_usage_id, v_mode = 'reserve');
      IF v_mode = 'reserve' THEN
        INSERT INTO creditgate.reservations (account_id, key, amount, feature_id, model, expires_at)
        VALUES (v_account_id, v_feature.balance_key, v_cost, v_feature.id, request ->> 'model',
                now() + make_interval(secs => coalesce((request ->> 'ttl_seconds')::integer, v_ttl)))
        RETURNING * INTO v_hold;
        v_reservation := jsonb_build_object('id', v_hold.id, 'amount', v_hold.amount, 'expires_at', v_hold.expires_at);
        PERFORM creditgate.hold_request(v_plan, v_feature.requests_key, v_hold);
      ELSE
        PERFORM creditgate.count_request(v_account, v_plan, v_feature.requests_key, v_usage_id, true);
      END IF;
    END IF;
  END IF;

  v_response := jsonb_build_object(
    'allowed', true, 'account_id', v_account_id, 'plan', v_plan.id, 'feature', v_feature.id,
    'agent', v_agent, 'model', request ->> 'model', 'mode', v_mode, 'cost_estimate', v_cost,
    'reservation', v_reservation,
    'charged', CASE WHEN v_mode = 'commit' THEN v_cost END, 'usage_id', v_usage_id,
    'balance', CASE WHEN v_balance.key IS NOT NULL
                    THEN jsonb_build_object('key', v_balance.key, 'available', v_balance.available) END,
    'warnings', CASE WHEN v_balance.key = 'credits' AND v_balance.available < v_low
                     THEN '["low_balance"]'::jsonb ELSE '[]'::jsonb END);
  IF v_mode <> 'check' THEN
    PERFORM creditgate.remember_response(v_account_id, 'gate', v_idem, v_response);
  END IF;
  RETURN v_response;
END
$$;

CREATE OR REPLACE FUNCTION creditgate.record_usage(request jsonb)
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
  v_quota_debt bigint := 0;
  v_debt_before bigint;
  v_usage_id uuid := gen_random_uuid();
  v_settling boolean := false;
BEGIN
  IF request ->> 'reservation_id' IS NOT NULL THEN
    SELECT * INTO v_res FROM creditgate.reservations
    WHERE id = creditgate.to_uuid(request ->> 'reservation_id') AND parent_id IS NULL;
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
  IF v_feature.pricing_mode IN ('model', 'tokens') AND NOT (request ? 'usage') THEN
    PERFORM creditgate.fail(422, 'invalid_request', jsonb_build_object('errors', jsonb_build_array(
      jsonb_build_object('loc', jsonb_build_array('body', 'usage'),
                         'msg', 'this feature is priced by tokens: usage (or raw_usage) is required'))));
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
    IF v_res.status = 'settled' OR v_res.usage_id IS NOT NULL THEN
      PERFORM creditgate.fail(409, 'reservation_settled', jsonb_build_object('reservation_id', v_res.id));
    END IF;
    -- A released or expired hold no longer covers the call, but the call happened: it is
    -- charged to the balance all the same, once (the hold keeps the usage it served).
    v_settling := v_res.status = 'active';
    UPDATE creditgate.reservations SET status = 'settled', usage_id = v_usage_id,
      closed_at = coalesce(closed_at, now())
     WHERE id = v_res.id;
  END IF;

  -- Usage reported late (or backfilled) is dated when it happened; it is charged now.
  INSERT INTO creditgate.usage_events (id, account_id, user_id, session_id, feature_id, agent_id,
    provider, model, price_id, prices, input_tokens, output_tokens, cached_input_tokens,
    reasoning_tokens, cache_write_tokens, quantity, key, cost, cost_pico_usd, reservation_id, metadata,
    created_at)
  SELECT v_usage_id, v_account_id, request ->> 'user_id', request ->> 'session_id', v_feature.id,
    request ->> 'agent', coalesce(request ->> 'provider', v_price.provider), request ->> 'model', v_price.id,
    CASE WHEN v_price.id IS NOT NULL THEN jsonb_build_object(
      'input_per_mtok', v_price.input_per_mtok, 'output_per_mtok', v_price.output_per_mtok,
      'cached_input_per_mtok', v_price.cached_input_per_mtok, 'reasoning_per_mtok', v_price.reasoning_per_mtok,
      'cache_write_per_mtok', v_price.cache_write_per_mtok,
      'credits_per_usd', s.credits_per_usd, 'markup_bps', s.markup_bps) END,
    v_in, v_out, v_cached, v_reasoning, v_cache_write,
    CASE WHEN v_feature.pricing_mode = 'per_unit' THEN v_quantity ELSE 0 END,
    v_feature.balance_key, v_cost, v_pico, v_res.id, request -> 'metadata',
    least(coalesce((request ->> 'occurred_at')::timestamptz, now()), now())
  FROM creditgate.settings s;

  -- Settling pays the actual cost from the hold in one movement of the balance; what the
  -- hold kept beyond the cost is freed as an ended hold's is. The debt the call added is
  -- how much the debt grew: the freed hold may first pay debt that was there before.
  IF v_settling THEN
    SELECT debt INTO v_debt_before FROM creditgate.balances
    WHERE account_id = v_account_id AND key = v_feature.balance_key;
  END IF;
  v_debt := creditgate.consume(v_account_id, v_feature.balance_key, v_cost, v_usage_id,
                               CASE WHEN v_settling THEN least(v_cost, v_res.amount) ELSE 0 END,
                               CASE WHEN v_settling THEN v_res.created_at END);
  IF v_settling THEN
    PERFORM creditgate.free_hold(v_account_id, v_feature.balance_key, v_res.amount - v_cost);
    SELECT greatest(debt - v_debt_before, 0) INTO v_debt FROM creditgate.balances
    WHERE account_id = v_account_id AND key = v_feature.balance_key;
  END IF;
  IF v_debt > 0 THEN
    UPDATE creditgate.usage_events SET debt_added = v_debt WHERE id = v_usage_id;
  END IF;
  IF v_res.id IS NULL THEN
    -- (count_request, as usage that happened: past the quota it is debt on that key, and
    -- the answer says so.)
    IF v_feature.requests_key IS NOT NULL AND v_plan.allowances ? v_feature.requests_key THEN
      v_quota_debt := creditgate.consume(v_account_id, v_feature.requests_key, 1000000, v_usage_id);
    END IF;
  ELSE
    v_quota_debt := creditgate.settle_request(v_res, v_plan, v_usage_id);
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
      'id', v_res.id, 'status', 'settled',
      'released', CASE WHEN v_settling THEN greatest(v_res.amount - v_cost, 0) ELSE 0 END) END,
    'overdraft', v_debt > 0 OR v_quota_debt > 0));
END
$$;

SELECT creditgate.secure();
