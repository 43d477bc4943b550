-- Generated from sql/122_unapplied_stripe_alerts.sql by `creditgate supabase-export`. Edit sql/122_unapplied_stripe_alerts.sql and
-- run the command again; never edit this copy.
-- An operator alert for Stripe events creditgate could not apply. The webhook stores every
-- verified event and acknowledges it (Stripe would otherwise retry it for days), so a
-- payment that matched no account, pack, plan or price was only logged: a customer paid and
-- nothing was credited, and nobody was told. Now each such event is an operator alert
-- (`alert.stripe_unapplied`, with the event, its outcome and amount), posted through the
-- notices webhook like the others. The alerts of 113_denial_alerts.sql are unchanged.

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
  -- plan or price): money Stripe may have taken that credited nobody. One alert per event,
  -- for events of the last two days (a run misses none, however rarely it runs daily).
  INSERT INTO creditgate.notices (account_id, key, kind, period_start, detail)
  SELECT 'operator', e.id, 'stripe_unapplied',
         date_trunc('day', e.received_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
         jsonb_build_object('event_id', e.id, 'type', e.type, 'outcome', e.outcome, 'object_id', e.object_id,
                            'account_id', e.account_id, 'livemode', e.livemode,
                            'amount_minor', coalesce(e.payload #> '{data,object,amount_total}',
                                                     e.payload #> '{data,object,amount_paid}'),
                            'currency', e.payload #> '{data,object,currency}')
  FROM creditgate.stripe_events e
  WHERE NOT e.handled AND e.received_at >= v_today - interval '1 day'
    AND e.outcome IN ('unknown_account', 'unknown_pack', 'unknown_plan', 'unknown_price')
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

SELECT creditgate.secure();

INSERT INTO creditgate.schema_migrations (version) VALUES ('122_unapplied_stripe_alerts') ON CONFLICT DO NOTHING;
