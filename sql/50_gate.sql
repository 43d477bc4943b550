-- The gate: "may this account do this?" Plan access, dispute hold, rate limit, debt and
-- balance are checked and, when asked, the estimated cost reserved or committed, all in
-- one call. The guarded UPDATE ... WHERE available >= cost is the only gate.

CREATE FUNCTION creditgate.to_uuid(p text)
RETURNS uuid LANGUAGE sql IMMUTABLE SET search_path = '' AS $$
  SELECT CASE WHEN p ~* '^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$'
              THEN p::uuid END;
$$;

-- What a call is estimated to cost, in micro-units of the feature's balance key.
CREATE FUNCTION creditgate.estimate_cost(p_feature creditgate.features, request jsonb)
RETURNS bigint LANGUAGE plpgsql STABLE SET search_path = '' AS $$
DECLARE
  e jsonb := coalesce(request -> 'estimate', '{}');
  v_in bigint := coalesce((e ->> 'input_tokens')::bigint, 0);
  v_out bigint := coalesce((e ->> 'max_output_tokens')::bigint, 0);
  v_price creditgate.model_prices;
BEGIN
  IF p_feature.kind = 'access' THEN
    RETURN 0;
  ELSIF p_feature.pricing_mode = 'model' THEN
    IF request ->> 'model' IS NOT NULL THEN
      v_price := creditgate.find_price(request ->> 'model', request ->> 'provider');
    END IF;
    IF NOT (e ? 'input_tokens' OR e ? 'max_output_tokens') THEN
      RETURN 0;
    END IF;
    IF v_price.id IS NULL THEN
      PERFORM creditgate.fail(422, 'invalid_request', jsonb_build_object('errors', jsonb_build_array(
        jsonb_build_object('loc', jsonb_build_array('body', 'model'),
                           'msg', 'a model is required to price a token estimate'))));
    END IF;
    RETURN creditgate.usd_to_credits(creditgate.model_cost_pico_usd(v_price, v_in, v_out, 0, 0, 0));
  ELSIF p_feature.pricing_mode = 'tokens' THEN
    RETURN (v_in + v_out) * 1000000;
  ELSE
    RETURN coalesce((e ->> 'quantity')::bigint, 1) * p_feature.credits_per_unit;
  END IF;
END
$$;

CREATE FUNCTION creditgate.deny_short(p_key text, p_required bigint, p_balance creditgate.balances)
RETURNS void LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
  PERFORM creditgate.fail(402,
    CASE WHEN coalesce(p_balance.debt, 0) > 0 THEN 'debt_outstanding' ELSE 'insufficient_credits' END,
    jsonb_build_object('allowed', false, 'key', p_key, 'required', p_required,
                       'available', coalesce(p_balance.available, 0), 'debt', coalesce(p_balance.debt, 0),
                       'packs', creditgate.packs_for_sale()));
END
$$;

-- Guests have no balance: they get a number of exchanges per session and per IP a day.
CREATE FUNCTION creditgate.guest_gate(request jsonb, p_feature creditgate.features)
RETURNS jsonb LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  s creditgate.settings;
  v_plan creditgate.plans;
  v_session text := request ->> 'session_id';
  v_ip inet := (request ->> 'client_ip')::inet;
  v_mode text := request ->> 'mode';
  v_agent text := request ->> 'agent';
  v_count integer;
  v_new boolean;
  v_ip_count integer;
  v_previous jsonb;
  v_response jsonb;
  v_tomorrow timestamptz := ((now() AT TIME ZONE 'UTC')::date + 1)::timestamp AT TIME ZONE 'UTC';
BEGIN
  SELECT * INTO s FROM creditgate.settings;
  SELECT * INTO v_plan FROM creditgate.plans WHERE id = 'anonymous' AND active;
  IF NOT FOUND OR NOT (p_feature.id = ANY (v_plan.features)) THEN
    PERFORM creditgate.fail(403, 'feature_not_in_plan', jsonb_build_object('allowed', false,
      'plan', 'anonymous', 'feature', p_feature.id, 'upgrade_to', creditgate.upgrade_to(p_feature.id, v_agent)));
  END IF;
  IF v_agent IS NOT NULL AND NOT (v_agent = ANY (v_plan.agents)) THEN
    PERFORM creditgate.fail(403, 'agent_not_in_plan', jsonb_build_object('allowed', false,
      'plan', 'anonymous', 'agent', v_agent, 'upgrade_to', creditgate.upgrade_to(NULL, v_agent)));
  END IF;

  IF v_mode = 'check' THEN
    SELECT exchanges INTO v_count FROM creditgate.guest_sessions WHERE session_id = v_session;
    v_count := coalesce(v_count, 0) + 1;
    SELECT exchanges INTO v_ip_count FROM creditgate.guest_ip_days
    WHERE ip = v_ip AND day = (now() AT TIME ZONE 'UTC')::date;
    v_ip_count := coalesce(v_ip_count, 0) + 1;
  ELSE
    v_previous := creditgate.claim_idempotency('guest:' || v_session, 'gate', request ->> 'idempotency_key', request);
    IF v_previous IS NOT NULL THEN
      RETURN v_previous;
    END IF;
    INSERT INTO creditgate.guest_sessions AS g (session_id, ip, exchanges, expires_at)
    VALUES (v_session, v_ip, 1, now() + make_interval(hours => s.guest_session_ttl_hours))
    ON CONFLICT (session_id) DO UPDATE SET exchanges = g.exchanges + 1
    RETURNING exchanges, (xmax = 0) INTO v_count, v_new;
    IF v_ip IS NOT NULL THEN
      INSERT INTO creditgate.guest_ip_days AS d (ip, day, exchanges, sessions)
      VALUES (v_ip, (now() AT TIME ZONE 'UTC')::date, 1, 1)
      ON CONFLICT (ip, day) DO UPDATE SET exchanges = d.exchanges + 1, sessions = d.sessions + v_new::integer
      RETURNING exchanges INTO v_ip_count;
    END IF;
  END IF;

  IF v_count > s.guest_exchanges_per_session THEN
    PERFORM creditgate.fail(429, 'guest_limit_reached', jsonb_build_object('allowed', false, 'scope', 'session',
      'limit', s.guest_exchanges_per_session, 'upgrade_to', creditgate.upgrade_to(p_feature.id, v_agent),
      'retry_after', greatest(1, ceil(extract(epoch FROM (
        SELECT expires_at - now() FROM creditgate.guest_sessions WHERE session_id = v_session)))::bigint)));
  END IF;
  IF v_ip IS NOT NULL AND v_ip_count > s.guest_exchanges_per_ip_per_day THEN
    PERFORM creditgate.fail(429, 'guest_limit_reached', jsonb_build_object('allowed', false, 'scope', 'ip',
      'limit', s.guest_exchanges_per_ip_per_day, 'upgrade_to', creditgate.upgrade_to(p_feature.id, v_agent),
      'retry_after', greatest(1, ceil(extract(epoch FROM v_tomorrow - now()))::bigint)));
  END IF;

  v_response := jsonb_build_object('allowed', true, 'account_id', NULL, 'plan', 'anonymous',
    'feature', p_feature.id, 'agent', v_agent, 'mode', v_mode, 'cost_estimate', 0, 'reservation', NULL,
    'balance', jsonb_build_object('key', 'guest_exchanges',
                                  'available', (s.guest_exchanges_per_session - v_count)::bigint * 1000000),
    'warnings', CASE WHEN v_count >= s.guest_exchanges_per_session
                     THEN '["last_guest_exchange"]'::jsonb ELSE '[]'::jsonb END);
  IF v_mode <> 'check' THEN
    PERFORM creditgate.remember_response('guest:' || v_session, 'gate', request ->> 'idempotency_key', v_response);
  END IF;
  RETURN v_response;
END
$$;

-- Takes one unit of a second counted key (one `requests` per call) when the plan meters it.
CREATE FUNCTION creditgate.count_request(p_account creditgate.accounts, p_plan creditgate.plans,
  p_key text, p_usage_id uuid, p_strict boolean)
RETURNS void LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v_balance creditgate.balances;
BEGIN
  IF p_key IS NULL OR NOT (p_plan.allowances ? p_key) THEN
    RETURN;
  END IF;
  IF NOT p_strict THEN
    PERFORM creditgate.consume(p_account.id, p_key, 1000000, p_usage_id);
    RETURN;
  END IF;
  UPDATE creditgate.balances SET available = available - 1000000
   WHERE account_id = p_account.id AND key = p_key AND available >= 1000000
  RETURNING * INTO v_balance;
  IF NOT FOUND THEN
    SELECT * INTO v_balance FROM creditgate.balances WHERE account_id = p_account.id AND key = p_key;
    PERFORM creditgate.deny_short(p_key, 1000000, v_balance);
  END IF;
  PERFORM creditgate.burn_grants(p_account.id, p_key, 1000000);
  PERFORM creditgate.journal(v_balance, 'consume', -1000000, NULL, p_usage_id);
END
$$;

CREATE FUNCTION public.creditgate_gate(request jsonb)
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
  v_previous jsonb;
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
  v_cost := creditgate.estimate_cost(v_feature, request);

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
      input_tokens, output_tokens, quantity, key, cost, metadata)
    VALUES (v_usage_id, v_account_id, request ->> 'user_id', v_feature.id, v_agent, request ->> 'provider',
      request ->> 'model', coalesce((request #>> '{estimate,input_tokens}')::bigint, 0),
      coalesce((request #>> '{estimate,max_output_tokens}')::bigint, 0),
      coalesce((request #>> '{estimate,quantity}')::bigint, 0), v_feature.balance_key, v_cost,
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
    ELSE
      -- Debt blocks too: a balance in debt has available = 0, which fails the guard.
      UPDATE creditgate.balances
         SET available = available - v_cost,
             reserved = reserved + CASE WHEN v_mode = 'reserve' THEN v_cost ELSE 0 END
       WHERE account_id = v_account_id AND key = v_feature.balance_key
         AND available >= greatest(v_cost, 1)
      RETURNING * INTO v_balance;
      IF NOT FOUND THEN
        SELECT * INTO v_balance FROM creditgate.balances
        WHERE account_id = v_account_id AND key = v_feature.balance_key;
        PERFORM creditgate.deny_short(v_feature.balance_key, v_cost, v_balance);
      END IF;
      IF v_mode = 'reserve' THEN
        INSERT INTO creditgate.reservations (account_id, key, amount, feature_id, model, expires_at)
        VALUES (v_account_id, v_feature.balance_key, v_cost, v_feature.id, request ->> 'model',
                now() + make_interval(secs => coalesce((request ->> 'ttl_seconds')::integer, v_ttl)))
        RETURNING jsonb_build_object('id', id, 'amount', amount, 'expires_at', expires_at) INTO v_reservation;
      ELSE
        PERFORM creditgate.burn_grants(v_account_id, v_feature.balance_key, v_cost);
        PERFORM creditgate.journal(v_balance, 'consume', -v_cost, NULL, v_usage_id);
      END IF;
      PERFORM creditgate.count_request(v_account, v_plan, v_feature.requests_key, v_usage_id, true);
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

CREATE FUNCTION creditgate.close_reservation(p_reservation creditgate.reservations, p_status text)
RETURNS void LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
  -- Nothing consumed, the whole hold freed.
  PERFORM creditgate.consume(p_reservation.account_id, p_reservation.key, 0, NULL, p_reservation.amount);
  UPDATE creditgate.reservations SET status = p_status, closed_at = now() WHERE id = p_reservation.id;
  PERFORM creditgate.expire_grants(p_reservation.account_id, p_reservation.key);
END
$$;

CREATE FUNCTION public.creditgate_release_reservation(request jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  v_id uuid := creditgate.to_uuid(request ->> 'reservation_id');
  v_res creditgate.reservations;
BEGIN
  SELECT * INTO v_res FROM creditgate.reservations WHERE id = v_id;
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
