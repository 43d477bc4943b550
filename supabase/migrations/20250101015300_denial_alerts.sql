-- Generated from sql/113_denial_alerts.sql by `creditgate supabase-export`. Edit sql/113_denial_alerts.sql and
-- run the command again; never edit this copy.
-- Denials the operator is told about. A denial is raised inside its RPC, so its
-- transaction rolls back and leaves no trace; the gate and usage functions report it
-- afterwards through creditgate_record_denial (best effort, one more call, only when they
-- deny). Maintenance then records two more operator alerts (107_operator_alerts.sql):
--
-- * `unpriced_model`, once a day per model refused as unknown_model: always on, since a
--   model without a price refuses paying users until the catalog has it;
-- * `denials`, once a day when that day's insufficient_credits + debt_outstanding +
--   quota_exhausted reach `alert_daily_denials` (catalog setting; 0: never).

CREATE TABLE creditgate.denial_days (
  day     date NOT NULL,
  code    text NOT NULL
          CHECK (code IN ('insufficient_credits', 'debt_outstanding', 'quota_exhausted', 'unknown_model')),
  -- The model for unknown_model, '' for the rest (and for models past the day's cap).
  detail  text NOT NULL DEFAULT '' CHECK (length(detail) <= 200),
  denials integer NOT NULL DEFAULT 0 CHECK (denials >= 0),
  PRIMARY KEY (day, code, detail)
);
GRANT SELECT, INSERT, UPDATE, DELETE ON creditgate.denial_days TO service_role;

ALTER TABLE creditgate.settings
  ADD COLUMN alert_daily_denials integer NOT NULL DEFAULT 0 CHECK (alert_daily_denials >= 0);

CREATE FUNCTION public.creditgate_record_denial(request jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  v_day date := (now() AT TIME ZONE 'UTC')::date;
  v_code text := request ->> 'code';
  v_detail text := '';
  v_denials integer;
BEGIN
  IF v_code IS NULL
     OR v_code NOT IN ('insufficient_credits', 'debt_outstanding', 'quota_exhausted', 'unknown_model') THEN
    PERFORM creditgate.fail(422, 'invalid_request', jsonb_build_object('errors', jsonb_build_array(
      jsonb_build_object('loc', jsonb_build_array('body', 'code'),
                         'msg', 'code must be a counted denial: insufficient_credits, '
                                || 'debt_outstanding, quota_exhausted or unknown_model'))));
  END IF;
  IF v_code = 'unknown_model' THEN
    v_detail := left(coalesce(request ->> 'model', ''), 200);
    -- Any signed-in user may name any model: past 100 models a day the rest are counted
    -- together, so neither this table nor the day's alerts grow without bound.
    IF v_detail <> ''
       AND NOT EXISTS (SELECT 1 FROM creditgate.denial_days
                       WHERE day = v_day AND code = v_code AND detail = v_detail)
       AND (SELECT count(*) FROM creditgate.denial_days WHERE day = v_day AND code = v_code) >= 100 THEN
      v_detail := '';
    END IF;
  END IF;
  INSERT INTO creditgate.denial_days AS d (day, code, detail, denials)
  VALUES (v_day, v_code, v_detail, 1)
  ON CONFLICT (day, code, detail) DO UPDATE SET denials = d.denials + 1
  RETURNING denials INTO v_denials;
  RETURN jsonb_build_object('day', v_day, 'code', v_code, 'detail', v_detail, 'denials', v_denials);
END
$$;

-- The settings of 110_notice_thresholds.sql, with alert_daily_denials.
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
  RETURN (SELECT jsonb_build_object('periods', period_mode, 'alert_daily_cost_pico_usd', alert_daily_cost_pico_usd,
                                    'allowance_notices', to_jsonb(allowance_notice_percents),
                                    'alert_daily_denials', alert_daily_denials)
          FROM creditgate.settings);
END
$$;

-- The alerts of 107_operator_alerts.sql, with unpriced models and denials.
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

INSERT INTO creditgate.schema_migrations (version) VALUES ('113_denial_alerts') ON CONFLICT DO NOTHING;
