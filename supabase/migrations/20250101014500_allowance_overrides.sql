-- Generated from sql/105_allowance_overrides.sql by `creditgate supabase-export`. Edit sql/105_allowance_overrides.sql and
-- run the command again; never edit this copy.
-- Custom limits per customer (an enterprise deal, a partner): an account's allowances may
-- differ from its plan's, key by key. The plan still decides features, agents, rate and
-- which keys are metered per call; the overrides decide how much each period grants.

ALTER TABLE creditgate.accounts ADD COLUMN allowance_overrides jsonb
  CHECK (allowance_overrides IS NULL OR jsonb_typeof(allowance_overrides) = 'object');

-- Overrides belong to the plan they were set on (a deal made on enterprise must not follow
-- a downgrade, nor hold an upgrade back): any plan change clears them, by any path.
-- They are recorded in the account's history like its plan and status.
CREATE FUNCTION creditgate.plan_changed_clears_overrides()
RETURNS trigger LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
  IF OLD.plan_id IS DISTINCT FROM NEW.plan_id THEN
    NEW.allowance_overrides := NULL;
  END IF;
  RETURN NEW;
END
$$;
CREATE TRIGGER plan_changed_clears_overrides BEFORE UPDATE OF plan_id ON creditgate.accounts
  FOR EACH ROW EXECUTE FUNCTION creditgate.plan_changed_clears_overrides();

-- As the API shows amounts: {"credits": "50"}, decimal strings of the key's unit.
CREATE FUNCTION creditgate.overrides_text(p_overrides jsonb)
RETURNS text LANGUAGE sql IMMUTABLE SET search_path = '' AS $$
  SELECT (SELECT jsonb_object_agg(key, trim_scale(value::numeric / 1000000)::text)
          FROM jsonb_each_text(p_overrides))::text;
$$;

CREATE FUNCTION creditgate.record_overrides_change()
RETURNS trigger LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
  INSERT INTO creditgate.account_changes (account_id, field, old_value, new_value, reason)
  VALUES (NEW.id, 'allowances', creditgate.overrides_text(OLD.allowance_overrides),
          creditgate.overrides_text(NEW.allowance_overrides), nullif(current_setting('creditgate.reason', true), ''));
  RETURN NULL;
END
$$;
-- Any update (not only one naming the column): a plan change clears them in a trigger.
CREATE TRIGGER overrides_changed AFTER UPDATE ON creditgate.accounts
  FOR EACH ROW WHEN (OLD.allowance_overrides IS DISTINCT FROM NEW.allowance_overrides)
  EXECUTE FUNCTION creditgate.record_overrides_change();

-- The allowances an account's period grants: its plan's, with its overrides on top.
CREATE FUNCTION creditgate.allowances_of(p_account creditgate.accounts)
RETURNS jsonb LANGUAGE sql STABLE SET search_path = '' AS $$
  SELECT coalesce(p.allowances, '{}') || coalesce(p_account.allowance_overrides, '{}')
  FROM creditgate.plans p WHERE p.id = p_account.plan_id;
$$;

-- The key of a period's allowance grant of one balance key: the plan and the period in it,
-- so granting it twice is impossible (20_ledger.sql wrote it out).
CREATE FUNCTION creditgate.allowance_ref(p_account creditgate.accounts, p_key text)
RETURNS text LANGUAGE sql STABLE SET search_path = '' AS $$
  SELECT 'allowance:' || p_account.plan_id || ':'
         || to_char(p_account.period_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') || ':' || p_key;
$$;

-- The period grant of 20_ledger.sql, of the account's allowances (above).
CREATE OR REPLACE FUNCTION creditgate.grant_allowances(p_account creditgate.accounts)
RETURNS integer LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  a record;
  v_result jsonb;
  v_count integer := 0;
BEGIN
  FOR a IN
    SELECT e.key, e.value::bigint AS amount
    FROM jsonb_each_text(creditgate.allowances_of(p_account)) e
    WHERE e.value::bigint > 0
  LOOP
    v_result := creditgate.add_grant(
      p_account.id, a.key, 'allowance', a.amount,
      creditgate.allowance_ref(p_account, a.key),
      p_account.period_end, NULL, p_account.plan_id, p_account.period_start);
    IF NOT (v_result ->> 'duplicate')::boolean THEN
      v_count := v_count + 1;
    END IF;
  END LOOP;
  RETURN v_count;
END
$$;

-- The balance read of 96_used_this_period.sql: allowances with the account's overrides.
CREATE OR REPLACE FUNCTION public.creditgate_balance(request jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  v_account creditgate.accounts := creditgate.current_account(request ->> 'account_id');
  v_low bigint := (SELECT low_balance FROM creditgate.settings);
  v_balances jsonb;
  v_credits bigint;
  v_burn numeric;
  v_allowances jsonb := creditgate.allowances_of(v_account);
BEGIN
  WITH keys AS (
    SELECT b.key FROM creditgate.balances b WHERE b.account_id = v_account.id
    UNION
    SELECT jsonb_object_keys(v_allowances)
  ), rows AS (
    SELECT k.key,
           coalesce(b.available, 0) AS available, coalesce(b.reserved, 0) AS reserved,
           coalesce(b.debt, 0) AS debt,
           coalesce((v_allowances ->> k.key)::bigint, 0) AS allowance,
           coalesce(b.used_this_period, 0) AS used
    FROM keys k
    LEFT JOIN creditgate.balances b ON b.account_id = v_account.id AND b.key = k.key
  )
  SELECT jsonb_agg(jsonb_build_object(
           'key', key, 'available', available, 'reserved', reserved, 'debt', debt,
           'allowance', allowance, 'used_this_period', used,
           'period_start', v_account.period_start, 'resets_at', v_account.period_end,
           'percent_used', CASE WHEN allowance > 0 THEN round(used * 100.0 / allowance, 1) END,
           'status', CASE
              WHEN available = 0 OR debt > 0 OR (allowance > 0 AND used >= allowance) THEN 'exhausted'
              WHEN allowance > 0 AND used * 100 >= allowance * 90 THEN 'critical'
              WHEN allowance > 0 AND used * 100 >= allowance * 75 THEN 'warning'
              ELSE 'ok' END) ORDER BY key <> 'credits', key)
  INTO v_balances FROM rows;

  -- Runway at this period's average daily spend, averaged over at least a week so that a
  -- burst on the period's first day does not read as the daily rate.
  SELECT available, used_this_period / greatest(extract(epoch FROM now() - v_account.period_start) / 86400, 7)
  INTO v_credits, v_burn FROM creditgate.balances WHERE account_id = v_account.id AND key = 'credits';

  RETURN jsonb_build_object(
    'account_id', v_account.id, 'owner', v_account.owner_kind, 'status', v_account.status,
    'plan', (SELECT jsonb_build_object('id', id, 'name', name) FROM creditgate.plans WHERE id = v_account.plan_id),
    'balances', coalesce(v_balances, '[]'),
    'allowance_overrides', v_account.allowance_overrides,
    'low_balance', coalesce(v_credits, 0) < v_low,
    'runway_days', CASE WHEN v_burn > 0 THEN round(coalesce(v_credits, 0) / v_burn, 1) END);
END
$$;

-- The notices of 96_used_this_period.sql: thresholds of the account's allowances.
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
    FROM period_usage c, unnest(ARRAY[75, 90, 100]) pct
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

-- Sets (or, with null, clears) an account's overrides. They apply from the next period;
-- a raise applies now too: the difference to what this period's allowance granted is
-- granted at once (a cut waits for the next period: nothing granted is taken back).
CREATE FUNCTION public.creditgate_set_allowances(request jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  v_account creditgate.accounts := creditgate.roll_period(creditgate.lock_account(request ->> 'account_id'));
  v_overrides jsonb := nullif(request -> 'allowances', 'null'::jsonb);
  v_bad text;
  a record;
  v_granted bigint;
  v_n integer;
  v_ref text;
BEGIN
  SELECT key INTO v_bad FROM jsonb_each(coalesce(v_overrides, '{}')) e(key, value)
  WHERE NOT creditgate.known_key(key) OR jsonb_typeof(value) <> 'number' OR (value #>> '{}')::numeric < 0
     OR (value #>> '{}')::numeric % 1 <> 0
  LIMIT 1;
  IF v_bad IS NOT NULL THEN
    PERFORM creditgate.fail(422, 'invalid_request', jsonb_build_object('errors', jsonb_build_array(
      jsonb_build_object('loc', jsonb_build_array('body', 'allowances', v_bad),
                         'msg', 'a key the catalog uses, with a whole, non-negative amount'))));
  END IF;
  PERFORM set_config('creditgate.reason', request ->> 'reason', true);
  UPDATE creditgate.accounts SET allowance_overrides = v_overrides WHERE id = v_account.id
  RETURNING * INTO v_account;
  FOR a IN SELECT e.key, e.value::bigint AS amount FROM jsonb_each_text(creditgate.allowances_of(v_account)) e
  LOOP
    SELECT coalesce(sum(amount), 0), count(*) FILTER (WHERE external_ref LIKE '%:more:%'), min(external_ref)
    INTO v_granted, v_n, v_ref
    FROM creditgate.grants
    WHERE account_id = v_account.id AND source = 'allowance' AND key = a.key
      AND plan_id = v_account.plan_id AND period_start = v_account.period_start
      AND external_ref NOT LIKE '%:back:%';
    IF a.amount > v_granted THEN
      -- The period's own key when it has no grant yet (a key only the overrides grant), so
      -- grant_allowances finds it granted; a top-up of it otherwise.
      PERFORM creditgate.add_grant(v_account.id, a.key, 'allowance', a.amount - v_granted,
        coalesce(v_ref || ':more:' || (v_n + 1), creditgate.allowance_ref(v_account, a.key)),
        v_account.period_end, NULL, v_account.plan_id, v_account.period_start);
    END IF;
  END LOOP;
  RETURN creditgate.account_summary(v_account.id)
    || jsonb_build_object('allowance_overrides', v_account.allowance_overrides,
                          'allowances', creditgate.allowances_of(v_account));
END
$$;

-- The metrics of 99_answers_and_names.sql: "over 80 %" of the account's allowances, and
-- the funnel per day (guests, new accounts, upgrades, downgrades).
CREATE OR REPLACE FUNCTION public.creditgate_metrics(request jsonb)
RETURNS jsonb LANGUAGE sql STABLE SECURITY DEFINER SET search_path = '' AS $$
  WITH span AS (
    SELECT now() - make_interval(days => least(greatest(coalesce((request ->> 'days')::integer, 30), 1), 366)) AS since
  ), usage AS (
    SELECT u.* FROM creditgate.usage_events u, span WHERE u.created_at >= span.since
  ), revenue AS (
    -- Packs through their orders (less refunds); subscriptions through their paid invoices,
    -- renewals included (a subscription's checkout order is its first invoice, not added).
    SELECT to_char(o.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, 'packs' AS source,
           amount_minor - refunded_minor AS amount
    FROM creditgate.orders o, span
    WHERE o.kind = 'pack' AND o.status IN ('paid', 'partially_refunded') AND o.updated_at >= span.since
    UNION ALL
    SELECT to_char(to_timestamp(i.created) AT TIME ZONE 'UTC', 'YYYY-MM-DD'), 'subscriptions', i.amount
    FROM (SELECT DISTINCT ON (object_id) object_id, created,
                 coalesce((payload #>> '{data,object,amount_paid}')::bigint, 0) AS amount
          FROM creditgate.stripe_events e, creditgate.settings s
          -- Invoices the webhook applied to an account, in the catalog's currency (not
          -- another product's on the same Stripe account). Subscription refunds are not
          -- taken off (pack refunds are, through their orders).
          WHERE e.type = 'invoice.paid' AND e.handled AND e.account_id IS NOT NULL
            AND lower(e.payload #>> '{data,object,currency}') = lower(s.currency)
          ORDER BY object_id, created) i, span
    WHERE to_timestamp(i.created) >= span.since
  ), funnel AS (
    -- The way in, per day: guests, new accounts, and plan changes up or down in price
    -- (the history of 102_operator_actions.sql).
    SELECT to_char(c.at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day,
           count(*) FILTER (WHERE c.old_value IS NULL) AS new_accounts,
           count(*) FILTER (WHERE c.old_value IS NOT NULL AND n.price_minor > o.price_minor) AS upgrades,
           count(*) FILTER (WHERE c.old_value IS NOT NULL AND n.price_minor < o.price_minor) AS downgrades
    FROM creditgate.account_changes c
    JOIN span ON c.at >= span.since
    LEFT JOIN creditgate.plans o ON o.id = c.old_value
    LEFT JOIN creditgate.plans n ON n.id = c.new_value
    WHERE c.field = 'plan'
    GROUP BY 1
  ), guests AS (
    SELECT to_char(d.day, 'YYYY-MM-DD') AS day, sum(d.sessions) AS sessions, sum(d.exchanges) AS exchanges
    FROM creditgate.guest_ip_days d, span WHERE d.day >= (span.since AT TIME ZONE 'UTC')::date GROUP BY 1
  )
  SELECT jsonb_build_object(
    'since', (SELECT since FROM span),
    'funnel', (SELECT coalesce(jsonb_agg(jsonb_build_object('day', day,
         'guest_sessions', coalesce(g.sessions, 0), 'guest_exchanges', coalesce(g.exchanges, 0),
         'new_accounts', coalesce(f.new_accounts, 0), 'upgrades', coalesce(f.upgrades, 0),
         'downgrades', coalesce(f.downgrades, 0)) ORDER BY day), '[]')
       FROM funnel f FULL JOIN guests g USING (day)),
    'daily', (SELECT coalesce(jsonb_agg(d ORDER BY d ->> 'day'), '[]') FROM (
       SELECT jsonb_build_object('day', day, 'requests', coalesce(requests, 0), 'input_tokens', coalesce(i, 0),
                'output_tokens', coalesce(o, 0), 'cost', coalesce(c, 0), 'cost_pico_usd', coalesce(p, 0),
                'revenue_minor', coalesce(revenue, 0)) AS d
       FROM (SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, count(*) requests,
                    sum(input_tokens) i, sum(output_tokens) o, coalesce(sum(cost) FILTER (WHERE key = 'credits'), 0) c, sum(cost_pico_usd) p
             FROM usage GROUP BY 1) u
       FULL JOIN (SELECT day, sum(amount) revenue FROM revenue GROUP BY 1) r USING (day)) x),
    'currency', (SELECT currency FROM creditgate.settings),
    'revenue_minor', (SELECT jsonb_build_object(
         'packs', coalesce(sum(amount) FILTER (WHERE source = 'packs'), 0),
         'subscriptions', coalesce(sum(amount) FILTER (WHERE source = 'subscriptions'), 0)) FROM revenue),
    'accounts_by_plan', (SELECT coalesce(jsonb_object_agg(plan_id, n), '{}')
       FROM (SELECT plan_id, count(*) n FROM creditgate.accounts GROUP BY 1) p),
    'top_accounts', (SELECT coalesce(jsonb_agg(jsonb_build_object('account_id', account_id, 'requests', n, 'cost', c,
         'cost_pico_usd', p, 'other_keys', creditgate.other_keys(k)) ORDER BY c DESC, n DESC), '[]')
       FROM (SELECT account_id, count(*) n, coalesce(sum(cost) FILTER (WHERE key = 'credits'), 0) c,
                    sum(cost_pico_usd) p,
                    array_agg(ROW(key, cost)::creditgate.key_amount) FILTER (WHERE key <> 'credits') k
             FROM usage GROUP BY 1 ORDER BY 3 DESC, 2 DESC LIMIT 20) t),
    'accounts_over_80_percent', (SELECT coalesce(jsonb_agg(jsonb_build_object('account_id', a.id, 'key', e.key,
         'used', used, 'allowance', (e.value)::bigint)), '[]')
       FROM creditgate.accounts a JOIN creditgate.plans p ON p.id = a.plan_id,
            jsonb_each_text(p.allowances || coalesce(a.allowance_overrides, '{}')) e,
       LATERAL (SELECT coalesce(max(b.used_this_period), 0) AS used FROM creditgate.balances b
                WHERE b.account_id = a.id AND b.key = e.key) x
       WHERE (e.value)::bigint > 0 AND used * 100 >= (e.value)::bigint * 80),
    'top_agents', (SELECT coalesce(jsonb_agg(jsonb_build_object('agent', agent_id, 'requests', n, 'cost', c)
         ORDER BY n DESC), '[]') FROM (SELECT agent_id, count(*) n, coalesce(sum(cost) FILTER (WHERE key = 'credits'), 0) c FROM usage
         WHERE agent_id IS NOT NULL GROUP BY 1 ORDER BY 2 DESC LIMIT 10) t),
    'top_features', (SELECT coalesce(jsonb_agg(jsonb_build_object('feature', feature_id, 'requests', n, 'cost', c,
         'other_keys', creditgate.other_keys(k)) ORDER BY n DESC), '[]')
       FROM (SELECT feature_id, count(*) n, coalesce(sum(cost) FILTER (WHERE key = 'credits'), 0) c,
                    array_agg(ROW(key, cost)::creditgate.key_amount) FILTER (WHERE key <> 'credits') k
             FROM usage GROUP BY 1 ORDER BY 2 DESC LIMIT 10) t),
    'top_models', (SELECT coalesce(jsonb_agg(jsonb_build_object('model', model, 'requests', n, 'cost_pico_usd', p)
         ORDER BY n DESC), '[]') FROM (SELECT model, count(*) n, sum(cost_pico_usd) p FROM usage
         WHERE model IS NOT NULL GROUP BY 1 ORDER BY 2 DESC LIMIT 10) t),
    'guest_abuse', (SELECT coalesce(jsonb_agg(jsonb_build_object('ip', host(ip), 'day', day,
         'sessions', sessions, 'exchanges', exchanges) ORDER BY sessions DESC), '[]')
       FROM creditgate.guest_ip_days d, span, creditgate.settings s
       WHERE d.day >= (span.since AT TIME ZONE 'UTC')::date AND d.sessions > s.abuse_sessions_per_ip));
$$;

SELECT creditgate.secure();

INSERT INTO creditgate.schema_migrations (version) VALUES ('105_allowance_overrides') ON CONFLICT DO NOTHING;
