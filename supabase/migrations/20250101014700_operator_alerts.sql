-- Generated from sql/107_operator_alerts.sql by `creditgate supabase-export`. Edit sql/107_operator_alerts.sql and
-- run the command again; never edit this copy.
-- Alerts for the operator, through the same signed webhook as the users' notices: a day's
-- provider cost reaching `alert_daily_cost_usd`, and an IP opening more guest sessions in a
-- day than `abuse_sessions_per_ip`. Each is recorded once per day (and IP) by maintenance,
-- as a notice of the account "operator" (no account has that id: an account id may not be
-- "operator", see below), and posted with `type: "alert.<kind>"` and what triggered it.

ALTER TABLE creditgate.notices ADD COLUMN detail jsonb;
ALTER TABLE creditgate.accounts ADD CONSTRAINT accounts_id_not_operator CHECK (id <> 'operator');

CREATE FUNCTION public.creditgate_record_operator_alerts(request jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  v_today timestamptz := date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
  s creditgate.settings;
  v_cost bigint;
  v_alerts integer := 0;
  v_count integer;
BEGIN
  SELECT * INTO s FROM creditgate.settings;
  IF s.alert_daily_cost_pico_usd > 0 AND NOT EXISTS (
       SELECT 1 FROM creditgate.notices
       WHERE account_id = 'operator' AND key = 'cost' AND kind = 'daily_cost' AND period_start = v_today) THEN
    SELECT coalesce(sum(cost_pico_usd), 0) INTO v_cost FROM creditgate.usage_events WHERE created_at >= v_today;
    IF v_cost >= s.alert_daily_cost_pico_usd THEN
      INSERT INTO creditgate.notices (account_id, key, kind, period_start, detail)
      VALUES ('operator', 'cost', 'daily_cost', v_today,
              jsonb_build_object('cost_usd', trim_scale(v_cost::numeric / 1e12)::text,
                                 'threshold_usd', trim_scale(s.alert_daily_cost_pico_usd::numeric / 1e12)::text))
      ON CONFLICT DO NOTHING;
      GET DIAGNOSTICS v_count = ROW_COUNT;
      v_alerts := v_alerts + v_count;
    END IF;
  END IF;
  IF s.abuse_sessions_per_ip > 0 THEN
    INSERT INTO creditgate.notices (account_id, key, kind, period_start, detail)
    SELECT 'operator', host(d.ip), 'guest_abuse', v_today,
           jsonb_build_object('ip', host(d.ip), 'sessions', d.sessions, 'exchanges', d.exchanges,
                              'threshold', s.abuse_sessions_per_ip)
    FROM creditgate.guest_ip_days d
    WHERE d.day = (now() AT TIME ZONE 'UTC')::date AND d.sessions > s.abuse_sessions_per_ip
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    v_alerts := v_alerts + v_count;
  END IF;
  RETURN jsonb_build_object('alerts', v_alerts);
END
$$;

-- The lease of 97_notice_delivery.sql: an operator alert is sent as what it is (no account,
-- its detail; stale after a day), and a user's notice shows the account's allowance (its
-- overrides included, 105_allowance_overrides.sql).
CREATE OR REPLACE FUNCTION public.creditgate_lease_notices(request jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  v_limit integer := least(greatest(coalesce((request ->> 'limit')::integer, 100), 1), 1000);
  v_notices jsonb;
BEGIN
  -- Stale: a webhook configured late, or one that was down for a week, must not send
  -- last month's "90 % used" to a user whose allowance has since been renewed.
  UPDATE creditgate.notices n SET gave_up_at = now()
   WHERE n.delivered_at IS NULL AND n.gave_up_at IS NULL AND n.next_attempt_at <= now()
     AND (n.created_at < now() - interval '7 days'
          OR (n.account_id = 'operator' AND n.created_at < now() - interval '1 day')
          OR (n.account_id <> 'operator' AND NOT EXISTS (SELECT 1 FROM creditgate.accounts a
                                                         WHERE a.id = n.account_id AND a.period_start = n.period_start)));
  WITH due AS (
    SELECT id FROM creditgate.notices
    WHERE delivered_at IS NULL AND gave_up_at IS NULL AND next_attempt_at <= now()
    ORDER BY next_attempt_at, id LIMIT v_limit
    FOR UPDATE SKIP LOCKED
  ), leased AS (
    UPDATE creditgate.notices n
       SET attempts = n.attempts + 1,
           next_attempt_at = now() + least(interval '5 minutes' * power(2, n.attempts), interval '1 day')
      FROM due WHERE n.id = due.id
    RETURNING n.*
  )
  SELECT jsonb_agg(CASE WHEN l.account_id = 'operator' THEN jsonb_build_object(
           'id', l.id, 'type', 'alert.' || l.kind, 'kind', l.kind, 'account_id', NULL, 'key', l.key,
           'day', l.period_start, 'created_at', l.created_at, 'attempt', l.attempts, 'detail', l.detail)
         ELSE jsonb_build_object(
           'id', l.id, 'type', 'notice.' || l.kind, 'kind', l.kind, 'account_id', l.account_id,
           'email', a.email, 'plan', a.plan_id, 'key', l.key, 'period_start', l.period_start,
           'resets_at', a.period_end, 'created_at', l.created_at, 'attempt', l.attempts,
           'balance', jsonb_build_object(
             'available', coalesce(b.available, 0), 'debt', coalesce(b.debt, 0),
             'allowance', coalesce((creditgate.allowances_of(a) ->> l.key)::bigint, 0),
             'used_this_period', coalesce(b.used_this_period, 0))) END
         ORDER BY l.id)
  INTO v_notices
  FROM leased l
  LEFT JOIN creditgate.accounts a ON a.id = l.account_id
  LEFT JOIN creditgate.balances b ON b.account_id = l.account_id AND b.key = l.key;
  RETURN jsonb_build_object('notices', coalesce(v_notices, '[]'));
END
$$;

SELECT creditgate.secure();

INSERT INTO creditgate.schema_migrations (version) VALUES ('107_operator_alerts') ON CONFLICT DO NOTHING;
