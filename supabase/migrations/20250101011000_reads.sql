-- Generated from sql/70_reads.sql by `creditgate supabase-export`. Edit sql/70_reads.sql and
-- run the command again; never edit this copy.
-- What callers read: balances with their period, the journal, usage summaries, orders,
-- entitlements, the reconciliation of every invariant, and operator metrics.

-- A read that finds the period over rolls it first, so no one is shown a stale allowance.
CREATE FUNCTION creditgate.current_account(p_account_id text)
RETURNS creditgate.accounts LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v creditgate.accounts;
BEGIN
  SELECT * INTO v FROM creditgate.accounts WHERE id = p_account_id;
  IF NOT FOUND THEN
    PERFORM creditgate.fail(404, 'account_not_found', jsonb_build_object('account_id', p_account_id));
  END IF;
  IF v.period_end <= now() AND v.billing_source = 'local' THEN
    v := creditgate.roll_period(creditgate.lock_account(p_account_id));
  END IF;
  RETURN v;
END
$$;

CREATE FUNCTION public.creditgate_balance(request jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  v_account creditgate.accounts := creditgate.current_account(request ->> 'account_id');
  v_low bigint := (SELECT low_balance FROM creditgate.settings);
  v_balances jsonb;
  v_credits bigint;
  v_burn numeric;
BEGIN
  WITH keys AS (
    SELECT b.key FROM creditgate.balances b WHERE b.account_id = v_account.id
    UNION
    SELECT k FROM creditgate.plans p, jsonb_object_keys(p.allowances) k WHERE p.id = v_account.plan_id
  ), rows AS (
    SELECT k.key,
           coalesce(b.available, 0) AS available, coalesce(b.reserved, 0) AS reserved,
           coalesce(b.debt, 0) AS debt,
           coalesce((p.allowances ->> k.key)::bigint, 0) AS allowance,
           coalesce((SELECT -sum(e.amount) FROM creditgate.ledger_entries e
                     WHERE e.account_id = v_account.id AND e.key = k.key AND e.kind = 'consume'
                       AND e.created_at >= v_account.period_start), 0)::bigint AS used
    FROM keys k
    JOIN creditgate.plans p ON p.id = v_account.plan_id
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

  SELECT available INTO v_credits FROM creditgate.balances WHERE account_id = v_account.id AND key = 'credits';
  SELECT -sum(amount) / 7.0 INTO v_burn FROM creditgate.ledger_entries
  WHERE account_id = v_account.id AND key = 'credits' AND kind = 'consume' AND created_at >= now() - interval '7 days';

  RETURN jsonb_build_object(
    'account_id', v_account.id, 'owner', v_account.owner_kind, 'status', v_account.status,
    'plan', (SELECT jsonb_build_object('id', id, 'name', name) FROM creditgate.plans WHERE id = v_account.plan_id),
    'balances', coalesce(v_balances, '[]'),
    'low_balance', coalesce(v_credits, 0) < v_low,
    'runway_days', CASE WHEN v_burn > 0 THEN round(coalesce(v_credits, 0) / v_burn, 1) END);
END
$$;

CREATE FUNCTION public.creditgate_transactions(request jsonb)
RETURNS jsonb LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  v_limit integer := least(greatest(coalesce((request ->> 'limit')::integer, 50), 1), 200);
  v_cursor bigint := (request ->> 'cursor')::bigint;
  v_items jsonb;
  v_last bigint;
  v_count integer;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM creditgate.accounts WHERE id = request ->> 'account_id') THEN
    PERFORM creditgate.fail(404, 'account_not_found', jsonb_build_object('account_id', request ->> 'account_id'));
  END IF;
  SELECT jsonb_agg(jsonb_build_object('id', id, 'at', created_at, 'kind', kind, 'key', key,
           'amount', amount, 'balance_after', balance_after, 'source', source,
           'usage_id', usage_id, 'external_ref', external_ref) ORDER BY id DESC),
         min(id), count(*)
  INTO v_items, v_last, v_count
  FROM (SELECT * FROM creditgate.ledger_entries
        WHERE account_id = request ->> 'account_id' AND (v_cursor IS NULL OR id < v_cursor)
          AND (request ->> 'key' IS NULL OR key = request ->> 'key')
        ORDER BY id DESC LIMIT v_limit) e;
  RETURN jsonb_build_object('items', coalesce(v_items, '[]'),
    'next_cursor', CASE WHEN v_count = v_limit AND EXISTS (
        SELECT 1 FROM creditgate.ledger_entries WHERE account_id = request ->> 'account_id' AND id < v_last
          AND (request ->> 'key' IS NULL OR key = request ->> 'key')) THEN v_last::text END);
END
$$;

CREATE FUNCTION public.creditgate_usage_summary(request jsonb)
RETURNS jsonb LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  v_group text := coalesce(request ->> 'group_by', 'day');
  v_from timestamptz := coalesce((request ->> 'from')::timestamptz, now() - interval '30 days');
  v_to timestamptz := coalesce((request ->> 'to')::timestamptz, now());
  v_items jsonb;
  v_totals jsonb;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM creditgate.accounts WHERE id = request ->> 'account_id') THEN
    PERFORM creditgate.fail(404, 'account_not_found', jsonb_build_object('account_id', request ->> 'account_id'));
  END IF;
  WITH scoped AS (
    SELECT *, CASE v_group
                WHEN 'day' THEN to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')
                WHEN 'model' THEN coalesce(model, '')
                WHEN 'feature' THEN feature_id
                WHEN 'agent' THEN coalesce(agent_id, '')
                WHEN 'user' THEN coalesce(user_id, '') END AS grp
    FROM creditgate.usage_events
    WHERE account_id = request ->> 'account_id' AND created_at >= v_from AND created_at < v_to
  )
  SELECT jsonb_agg(jsonb_build_object('group', grp, 'requests', n, 'input_tokens', i, 'output_tokens', o,
           'cost', c, 'cost_pico_usd', p) ORDER BY grp)
  INTO v_items
  FROM (SELECT grp, count(*) n, sum(input_tokens) i, sum(output_tokens) o, sum(cost) c, sum(cost_pico_usd) p
        FROM scoped GROUP BY grp) g;
  SELECT jsonb_build_object('requests', count(*), 'input_tokens', coalesce(sum(input_tokens), 0),
           'output_tokens', coalesce(sum(output_tokens), 0), 'cost', coalesce(sum(cost), 0),
           'cost_pico_usd', coalesce(sum(cost_pico_usd), 0))
  INTO v_totals
  FROM creditgate.usage_events
  WHERE account_id = request ->> 'account_id' AND created_at >= v_from AND created_at < v_to;
  RETURN jsonb_build_object('group_by', v_group, 'from', v_from, 'to', v_to,
                            'items', coalesce(v_items, '[]'), 'totals', v_totals);
END
$$;

CREATE FUNCTION public.creditgate_orders(request jsonb)
RETURNS jsonb LANGUAGE sql STABLE SECURITY DEFINER SET search_path = '' AS $$
  SELECT jsonb_build_object('items', coalesce(jsonb_agg(jsonb_build_object(
      'order_id', id, 'kind', kind, 'item', item_id, 'status', status, 'amount_minor', amount_minor,
      'currency', currency, 'credits', credits, 'refunded_minor', refunded_minor,
      'checkout_session_id', stripe_session_id, 'created_at', created_at, 'updated_at', updated_at)
    ORDER BY created_at DESC), '[]'))
  FROM creditgate.orders WHERE account_id = request ->> 'account_id';
$$;

-- What a UI needs to draw lock icons: per feature and agent, allowed or why not.
CREATE FUNCTION public.creditgate_entitlements(request jsonb)
RETURNS jsonb LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  v_plan creditgate.plans;
  v_account creditgate.accounts;
BEGIN
  IF request ->> 'account_id' IS NULL THEN
    SELECT * INTO v_plan FROM creditgate.plans WHERE id = 'anonymous';
  ELSE
    SELECT * INTO v_account FROM creditgate.accounts WHERE id = request ->> 'account_id';
    IF NOT FOUND THEN
      PERFORM creditgate.fail(404, 'account_not_found', jsonb_build_object('account_id', request ->> 'account_id'));
    END IF;
    SELECT * INTO v_plan FROM creditgate.plans WHERE id = v_account.plan_id;
  END IF;
  RETURN jsonb_build_object(
    'account_id', v_account.id,
    'plan', jsonb_build_object('id', v_plan.id, 'name', v_plan.name),
    'status', coalesce(v_account.status, 'active'),
    'features', (SELECT coalesce(jsonb_object_agg(f.id, CASE
        WHEN f.id = ANY (v_plan.features) THEN jsonb_build_object('allowed', true, 'kind', f.kind,
          'balance_key', f.balance_key,
          'available', (SELECT available FROM creditgate.balances
                        WHERE account_id = v_account.id AND key = f.balance_key))
        ELSE jsonb_build_object('allowed', false, 'kind', f.kind, 'reason', 'feature_not_in_plan',
          'upgrade_to', creditgate.upgrade_to(f.id, NULL)) END), '{}')
      FROM creditgate.features f WHERE f.active),
    'agents', (SELECT coalesce(jsonb_object_agg(a.id, CASE
        WHEN a.id = ANY (v_plan.agents) THEN jsonb_build_object('allowed', true, 'name', a.name)
        ELSE jsonb_build_object('allowed', false, 'name', a.name, 'reason', 'agent_not_in_plan',
          'upgrade_to', creditgate.upgrade_to(NULL, a.id)) END), '{}')
      FROM creditgate.agents a WHERE a.active));
END
$$;

-- Every invariant of DESIGN.md, per (account, key): H = available + reserved,
-- reserved = what active reservations hold, debt only where nothing is available, and the
-- journal summing (and its last line pointing) to H - D.
CREATE FUNCTION public.creditgate_reconcile(request jsonb)
RETURNS jsonb LANGUAGE sql STABLE SECURITY DEFINER SET search_path = '' AS $$
  WITH b AS (
    SELECT * FROM creditgate.balances
    WHERE request ->> 'account_id' IS NULL OR account_id = request ->> 'account_id'
  ), facts AS (
    SELECT b.account_id, b.key, b.available, b.reserved, b.debt,
      coalesce((SELECT sum(remaining) FROM creditgate.grants g
                WHERE g.account_id = b.account_id AND g.key = b.key), 0) AS held,
      coalesce((SELECT sum(amount) FROM creditgate.reservations r
                WHERE r.account_id = b.account_id AND r.key = b.key AND r.status = 'active'), 0) AS reserved_by_holds,
      coalesce((SELECT sum(amount) FROM creditgate.ledger_entries e
                WHERE e.account_id = b.account_id AND e.key = b.key), 0) AS journal_sum,
      (SELECT balance_after FROM creditgate.ledger_entries e
       WHERE e.account_id = b.account_id AND e.key = b.key ORDER BY id DESC LIMIT 1) AS journal_last
    FROM b
  ), problems AS (
    SELECT account_id, key, problem FROM facts, LATERAL (VALUES
      (CASE WHEN held <> available + reserved THEN 'grants_hold_' || held || '_but_available_plus_reserved_is_' || (available + reserved) END),
      (CASE WHEN reserved <> reserved_by_holds THEN 'reserved_' || reserved || '_but_active_holds_are_' || reserved_by_holds END),
      (CASE WHEN debt > 0 AND available > 0 THEN 'debt_with_available_credits' END),
      (CASE WHEN journal_sum <> held - debt THEN 'journal_sums_to_' || journal_sum || '_not_' || (held - debt) END),
      (CASE WHEN coalesce(journal_last, 0) <> held - debt THEN 'last_journal_line_says_' || coalesce(journal_last, 0) || '_not_' || (held - debt) END)
    ) v(problem) WHERE problem IS NOT NULL
  )
  SELECT jsonb_build_object(
    'ok', NOT EXISTS (SELECT 1 FROM problems),
    'balances_checked', (SELECT count(*) FROM b),
    'problems', (SELECT coalesce(jsonb_agg(jsonb_build_object('account_id', account_id, 'key', key,
                   'problem', problem)), '[]') FROM problems));
$$;

CREATE FUNCTION public.creditgate_metrics(request jsonb)
RETURNS jsonb LANGUAGE sql STABLE SECURITY DEFINER SET search_path = '' AS $$
  WITH span AS (
    SELECT now() - make_interval(days => least(greatest(coalesce((request ->> 'days')::integer, 30), 1), 366)) AS since
  ), usage AS (
    SELECT u.* FROM creditgate.usage_events u, span WHERE u.created_at >= span.since
  )
  SELECT jsonb_build_object(
    'since', (SELECT since FROM span),
    'daily', (SELECT coalesce(jsonb_agg(d ORDER BY d ->> 'day'), '[]') FROM (
       SELECT jsonb_build_object('day', day, 'requests', coalesce(requests, 0), 'input_tokens', coalesce(i, 0),
                'output_tokens', coalesce(o, 0), 'cost', coalesce(c, 0), 'cost_pico_usd', coalesce(p, 0),
                'revenue_minor', coalesce(revenue, 0)) AS d
       FROM (SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, count(*) requests,
                    sum(input_tokens) i, sum(output_tokens) o, sum(cost) c, sum(cost_pico_usd) p
             FROM usage GROUP BY 1) u
       FULL JOIN (SELECT to_char(o.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day,
                         sum(amount_minor - refunded_minor) revenue
                  FROM creditgate.orders o, span WHERE o.status IN ('paid', 'partially_refunded')
                    AND o.updated_at >= span.since GROUP BY 1) r USING (day)) x),
    'accounts_over_80_percent', (SELECT coalesce(jsonb_agg(jsonb_build_object('account_id', a.id, 'key', e.key,
         'used', used, 'allowance', (e.value)::bigint)), '[]')
       FROM creditgate.accounts a JOIN creditgate.plans p ON p.id = a.plan_id, jsonb_each_text(p.allowances) e,
       LATERAL (SELECT coalesce(-sum(l.amount), 0) AS used FROM creditgate.ledger_entries l
                WHERE l.account_id = a.id AND l.key = e.key AND l.kind = 'consume'
                  AND l.created_at >= a.period_start) x
       WHERE (e.value)::bigint > 0 AND used * 100 >= (e.value)::bigint * 80),
    'top_agents', (SELECT coalesce(jsonb_agg(jsonb_build_object('agent', agent_id, 'requests', n, 'cost', c)
         ORDER BY n DESC), '[]') FROM (SELECT agent_id, count(*) n, sum(cost) c FROM usage
         WHERE agent_id IS NOT NULL GROUP BY 1 ORDER BY 2 DESC LIMIT 10) t),
    'top_features', (SELECT coalesce(jsonb_agg(jsonb_build_object('feature', feature_id, 'requests', n, 'cost', c)
         ORDER BY n DESC), '[]') FROM (SELECT feature_id, count(*) n, sum(cost) c FROM usage
         GROUP BY 1 ORDER BY 2 DESC LIMIT 10) t),
    'top_models', (SELECT coalesce(jsonb_agg(jsonb_build_object('model', model, 'requests', n, 'cost_pico_usd', p)
         ORDER BY n DESC), '[]') FROM (SELECT model, count(*) n, sum(cost_pico_usd) p FROM usage
         WHERE model IS NOT NULL GROUP BY 1 ORDER BY 2 DESC LIMIT 10) t),
    'guest_abuse', (SELECT coalesce(jsonb_agg(jsonb_build_object('ip', host(ip), 'day', day,
         'sessions', sessions, 'exchanges', exchanges) ORDER BY sessions DESC), '[]')
       FROM creditgate.guest_ip_days d, span, creditgate.settings s
       WHERE d.day >= (span.since AT TIME ZONE 'UTC')::date AND d.sessions > s.abuse_sessions_per_ip));
$$;

INSERT INTO creditgate.schema_migrations (version) VALUES ('70_reads') ON CONFLICT DO NOTHING;
