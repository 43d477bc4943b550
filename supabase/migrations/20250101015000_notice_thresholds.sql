-- Generated from sql/110_notice_thresholds.sql by `creditgate supabase-export`. Edit sql/110_notice_thresholds.sql and
-- run the command again; never edit this copy.
-- The allowance notices' thresholds are the operator's: `allowance_notices = [80, 100]` in
-- the catalog's settings (percent of a period's allowance used; `[]` records none). They
-- were 75, 90 and 100 for everyone, which stays the default. A notice's kind names its
-- percent (`allowance_80`), once per account, key, kind and period as before.

ALTER TABLE creditgate.settings ADD COLUMN allowance_notice_percents integer[] NOT NULL DEFAULT '{75,90,100}'
  CHECK (0 < ALL (allowance_notice_percents) AND 100 >= ALL (allowance_notice_percents)
         AND array_position(allowance_notice_percents, NULL) IS NULL);

CREATE OR REPLACE FUNCTION public.creditgate_apply_settings(request jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
BEGIN
  UPDATE creditgate.settings SET
    period_mode = coalesce(request ->> 'periods', 'signup'),
    alert_daily_cost_pico_usd = coalesce((request ->> 'alert_daily_cost_pico_usd')::bigint, 0),
    allowance_notice_percents = coalesce(
      (SELECT array_agg(DISTINCT p::integer ORDER BY p::integer)
       FROM jsonb_array_elements_text(request -> 'allowance_notices') p),
      CASE WHEN request ? 'allowance_notices' THEN '{}' ELSE '{75,90,100}' END::integer[]);
  RETURN (SELECT jsonb_build_object('periods', period_mode, 'alert_daily_cost_pico_usd', alert_daily_cost_pico_usd,
                                    'allowance_notices', to_jsonb(allowance_notice_percents))
          FROM creditgate.settings);
END
$$;

-- The notices of 105_allowance_overrides.sql, at the configured percents.
CREATE OR REPLACE FUNCTION creditgate.record_notices(p_lines integer)
RETURNS jsonb LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v_state creditgate.maintenance_state;
  v_hi bigint;
  v_seen integer;
  v_young bigint;
  v_cursor bigint;
  v_passed integer;
  v_count integer;
BEGIN
  SELECT * INTO v_state FROM creditgate.maintenance_state FOR UPDATE SKIP LOCKED;
  IF NOT FOUND THEN
    RETURN jsonb_build_object('notices', 0, 'lines', 0, 'more', false);
  END IF;
  SELECT max(id), count(*), min(id) FILTER (WHERE created_at > now() - interval '1 minute')
  INTO v_hi, v_seen, v_young
  FROM (SELECT id, created_at FROM creditgate.ledger_entries
        WHERE id > v_state.notices_cursor AND kind = 'consume'
        ORDER BY id LIMIT p_lines) scanned;
  IF v_seen = 0 THEN
    UPDATE creditgate.maintenance_state SET last_run_at = now();
    RETURN jsonb_build_object('notices', 0, 'lines', 0, 'more', false);
  END IF;

  WITH touched AS (
    SELECT DISTINCT e.account_id, e.key FROM creditgate.ledger_entries e
    WHERE e.id > v_state.notices_cursor AND e.id <= v_hi AND e.kind = 'consume'
  ), period_usage AS (
    -- An account whose period is over is skipped: what it used belongs to the old period.
    SELECT t.account_id, t.key, a.period_start, coalesce(((p.allowances || coalesce(a.allowance_overrides, '{}')) ->> t.key)::bigint, 0) AS allowance,
           coalesce(b.used_this_period, 0) AS used, b.available
    FROM touched t
    JOIN creditgate.accounts a ON a.id = t.account_id AND a.period_end > now()
    JOIN creditgate.plans p ON p.id = a.plan_id
    LEFT JOIN creditgate.balances b ON b.account_id = t.account_id AND b.key = t.key
  ), crossed AS (
    SELECT c.account_id, c.key, c.period_start, 'allowance_' || pct AS kind
    FROM period_usage c, creditgate.settings s, unnest(s.allowance_notice_percents) pct
    WHERE c.allowance > 0 AND c.used * 100 >= c.allowance * pct
    UNION ALL
    SELECT c.account_id, c.key, c.period_start, 'low_balance'
    FROM period_usage c, creditgate.settings s
    WHERE c.key = 'credits' AND s.low_balance > 0 AND coalesce(c.available, 0) < s.low_balance
  )
  INSERT INTO creditgate.notices (account_id, key, kind, period_start)
  SELECT account_id, key, kind, period_start FROM crossed
  ON CONFLICT DO NOTHING;
  GET DIAGNOSTICS v_count = ROW_COUNT;

  v_cursor := CASE WHEN v_young IS NOT NULL THEN v_young - 1 ELSE v_hi END;
  UPDATE creditgate.maintenance_state SET notices_cursor = v_cursor, last_run_at = now();
  -- Progress is what the cursor passed for good; young lines looked at again do not count.
  SELECT count(*) INTO v_passed FROM creditgate.ledger_entries
  WHERE id > v_state.notices_cursor AND id <= v_cursor AND kind = 'consume';
  RETURN jsonb_build_object('notices', v_count, 'lines', v_passed,
    'more', v_seen = p_lines AND v_cursor > v_state.notices_cursor);
END
$$;

SELECT creditgate.secure();

INSERT INTO creditgate.schema_migrations (version) VALUES ('110_notice_thresholds') ON CONFLICT DO NOTHING;
