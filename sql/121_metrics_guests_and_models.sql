-- Metrics with guests' usage (119_guest_usage.sql) and model names as providers send them:
-- `top_models` counts a call under the model the catalog priced it as (a dated snapshot or
-- `openai/gpt-4o-mini` is `gpt-4o-mini` there, as in pricing), `top_accounts` lists
-- accounts only, and `kpis.guest_cost_pico_usd` is what the guests' calls cost (part of
-- the cost). Otherwise the metrics of 111_metrics_kpis.sql, unchanged.

CREATE OR REPLACE FUNCTION public.creditgate_metrics(request jsonb)
RETURNS jsonb LANGUAGE sql STABLE SECURITY DEFINER SET search_path = '' AS $$
  WITH span AS (
    SELECT now() - make_interval(days => least(greatest(coalesce((request ->> 'days')::integer, 30), 1), 366)) AS since
  ), usage AS (
    -- A model is counted under the name the catalog prices it by, however the call named it.
    SELECT u.*, coalesce(p.model, u.model) AS priced_model
    FROM creditgate.usage_events u JOIN span ON u.created_at >= span.since
    LEFT JOIN creditgate.model_prices p ON p.id = u.price_id
  ), revenue AS (
    -- Packs through their orders, less refunds; subscriptions through their paid invoices,
    -- renewals included (a subscription's checkout order is its first invoice, not added),
    -- less what was refunded of the charges that paid them.
    SELECT to_char(o.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, 'packs' AS source,
           amount_minor - refunded_minor AS amount
    FROM creditgate.orders o, span
    WHERE o.kind = 'pack' AND o.status IN ('paid', 'partially_refunded') AND o.updated_at >= span.since
    UNION ALL
    SELECT to_char(to_timestamp(i.created) AT TIME ZONE 'UTC', 'YYYY-MM-DD'), 'subscriptions',
           i.amount - coalesce((SELECT sum(least(r.refunded_minor, r.amount_minor)) FROM creditgate.invoice_refunds r
                                WHERE r.invoice_id = i.object_id), 0)
    FROM (SELECT DISTINCT ON (object_id) object_id, created,
                 coalesce((payload #>> '{data,object,amount_paid}')::bigint, 0) AS amount
          FROM creditgate.stripe_events e, creditgate.settings s
          -- Invoices the webhook applied to an account, in the catalog's currency (not
          -- another product's on the same Stripe account).
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
  ), paying AS (
    SELECT a.billing_source,
           CASE p.billing_interval WHEN 'year' THEN p.price_minor / 12 ELSE p.price_minor END AS monthly
    FROM creditgate.accounts a JOIN creditgate.plans p ON p.id = a.plan_id
    WHERE p.price_minor > 0 AND (a.billing_source = 'local' OR a.stripe_subscription_id IS NOT NULL)
  ), payers_at_start AS (
    -- An account's plan when the window began is the last plan change before it.
    SELECT h.account_id
    FROM (SELECT DISTINCT ON (c.account_id) c.account_id, c.new_value FROM creditgate.account_changes c, span
          WHERE c.field = 'plan' AND c.at < span.since ORDER BY c.account_id, c.at DESC, c.id DESC) h
    JOIN creditgate.plans p ON p.id = h.new_value
    WHERE p.price_minor > 0
  ), paying_at_start AS (
    -- The churn rate is of these accounts only: one that began paying inside the window
    -- and left again is churn, but not of the accounts the window began with.
    SELECT (SELECT count(*) FROM payers_at_start) AS n,
           (SELECT count(DISTINCT c.account_id) FROM creditgate.account_changes c
            JOIN span ON c.at >= span.since
            JOIN creditgate.plans o ON o.id = c.old_value
            JOIN creditgate.plans n ON n.id = c.new_value
            WHERE c.field = 'plan' AND o.price_minor > 0 AND n.price_minor = 0
              AND c.account_id IN (SELECT account_id FROM payers_at_start)) AS churned
  ), moves AS (
    SELECT count(*) FILTER (WHERE c.old_value IS NULL) AS new_accounts,
           count(DISTINCT c.account_id) FILTER (WHERE o.price_minor = 0 AND n.price_minor > 0) AS free_to_paid,
           count(DISTINCT c.account_id) FILTER (WHERE o.price_minor > 0 AND n.price_minor = 0) AS churned
    FROM creditgate.account_changes c
    JOIN span ON c.at >= span.since
    LEFT JOIN creditgate.plans o ON o.id = c.old_value
    LEFT JOIN creditgate.plans n ON n.id = c.new_value
    WHERE c.field = 'plan'
  ), margin AS (
    SELECT r.revenue, u.pico,
           CASE WHEN lower(s.currency) = 'usd' THEN ceil(u.pico / 1e10)::bigint END AS cost
    FROM (SELECT coalesce(sum(amount), 0)::bigint AS revenue FROM revenue) r,
         (SELECT coalesce(sum(cost_pico_usd), 0) AS pico FROM usage) u, creditgate.settings s
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
             FROM usage WHERE account_id NOT LIKE 'guest:%' GROUP BY 1 ORDER BY 3 DESC, 2 DESC LIMIT 20) t),
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
    'top_models', (SELECT coalesce(jsonb_agg(jsonb_build_object('model', priced_model, 'requests', n, 'cost_pico_usd', p)
         ORDER BY n DESC), '[]') FROM (SELECT priced_model, count(*) n, sum(cost_pico_usd) p FROM usage
         WHERE priced_model IS NOT NULL GROUP BY 1 ORDER BY 2 DESC LIMIT 10) t),
    'guest_abuse', (SELECT coalesce(jsonb_agg(jsonb_build_object('ip', host(ip), 'day', day,
         'sessions', sessions, 'exchanges', exchanges) ORDER BY sessions DESC), '[]')
       FROM creditgate.guest_ip_days d, span, creditgate.settings s
       WHERE d.day >= (span.since AT TIME ZONE 'UTC')::date AND d.sessions > s.abuse_sessions_per_ip),
    'kpis', (SELECT jsonb_build_object(
       'mrr_minor', mrr, 'arr_minor', 12 * mrr,
       'mrr_minor_by_billing', jsonb_build_object('stripe', stripe_mrr, 'local', mrr - stripe_mrr),
       'paying_accounts', paying_now, 'paying_accounts_at_start', at_start.n, 'churned', mv.churned,
       'churned_from_start', at_start.churned,
       'churn_rate', CASE WHEN at_start.n > 0 THEN round(at_start.churned::numeric / at_start.n, 4)::text END,
       'conversion', jsonb_build_object(
         'guest_sessions', (SELECT coalesce(sum(sessions), 0) FROM guests),
         'new_accounts', mv.new_accounts, 'free_to_paid', mv.free_to_paid),
       'revenue_minor', m.revenue, 'cost_pico_usd', m.pico, 'cost_minor', m.cost,
       'guest_cost_pico_usd', (SELECT coalesce(sum(cost_pico_usd), 0) FROM usage WHERE account_id LIKE 'guest:%'),
       'margin_minor', m.revenue - m.cost,
       'margin_share', CASE WHEN m.revenue > 0 THEN round((m.revenue - m.cost)::numeric / m.revenue, 4)::text END,
       -- Guests have no account: they count in the conversion and the funnel, not here.
       'tokens_per_account_by_plan', (SELECT coalesce(jsonb_object_agg(plan_id,
            jsonb_build_object('accounts', n, 'avg_tokens', tokens / n)), '{}')
          FROM (SELECT a.plan_id, count(*) AS n, sum(t.tokens)::bigint AS tokens
                FROM (SELECT account_id, sum(input_tokens + output_tokens) AS tokens FROM usage GROUP BY 1) t
                JOIN creditgate.accounts a ON a.id = t.account_id GROUP BY 1) p))
       FROM (SELECT coalesce(sum(monthly), 0)::bigint AS mrr,
                    coalesce(sum(monthly) FILTER (WHERE billing_source = 'stripe'), 0)::bigint AS stripe_mrr,
                    count(*) AS paying_now FROM paying) k,
            paying_at_start at_start, moves mv, margin m));
$$;

SELECT creditgate.secure();
