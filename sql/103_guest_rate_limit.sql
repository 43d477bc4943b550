-- The anonymous plan's rate_limit_per_minute was never applied: the guest path left the
-- gate before the rate check. It now counts per guest session, in the same rate windows
-- (keyed "guest:<session>", as guests' idempotency keys are), swept by maintenance alike.

CREATE OR REPLACE FUNCTION creditgate.guest_gate(request jsonb, p_feature creditgate.features)
RETURNS jsonb LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  s creditgate.settings;
  v_plan creditgate.plans;
  v_session text := request ->> 'session_id';
  v_ip inet := (request ->> 'client_ip')::inet;
  v_mode text := request ->> 'mode';
  v_agent text := request ->> 'agent';
  v_count integer;
  v_rate integer;
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

  -- The anonymous plan's rate limit, per guest session, as a plan's is per account; after
  -- the idempotency claim, so a replay returns its first answer instead of counting.
  IF v_plan.rate_limit_per_minute > 0 THEN
    INSERT INTO creditgate.rate_windows AS w (account_id, window_start, requests)
    VALUES ('guest:' || v_session, date_trunc('minute', now()), 1)
    ON CONFLICT (account_id, window_start) DO UPDATE SET requests = w.requests + 1
    RETURNING requests INTO v_rate;
    IF v_rate > v_plan.rate_limit_per_minute THEN
      PERFORM creditgate.fail(429, 'rate_limited', jsonb_build_object('allowed', false,
        'limit', v_plan.rate_limit_per_minute,
        'retry_after', greatest(1, ceil(60 - extract(epoch FROM now() - date_trunc('minute', now()))))::bigint));
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

SELECT creditgate.secure();
