-- A limit per member of an account. An org account's plan limit (`rate_limit_per_minute`) is
-- shared by all its members, so one busy member could use the whole minute; a plan may
-- also set `rate_limit_per_member` (requests a minute, per member; 0, the default, none),
-- counted for each call to an org account that names its user (a member's JWT, or `user_id`
-- from a service key) in a window of its own, `<account>/<user>` ('/' is never in an
-- account id). A personal account has one member: the account's limit is theirs.

ALTER TABLE creditgate.plans ADD COLUMN member_rate_limit_per_minute integer NOT NULL DEFAULT 0
  CHECK (member_rate_limit_per_minute >= 0);

-- One more request in this minute's window of `p_window`; refused past `p_limit` (0: no limit).
CREATE FUNCTION creditgate.count_rate(p_window text, p_limit integer, p_scope text)
RETURNS void LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v_count integer;
BEGIN
  IF p_limit <= 0 THEN
    RETURN;
  END IF;
  INSERT INTO creditgate.rate_windows AS w (account_id, window_start, requests)
  VALUES (p_window, date_trunc('minute', now()), 1)
  ON CONFLICT (account_id, window_start) DO UPDATE SET requests = w.requests + 1
  RETURNING requests INTO v_count;
  IF v_count > p_limit THEN
    PERFORM creditgate.fail(429, 'rate_limited', jsonb_build_object('allowed', false, 'limit', p_limit,
      'scope', p_scope,
      'retry_after', greatest(1, ceil(60 - extract(epoch FROM now() - date_trunc('minute', now()))))::bigint));
  END IF;
END
$$;

-- The gate of 108_request_holds.sql, counting the account's and the member's windows.
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
  PERFORM creditgate.count_rate(v_account_id, v_plan.rate_limit_per_minute, 'account');
  IF request ->> 'user_id' IS NOT NULL AND v_account.owner_kind = 'org' THEN
    PERFORM creditgate.count_rate(v_account_id || '/' || (request ->> 'user_id'),
                                  v_plan.member_rate_limit_per_minute, 'member');
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

-- The settings of 115_pack_keys.sql, with the plans' member limits.
CREATE OR REPLACE FUNCTION public.creditgate_apply_settings(request jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
BEGIN
  UPDATE creditgate.settings SET
    period_mode = coalesce(request ->> 'periods', 'signup'),
    alert_daily_cost_pico_usd = coalesce((request ->> 'alert_daily_cost_pico_usd')::bigint, 0),
    allowance_notice_percents = coalesce(
      (SELECT array_agg(DISTINCT p::integer ORDER BY p::integer)
       FROM jsonb_array_elements_text(request -> 'allowance_notices') p),
      CASE WHEN request ? 'allowance_notices' THEN '{}' ELSE '{75,90,100}' END::integer[]),
    alert_daily_denials = coalesce((request ->> 'alert_daily_denials')::integer, 0);
  -- Only when given: the tests and tools that set one setting must not reset the packs.
  IF request ? 'pack_keys' THEN
    IF jsonb_typeof(request -> 'pack_keys') <> 'object' OR EXISTS (
         SELECT 1 FROM jsonb_each(request -> 'pack_keys') e
         WHERE jsonb_typeof(e.value) <> 'string' OR NOT creditgate.known_key(e.value #>> '{}')) THEN
      PERFORM creditgate.fail(422, 'invalid_request', jsonb_build_object('errors', jsonb_build_array(
        jsonb_build_object('loc', jsonb_build_array('body', 'pack_keys'),
                           'msg', 'pack_keys maps pack ids to balance keys a plan or feature meters'))));
    END IF;
    -- Only the packs listed: one the catalog retired keeps the key it was sold on, since a
    -- checkout of it may still complete.
    UPDATE creditgate.packs p SET key = request -> 'pack_keys' ->> p.id
     WHERE request -> 'pack_keys' ? p.id AND p.key IS DISTINCT FROM request -> 'pack_keys' ->> p.id;
  END IF;
  IF request ? 'member_rate_limits' THEN
    IF jsonb_typeof(request -> 'member_rate_limits') <> 'object' OR EXISTS (
         SELECT 1 FROM jsonb_each(request -> 'member_rate_limits') e
         WHERE jsonb_typeof(e.value) <> 'number' OR (e.value #>> '{}') !~ '^[0-9]{1,9}$') THEN
      PERFORM creditgate.fail(422, 'invalid_request', jsonb_build_object('errors', jsonb_build_array(
        jsonb_build_object('loc', jsonb_build_array('body', 'member_rate_limits'),
                           'msg', 'member_rate_limits maps plan ids to requests a minute (0: none)'))));
    END IF;
    UPDATE creditgate.plans p SET member_rate_limit_per_minute = (request -> 'member_rate_limits' ->> p.id)::integer
     WHERE request -> 'member_rate_limits' ? p.id
       AND p.member_rate_limit_per_minute IS DISTINCT FROM (request -> 'member_rate_limits' ->> p.id)::integer;
  END IF;
  RETURN (SELECT jsonb_build_object('periods', period_mode, 'alert_daily_cost_pico_usd', alert_daily_cost_pico_usd,
                                    'allowance_notices', to_jsonb(allowance_notice_percents),
                                    'alert_daily_denials', alert_daily_denials)
          FROM creditgate.settings);
END
$$;

-- The offer of 30_catalog.sql: a plan says its limit per member.
CREATE OR REPLACE FUNCTION public.creditgate_catalog()
RETURNS jsonb LANGUAGE sql STABLE SECURITY DEFINER SET search_path = '' AS $$
  SELECT jsonb_build_object(
    'currency', (SELECT currency FROM creditgate.settings),
    'plans', (SELECT coalesce(jsonb_agg(jsonb_build_object(
        'id', id, 'name', name, 'price_minor', price_minor, 'currency', currency,
        'interval', billing_interval, 'allowances', allowances, 'features', to_jsonb(features),
        'agents', to_jsonb(agents), 'rate_limit_per_minute', rate_limit_per_minute,
        'rate_limit_per_member', member_rate_limit_per_minute,
        'stripe_price_id', stripe_price_id) ORDER BY display_order, price_minor), '[]')
      FROM creditgate.plans WHERE active),
    'packs', creditgate.packs_for_sale(),
    'features', (SELECT coalesce(jsonb_agg(jsonb_build_object(
        'id', id, 'name', name, 'kind', kind, 'balance_key', balance_key,
        'pricing_mode', pricing_mode, 'credits_per_unit', credits_per_unit,
        'requests_key', requests_key) ORDER BY id), '[]')
      FROM creditgate.features WHERE active),
    'agents', (SELECT coalesce(jsonb_agg(jsonb_build_object(
        'id', id, 'name', name, 'description', description) ORDER BY display_order, id), '[]')
      FROM creditgate.agents WHERE active));
$$;

SELECT creditgate.secure();
