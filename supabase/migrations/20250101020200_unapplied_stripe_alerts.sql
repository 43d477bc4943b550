-- Generated from sql/122_unapplied_stripe_alerts.sql by `creditgate supabase-export`. Edit sql/122_unapplied_stripe_alerts.sql and
-- run the command again; never edit this copy.
-- An operator alert for Stripe events creditgate could not apply. The webhook stores every
-- verified event and acknowledges it (Stripe would otherwise retry it for days), so a
-- payment that matched no account, pack, plan or price was only logged: a customer paid and
-- nothing was credited, and nobody was told. Now each such event is an operator alert
-- (`alert.stripe_unapplied`, with the event, its outcome and amount), posted through the
-- notices webhook like the others, and offered for a week rather than a day. The alerts of
-- 113_denial_alerts.sql are unchanged.

CREATE OR REPLACE FUNCTION public.creditgate_record_operator_alerts(request jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  v_today timestamptz := date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
  v_day date := (now() AT TIME ZONE 'UTC')::date;
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
    WHERE d.day = v_day AND d.sessions > s.abuse_sessions_per_ip
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    v_alerts := v_alerts + v_count;
  END IF;

  -- Denials look at yesterday too, each under its own day: those after the day's last
  -- run would otherwise never be told.
  INSERT INTO creditgate.notices (account_id, key, kind, period_start, detail)
  SELECT 'operator', d.detail, 'unpriced_model', d.day::timestamp AT TIME ZONE 'UTC',
         jsonb_build_object('model', d.detail, 'refusals', d.denials)
  FROM creditgate.denial_days d
  WHERE d.day >= v_day - 1 AND d.code = 'unknown_model' AND d.detail <> ''
  ON CONFLICT DO NOTHING;
  GET DIAGNOSTICS v_count = ROW_COUNT;
  v_alerts := v_alerts + v_count;
  IF s.alert_daily_denials > 0 THEN
    INSERT INTO creditgate.notices (account_id, key, kind, period_start, detail)
    SELECT 'operator', 'denials', 'denials', t.day::timestamp AT TIME ZONE 'UTC',
           jsonb_build_object('denials', t.total, 'threshold', s.alert_daily_denials,
                              'insufficient_credits', t.insufficient_credits,
                              'debt_outstanding', t.debt_outstanding, 'quota_exhausted', t.quota_exhausted)
    FROM (SELECT d.day, sum(d.denials) AS total,
                 coalesce(sum(d.denials) FILTER (WHERE d.code = 'insufficient_credits'), 0) AS insufficient_credits,
                 coalesce(sum(d.denials) FILTER (WHERE d.code = 'debt_outstanding'), 0) AS debt_outstanding,
                 coalesce(sum(d.denials) FILTER (WHERE d.code = 'quota_exhausted'), 0) AS quota_exhausted
          FROM creditgate.denial_days d
          WHERE d.day >= v_day - 1 AND d.code <> 'unknown_model'
          GROUP BY d.day) t
    WHERE t.total >= s.alert_daily_denials
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    v_alerts := v_alerts + v_count;
  END IF;

  -- A Stripe event stored but not applied because nothing matched it (no account, pack,
  -- plan or price), or an invoice paid for a subscription the account no longer has: money
  -- Stripe may have taken that credited nobody. One alert per event, for the events of the
  -- last two weeks (maintenance that stopped for days still tells them).
  INSERT INTO creditgate.notices (account_id, key, kind, period_start, detail)
  SELECT 'operator', e.id, 'stripe_unapplied',
         date_trunc('day', e.received_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
         jsonb_build_object('event_id', e.id, 'type', e.type, 'outcome', e.outcome, 'object_id', e.object_id,
                            'account_id', e.account_id, 'livemode', e.livemode,
                            'amount_minor', coalesce(e.payload #> '{data,object,amount_total}',
                                                     e.payload #> '{data,object,amount_paid}',
                                                     e.payload #> '{data,object,amount}'),
                            'currency', e.payload #> '{data,object,currency}')
  FROM creditgate.stripe_events e
  WHERE NOT e.handled AND e.received_at >= v_today - interval '14 days'
    AND (e.outcome IN ('unknown_account', 'unknown_pack', 'unknown_plan', 'unknown_price')
         OR (e.type = 'invoice.paid' AND e.outcome IN ('other_subscription', 'subscription_ended')))
  ON CONFLICT DO NOTHING;
  GET DIAGNOSTICS v_count = ROW_COUNT;
  v_alerts := v_alerts + v_count;

  -- Pruned here rather than in creditgate_run_maintenance, which would have to be restated
  -- whole; kept as long as the per-IP guest days (90 days), a bounded batch per run.
  WITH old AS (
    SELECT day, code, detail FROM creditgate.denial_days WHERE day < v_day - 90
    LIMIT 10000 FOR UPDATE SKIP LOCKED
  )
  DELETE FROM creditgate.denial_days d USING old
  WHERE d.day = old.day AND d.code = old.code AND d.detail = old.detail;
  RETURN jsonb_build_object('alerts', v_alerts);
END
$$;

-- The lease of 107_operator_alerts.sql: operator alerts go stale after a day, except this
-- one, which is about money: it keeps the week a user's notice has.
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
          OR (n.account_id = 'operator' AND n.kind <> 'stripe_unapplied' AND n.created_at < now() - interval '1 day')
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

INSERT INTO creditgate.schema_migrations (version) VALUES ('122_unapplied_stripe_alerts') ON CONFLICT DO NOTHING;
