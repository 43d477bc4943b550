-- What the answers say, and which names they take.
--
-- A model name as providers and gateways send it back ("gpt-4o-mini-2024-07-18",
-- "claude-3-5-haiku@20241022", "openai/gpt-4o-mini", "GPT-4o-mini") was an unknown model,
-- so its usage was refused: it is now priced as the model it names, unless the catalog
-- lists that exact name (which wins).
--
-- Running out of a quota (a plan's `requests`, `tokens` or per-type buckets: keys no pack
-- tops up) was answered like running out of credits, offering packs that cannot help:
-- it is now 402 `quota_exhausted` with the plans that would give more and when it resets.
--
-- Usage summaries and metrics added up amounts of different keys (credits and tokens) as
-- one `cost`: `cost` is now credits, and each other key's amount is shown by key.
--
-- A grant to a key nothing in the catalog uses made a balance nobody reads: refused.
-- Members can be removed.

-- The exact name, or the one catalog id that carries a provider prefix ("gemini/gemini-2.5-pro")
-- ending in it: a name several providers' ids end in (priced differently) needs the
-- provider, it is not priced by whichever sorts first.
CREATE FUNCTION creditgate.price_named(p_model text, p_provider text)
RETURNS creditgate.model_prices LANGUAGE plpgsql STABLE SET search_path = '' AS $$
DECLARE
  v creditgate.model_prices;
BEGIN
  SELECT * INTO v FROM creditgate.model_prices
  WHERE superseded_at IS NULL AND model = p_model AND (p_provider IS NULL OR provider = p_provider)
  ORDER BY provider LIMIT 1;
  IF NOT FOUND THEN
    SELECT * INTO v FROM creditgate.model_prices
    WHERE superseded_at IS NULL AND (p_provider IS NULL OR provider = p_provider)
      AND right(model, length(p_model) + 1) = '/' || p_model
    ORDER BY provider, model LIMIT 1;
    IF FOUND AND EXISTS (SELECT 1 FROM creditgate.model_prices
                         WHERE superseded_at IS NULL AND (p_provider IS NULL OR provider = p_provider)
                           AND right(model, length(p_model) + 1) = '/' || p_model AND id <> v.id) THEN
      v := NULL;
    END IF;
  END IF;
  RETURN v;
END
$$;

CREATE OR REPLACE FUNCTION creditgate.find_price(p_model text, p_provider text)
RETURNS creditgate.model_prices LANGUAGE plpgsql STABLE SET search_path = '' AS $$
DECLARE
  v creditgate.model_prices;
  v_base text;
BEGIN
  -- The common case first, through the index, without another call.
  SELECT * INTO v FROM creditgate.model_prices
  WHERE superseded_at IS NULL AND model = p_model AND (p_provider IS NULL OR provider = p_provider)
  ORDER BY provider LIMIT 1;
  IF NOT FOUND THEN
    v := creditgate.price_named(p_model, p_provider);
  END IF;
  IF v.id IS NULL THEN
    -- The model the name stands for: without a gateway's prefix, a snapshot date
    -- (-2024-07-18, -20241022, @20241022) or capitals.
    v_base := lower(regexp_replace(regexp_replace(p_model, '^.*/', ''),
                                   '[-@]([0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{8})$', ''));
    IF v_base <> p_model THEN
      v := creditgate.price_named(v_base, p_provider);
    END IF;
  END IF;
  IF v.id IS NULL THEN
    PERFORM creditgate.fail(422, 'unknown_model', jsonb_build_object('model', p_model, 'provider', p_provider));
  END IF;
  RETURN v;
END
$$;

-- The plans, cheapest first, whose allowance of `p_key` is larger than the account's
-- plan's (or than nothing).
CREATE FUNCTION creditgate.plans_with_more(p_key text, p_plan_id text)
RETURNS jsonb LANGUAGE sql STABLE SET search_path = '' AS $$
  SELECT coalesce(jsonb_agg(id ORDER BY price_minor, display_order), '[]')
  FROM (
    SELECT p.id, p.price_minor, p.display_order FROM creditgate.plans p
    WHERE p.active AND p.id <> 'anonymous'
      AND coalesce((p.allowances ->> p_key)::bigint, 0) > coalesce(
        (SELECT (c.allowances ->> p_key)::bigint FROM creditgate.plans c WHERE c.id = p_plan_id), 0)
    ORDER BY p.price_minor, p.display_order LIMIT 3
  ) x;
$$;

-- Short of credits: packs could help. Short of any other key: it is a quota, which only a
-- plan with more or the next period gives back.
CREATE OR REPLACE FUNCTION creditgate.deny_short(p_key text, p_required bigint, p_balance creditgate.balances)
RETURNS void LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v_account creditgate.accounts;
BEGIN
  IF p_key = 'credits' THEN
    PERFORM creditgate.fail(402,
      CASE WHEN coalesce(p_balance.debt, 0) > 0 THEN 'debt_outstanding' ELSE 'insufficient_credits' END,
      jsonb_build_object('allowed', false, 'key', p_key, 'required', p_required,
                         'available', coalesce(p_balance.available, 0), 'debt', coalesce(p_balance.debt, 0),
                         'packs', creditgate.packs_for_sale()));
  END IF;
  SELECT * INTO v_account FROM creditgate.accounts WHERE id = p_balance.account_id;
  PERFORM creditgate.fail(402, 'quota_exhausted',
    jsonb_build_object('allowed', false, 'key', p_key, 'required', p_required,
                       'available', coalesce(p_balance.available, 0), 'debt', coalesce(p_balance.debt, 0),
                       'packs', '[]'::jsonb, 'resets_at', v_account.period_end,
                       'upgrade_to', creditgate.plans_with_more(p_key, v_account.plan_id)));
END
$$;

-- Keys the catalog uses: credits, every plan allowance's, every feature's.
CREATE FUNCTION creditgate.known_key(p_key text)
RETURNS boolean LANGUAGE sql STABLE SET search_path = '' AS $$
  SELECT p_key = 'credits'
    OR EXISTS (SELECT 1 FROM creditgate.plans WHERE allowances ? p_key)
    OR EXISTS (SELECT 1 FROM creditgate.features WHERE balance_key = p_key OR requests_key = p_key);
$$;

CREATE FUNCTION public.creditgate_remove_member(request jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  v_removed boolean;
BEGIN
  PERFORM creditgate.lock_account(request ->> 'account_id');
  DELETE FROM creditgate.account_members
   WHERE account_id = request ->> 'account_id' AND user_id = request ->> 'user_id';
  v_removed := FOUND;
  RETURN jsonb_build_object('account_id', request ->> 'account_id', 'user_id', request ->> 'user_id',
                            'removed', v_removed);
END
$$;

-- The operator grant of 40_accounts.sql, for keys the catalog uses only.
CREATE OR REPLACE FUNCTION public.creditgate_grant_credits(request jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  v_account_id text := request ->> 'account_id';
  v_key text := coalesce(request ->> 'key', 'credits');
  v_idem text := request ->> 'idempotency_key';
  v_previous jsonb;
  v_grant jsonb;
BEGIN
  PERFORM creditgate.lock_account(v_account_id);
  v_previous := creditgate.claim_idempotency(v_account_id, 'grant', v_idem, request);
  IF v_previous IS NOT NULL THEN
    RETURN v_previous || jsonb_build_object('replayed', true);
  END IF;
  IF NOT creditgate.known_key(v_key) THEN
    PERFORM creditgate.fail(422, 'invalid_request', jsonb_build_object('errors',
      jsonb_build_array(jsonb_build_object('loc', jsonb_build_array('body', 'key'),
                                           'msg', 'no plan or feature of the catalog uses the key ' || v_key))));
  END IF;
  IF (request ->> 'expires_at')::timestamptz <= now() THEN
    PERFORM creditgate.fail(422, 'invalid_request', jsonb_build_object('errors',
      jsonb_build_array(jsonb_build_object('loc', jsonb_build_array('body', 'expires_at'),
                                           'msg', 'expires_at must be in the future'))));
  END IF;
  v_grant := creditgate.add_grant(v_account_id, v_key, request ->> 'source', (request ->> 'amount')::bigint,
    'grant:' || v_idem, (request ->> 'expires_at')::timestamptz, request ->> 'reason');
  RETURN creditgate.remember_response(v_account_id, 'grant', v_idem,
    v_grant || jsonb_build_object('account_id', v_account_id, 'reason', request ->> 'reason',
      'balance', (SELECT jsonb_build_object('key', key, 'available', available, 'debt', debt)
                  FROM creditgate.balances WHERE account_id = v_account_id AND key = v_key)));
END
$$;

-- An amount of one key, and the sums of such amounts by key, for the summaries below.
CREATE TYPE creditgate.key_amount AS (key text, amount bigint);
CREATE FUNCTION creditgate.other_keys(p_amounts creditgate.key_amount[])
RETURNS jsonb LANGUAGE sql IMMUTABLE SET search_path = '' AS $$
  SELECT coalesce(jsonb_object_agg(key, total), '{}')
  FROM (SELECT key, sum(amount) AS total FROM unnest(p_amounts) GROUP BY key) s;
$$;

-- The usage summary of 70_reads.sql: `cost` is credits; other keys' amounts by key.
CREATE OR REPLACE FUNCTION public.creditgate_usage_summary(request jsonb)
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
           'cost', c, 'cost_pico_usd', p, 'other_keys', creditgate.other_keys(k)) ORDER BY grp)
  INTO v_items
  FROM (SELECT grp, count(*) n, sum(input_tokens) i, sum(output_tokens) o,
               coalesce(sum(cost) FILTER (WHERE key = 'credits'), 0) c, sum(cost_pico_usd) p,
               array_agg(ROW(key, cost)::creditgate.key_amount) FILTER (WHERE key <> 'credits') k
        FROM scoped GROUP BY grp) g;
  SELECT jsonb_build_object('requests', count(*), 'input_tokens', coalesce(sum(input_tokens), 0),
           'output_tokens', coalesce(sum(output_tokens), 0),
           'cost', coalesce(sum(cost) FILTER (WHERE key = 'credits'), 0),
           'cost_pico_usd', coalesce(sum(cost_pico_usd), 0),
           'other_keys', creditgate.other_keys(array_agg(ROW(key, cost)::creditgate.key_amount)
                                                FILTER (WHERE key <> 'credits')))
  INTO v_totals
  FROM creditgate.usage_events
  WHERE account_id = request ->> 'account_id' AND created_at >= v_from AND created_at < v_to;
  RETURN jsonb_build_object('group_by', v_group, 'from', v_from, 'to', v_to,
                            'items', coalesce(v_items, '[]'), 'totals', v_totals);
END
$$;

-- The metrics of 96_used_this_period.sql: `cost` is credits, not every key added up;
-- revenue counts subscription invoices (renewals were missing: only checkout orders
-- counted); accounts per plan and the top accounts by credits spent.
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
  )
  SELECT jsonb_build_object(
    'since', (SELECT since FROM span),
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
         'cost_pico_usd', p) ORDER BY c DESC, n DESC), '[]')
       FROM (SELECT account_id, count(*) n, coalesce(sum(cost) FILTER (WHERE key = 'credits'), 0) c,
                    sum(cost_pico_usd) p
             FROM usage GROUP BY 1 ORDER BY 3 DESC, 2 DESC LIMIT 20) t),
    'accounts_over_80_percent', (SELECT coalesce(jsonb_agg(jsonb_build_object('account_id', a.id, 'key', e.key,
         'used', used, 'allowance', (e.value)::bigint)), '[]')
       FROM creditgate.accounts a JOIN creditgate.plans p ON p.id = a.plan_id, jsonb_each_text(p.allowances) e,
       LATERAL (SELECT coalesce(max(b.used_this_period), 0) AS used FROM creditgate.balances b
                WHERE b.account_id = a.id AND b.key = e.key) x
       WHERE (e.value)::bigint > 0 AND used * 100 >= (e.value)::bigint * 80),
    'top_agents', (SELECT coalesce(jsonb_agg(jsonb_build_object('agent', agent_id, 'requests', n, 'cost', c)
         ORDER BY n DESC), '[]') FROM (SELECT agent_id, count(*) n, coalesce(sum(cost) FILTER (WHERE key = 'credits'), 0) c FROM usage
         WHERE agent_id IS NOT NULL GROUP BY 1 ORDER BY 2 DESC LIMIT 10) t),
    'top_features', (SELECT coalesce(jsonb_agg(jsonb_build_object('feature', feature_id, 'requests', n, 'cost', c)
         ORDER BY n DESC), '[]') FROM (SELECT feature_id, count(*) n, coalesce(sum(cost) FILTER (WHERE key = 'credits'), 0) c FROM usage
         GROUP BY 1 ORDER BY 2 DESC LIMIT 10) t),
    'top_models', (SELECT coalesce(jsonb_agg(jsonb_build_object('model', model, 'requests', n, 'cost_pico_usd', p)
         ORDER BY n DESC), '[]') FROM (SELECT model, count(*) n, sum(cost_pico_usd) p FROM usage
         WHERE model IS NOT NULL GROUP BY 1 ORDER BY 2 DESC LIMIT 10) t),
    'guest_abuse', (SELECT coalesce(jsonb_agg(jsonb_build_object('ip', host(ip), 'day', day,
         'sessions', sessions, 'exchanges', exchanges) ORDER BY sessions DESC), '[]')
       FROM creditgate.guest_ip_days d, span, creditgate.settings s
       WHERE d.day >= (span.since AT TIME ZONE 'UTC')::date AND d.sessions > s.abuse_sessions_per_ip));
$$;

-- What a check asks of one key: the amount available and no debt; refused as deny_short says.
CREATE FUNCTION creditgate.check_short(p_account_id text, p_key text, p_amount bigint)
RETURNS void LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v_balance creditgate.balances;
BEGIN
  SELECT * INTO v_balance FROM creditgate.balances WHERE account_id = p_account_id AND key = p_key;
  IF coalesce(v_balance.debt, 0) > 0 OR coalesce(v_balance.available, 0) < greatest(p_amount, 1) THEN
    IF v_balance.key IS NULL THEN
      v_balance.account_id := p_account_id;
    END IF;
    PERFORM creditgate.deny_short(p_key, p_amount, v_balance);
  END IF;
END
$$;

-- The gate of 96_used_this_period.sql; a check also asks the plan's request quota, as a
-- reserve or commit of the same call would; a commit's usage row keeps its provider cost.
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
  v_reservation jsonb;
  v_usage_id uuid;
  v_count integer;
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
  IF v_plan.rate_limit_per_minute > 0 THEN
    INSERT INTO creditgate.rate_windows AS w (account_id, window_start, requests)
    VALUES (v_account_id, date_trunc('minute', now()), 1)
    ON CONFLICT (account_id, window_start) DO UPDATE SET requests = w.requests + 1
    RETURNING requests INTO v_count;
    IF v_count > v_plan.rate_limit_per_minute THEN
      PERFORM creditgate.fail(429, 'rate_limited', jsonb_build_object('allowed', false,
        'limit', v_plan.rate_limit_per_minute,
        'retry_after', greatest(1, ceil(60 - extract(epoch FROM now() - date_trunc('minute', now()))))::bigint));
    END IF;
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
        RETURNING jsonb_build_object('id', id, 'amount', amount, 'expires_at', expires_at) INTO v_reservation;
      END IF;
      PERFORM creditgate.count_request(v_account, v_plan, v_feature.requests_key, v_usage_id, true);
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

-- Whether a metered feature the plan includes could be used now, as the gate's check
-- would answer (debt, nothing available, the request quota used up): {"allowed"} and, when
-- not, the reason, with what would help.
CREATE FUNCTION creditgate.usable(p_account creditgate.accounts, p_plan creditgate.plans,
  p_feature creditgate.features)
RETURNS jsonb LANGUAGE plpgsql STABLE SET search_path = '' AS $$
DECLARE
  v_key text;
  v_balance creditgate.balances;
BEGIN
  IF p_account.status = 'disputed' THEN
    RETURN '{"allowed": false, "reason": "account_disputed"}';
  END IF;
  IF p_feature.kind <> 'metered' OR p_account.id IS NULL THEN
    RETURN '{"allowed": true}';
  END IF;
  FOREACH v_key IN ARRAY ARRAY[p_feature.balance_key, CASE WHEN p_plan.allowances ? p_feature.requests_key
                                                              THEN p_feature.requests_key END]
  LOOP
    CONTINUE WHEN v_key IS NULL;
    SELECT * INTO v_balance FROM creditgate.balances WHERE account_id = p_account.id AND key = v_key;
    IF coalesce(v_balance.debt, 0) > 0 OR coalesce(v_balance.available, 0) <= 0 THEN
      RETURN CASE
        WHEN v_key <> 'credits' THEN jsonb_build_object('allowed', false, 'reason', 'quota_exhausted', 'key', v_key,
          'resets_at', p_account.period_end, 'upgrade_to', creditgate.plans_with_more(v_key, p_plan.id))
        WHEN coalesce(v_balance.debt, 0) > 0 THEN jsonb_build_object('allowed', false, 'reason', 'debt_outstanding',
          'key', v_key)
        ELSE jsonb_build_object('allowed', false, 'reason', 'insufficient_credits', 'key', v_key) END;
    END IF;
  END LOOP;
  RETURN '{"allowed": true}';
END
$$;

-- The entitlements of 70_reads.sql: an included feature the account cannot pay for now
-- says so, as the gate would, on the account as the gate would see it (period rolled).
CREATE OR REPLACE FUNCTION public.creditgate_entitlements(request jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  v_plan creditgate.plans;
  v_account creditgate.accounts;
BEGIN
  IF request ->> 'account_id' IS NULL THEN
    SELECT * INTO v_plan FROM creditgate.plans WHERE id = 'anonymous';
  ELSE
    -- As the gate sees it: an ended period rolled, expired grants gone.
    v_account := creditgate.current_account(request ->> 'account_id');
    SELECT * INTO v_plan FROM creditgate.plans WHERE id = v_account.plan_id;
  END IF;
  RETURN jsonb_build_object(
    'account_id', v_account.id,
    'plan', jsonb_build_object('id', v_plan.id, 'name', v_plan.name),
    'status', coalesce(v_account.status, 'active'),
    'features', (SELECT coalesce(jsonb_object_agg(f.id, CASE
        WHEN f.id = ANY (v_plan.features) THEN jsonb_build_object('kind', f.kind,
          'balance_key', f.balance_key,
          'available', (SELECT available FROM creditgate.balances
                        WHERE account_id = v_account.id AND key = f.balance_key))
          || creditgate.usable(v_account, v_plan, f)
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

SELECT creditgate.secure();
