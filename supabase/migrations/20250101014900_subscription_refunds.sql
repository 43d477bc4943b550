-- Generated from sql/109_subscription_refunds.sql by `creditgate supabase-export`. Edit sql/109_subscription_refunds.sql and
-- run the command again; never edit this copy.
-- Refunds of subscription invoices. A refunded charge that paid a period's invoice used to
-- change nothing: the allowances stayed and metrics kept counting the invoice. Now it
-- takes back what is left of each allowance that period granted, up to the refunded share
-- of it, and revenue is counted net of the refund.
--
-- Unlike a pack's refund, it makes no debt: what the user already used of the period stays
-- used. Stripe's "cancel and refund" sends customer.subscription.deleted and
-- charge.refunded in either order, and the cancellation ends the allowance (what is left
-- expires); taking only what is left gives the same ledger in both orders, where charging
-- the used part as debt would only happen when the refund came first.
--
-- The invoice's grants are found through its stored invoice.paid: the plan and period it
-- opened are the allowance grants' plan_id and period_start (read again from the payload,
-- so invoices paid before this migration are covered). The share is the invoice's: an
-- invoice may be paid by several charges (partial payments), so what its charges refunded
-- is summed against what it was paid, and what they took back is summed too.

-- One row per refunded charge of an invoice. `amount_refunded` is cumulative, so the rows
-- keep what was taken back so far, per balance key (micro-units), and each event takes
-- only the rest.
CREATE TABLE creditgate.invoice_refunds (
  charge_id      text PRIMARY KEY,
  invoice_id     text NOT NULL,
  account_id     text NOT NULL REFERENCES creditgate.accounts (id),
  amount_minor   bigint NOT NULL CHECK (amount_minor >= 0),
  refunded_minor bigint NOT NULL DEFAULT 0 CHECK (refunded_minor >= 0),
  currency       text,
  clawed_back    jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(clawed_back) = 'object'),
  created_at     timestamptz NOT NULL DEFAULT now(),
  updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX invoice_refunds_invoice ON creditgate.invoice_refunds (invoice_id);
GRANT SELECT, INSERT, UPDATE, DELETE ON creditgate.invoice_refunds TO service_role;

-- The plan and period a subscription invoice pays for: the newest line priced as a plan,
-- else the plan in the subscription's metadata with the first line's period. One reading
-- for invoice.paid and for its refunds, so both name the same grants.
CREATE FUNCTION creditgate.invoice_period(p_inv jsonb, OUT plan_id text, OUT period_start bigint,
  OUT period_end bigint)
LANGUAGE plpgsql STABLE SET search_path = '' AS $$
BEGIN
  SELECT p.id, (l #>> '{period,start}')::bigint, (l #>> '{period,end}')::bigint
    INTO plan_id, period_start, period_end
  FROM jsonb_array_elements(coalesce(p_inv #> '{lines,data}', '[]')) l
  JOIN creditgate.plans p ON p.active
   AND p.stripe_price_id = coalesce(l #>> '{pricing,price_details,price}', l #>> '{price,id}')
  ORDER BY (l #>> '{period,start}')::bigint DESC LIMIT 1;
  IF plan_id IS NULL THEN
    plan_id := creditgate.stripe_plan(NULL, coalesce(p_inv #> '{parent,subscription_details,metadata}',
                                                     p_inv #> '{subscription_details,metadata}', '{}') ->> 'plan');
    period_start := (p_inv #>> '{lines,data,0,period,start}')::bigint;
    period_end := (p_inv #>> '{lines,data,0,period,end}')::bigint;
  END IF;
END
$$;

-- The claw-back of 45_payments.sql, for any balance key: an allowance meters requests and
-- tokens as well as credits. The journal line names the grant's source (an allowance's
-- claw-back is not a purchase's).
DROP FUNCTION creditgate.claw_back(text, text, bigint, text);
CREATE FUNCTION creditgate.claw_back(p_account_id text, p_grant_ref text, p_amount bigint, p_ref text,
  p_key text DEFAULT 'credits')
RETURNS bigint LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v_grant creditgate.grants;
  v_balance creditgate.balances;
  v_available bigint;
  v_take bigint;
  v_paid bigint;
BEGIN
  IF p_amount <= 0 THEN
    RETURN 0;
  END IF;
  PERFORM creditgate.ensure_balance(p_account_id, p_key);
  SELECT * INTO v_grant FROM creditgate.grants
   WHERE account_id = p_account_id AND external_ref = p_grant_ref AND key = p_key;
  SELECT available INTO v_available FROM creditgate.balances WHERE account_id = p_account_id AND key = p_key;
  v_take := least(coalesce(v_grant.remaining, 0), v_available, p_amount);
  IF v_take > 0 THEN
    UPDATE creditgate.grants SET remaining = remaining - v_take WHERE id = v_grant.id;
  END IF;
  v_paid := least(v_available - v_take, p_amount - v_take);
  UPDATE creditgate.balances
     SET available = available - v_take - v_paid, debt = debt + (p_amount - v_take - v_paid)
   WHERE account_id = p_account_id AND key = p_key
  RETURNING * INTO v_balance;
  PERFORM creditgate.burn_grants(p_account_id, p_key, v_paid);
  PERFORM creditgate.journal(v_balance, 'clawback', -p_amount, v_grant.id, NULL,
                             coalesce(v_grant.source, 'purchase'), p_ref);
  RETURN p_amount - v_take - v_paid;
END
$$;

-- Takes back, per key, what is left of the allowance the invoice's period granted (its
-- reinstatements, ':back:', give back the same allowance and are not counted again), up to
-- the invoice's refunded share of it less what its refunds took before; never what an open
-- hold keeps of it, and never as debt. Only while that allowance runs:
-- the account on the plan and period, the grant not past its time. What is taken is
-- recorded on the refund of `p_charge_id`. The caller holds the account's lock.
CREATE FUNCTION creditgate.claw_back_invoice(p_invoice_id text, p_account_id text, p_paid bigint, p_plan text,
  p_start timestamptz, p_charge_id text)
RETURNS jsonb LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v_account creditgate.accounts;
  v_refunded bigint;
  v_taken jsonb;
  v_done jsonb := '{}';
  k record;
  v_grant creditgate.grants;
  v_due bigint;
  v_take bigint;
  v_ended boolean := false;
  v_spent boolean := false;
BEGIN
  SELECT * INTO v_account FROM creditgate.accounts WHERE id = p_account_id;
  SELECT coalesce(sum(least(refunded_minor, amount_minor)), 0) INTO v_refunded
  FROM creditgate.invoice_refunds WHERE invoice_id = p_invoice_id;
  SELECT coalesce(jsonb_object_agg(key, total), '{}') INTO v_taken
  FROM (SELECT c.key, sum(c.value::bigint) AS total
        FROM creditgate.invoice_refunds r, jsonb_each_text(r.clawed_back) c
        WHERE r.invoice_id = p_invoice_id GROUP BY c.key) t;
  FOR k IN
    SELECT g.key, coalesce(sum(g.amount) FILTER (WHERE g.external_ref NOT LIKE '%:back:%'), 0) AS granted
    FROM creditgate.grants g
    WHERE g.account_id = p_account_id AND g.source = 'allowance' AND g.plan_id = p_plan AND g.period_start = p_start
    GROUP BY g.key ORDER BY g.key
  LOOP
    v_due := CASE WHEN p_paid > 0 THEN floor(k.granted::numeric * least(v_refunded, p_paid) / p_paid)::bigint
                  ELSE 0 END - coalesce((v_taken ->> k.key)::bigint, 0);
    CONTINUE WHEN v_due <= 0;
    IF (v_account.plan_id, v_account.period_start) IS DISTINCT FROM (p_plan, p_start) THEN
      v_ended := true;
      CONTINUE;
    END IF;
    FOR v_grant IN
      SELECT * FROM creditgate.grants
      WHERE account_id = p_account_id AND key = k.key AND source = 'allowance' AND plan_id = p_plan
        AND period_start = p_start AND live AND (expires_at IS NULL OR expires_at > now())
      ORDER BY remaining DESC, id
    LOOP
      -- Only the part of the grant no open hold covers: holds take grants in burn order, so
      -- what is reserved covers the grants up to this one first (as in expirable).
      SELECT least(v_due, v_grant.remaining, b.available, greatest(
               (SELECT coalesce(sum(o.remaining), 0) FROM creditgate.grants o
                WHERE o.account_id = p_account_id AND o.key = k.key AND o.live
                  AND (o.priority, o.expires_at, o.id) <= (v_grant.priority, v_grant.expires_at, v_grant.id))
               - b.reserved, 0))
      INTO v_take
      FROM creditgate.balances b WHERE b.account_id = p_account_id AND b.key = k.key;
      EXIT WHEN v_take <= 0;
      PERFORM creditgate.claw_back(p_account_id, v_grant.external_ref, v_take, p_charge_id, k.key);
      v_done := v_done || jsonb_build_object(k.key, coalesce((v_done ->> k.key)::bigint, 0) + v_take);
      v_due := v_due - v_take;
      EXIT WHEN v_due <= 0;
    END LOOP;
    IF v_due > 0 AND v_refunded >= p_paid THEN
      -- Refunded in full while open holds keep part of it: the allowance ends now. Those
      -- holds' calls (under way) may still spend what they keep; the rest expires as
      -- they end (98_expiry_and_holds.sql).
      UPDATE creditgate.grants SET expires_at = now()
       WHERE account_id = p_account_id AND key = k.key AND source = 'allowance' AND plan_id = p_plan
         AND period_start = p_start AND live AND expires_at > now();
    END IF;
    v_spent := v_spent OR NOT (v_done ? k.key);
  END LOOP;
  IF v_done <> '{}' THEN
    UPDATE creditgate.invoice_refunds r
       SET clawed_back = (SELECT jsonb_object_agg(x.key, coalesce((r.clawed_back ->> x.key)::bigint, 0)
                                                         + coalesce((v_done ->> x.key)::bigint, 0))
                          FROM jsonb_object_keys(r.clawed_back || v_done) AS x(key)),
           updated_at = now()
     WHERE charge_id = p_charge_id;
  END IF;
  RETURN jsonb_build_object(
    'outcome', CASE WHEN v_done <> '{}' THEN 'clawed_back' WHEN v_ended THEN 'allowance_ended'
                    WHEN v_spent THEN 'allowance_spent' ELSE 'already_clawed_back' END,
    'clawed_back', v_done);
END
$$;

-- A refunded charge of a subscription invoice (named on the charge by API versions before
-- 2025-03-31, else by the invoice payment the webhook fetched): the refund is recorded
-- under the charge, and the invoice's allowances give back their share once its
-- invoice.paid is known (if the refund comes first, invoice.paid takes it back).
CREATE FUNCTION creditgate.stripe_invoice_refunded(p_event jsonb)
RETURNS jsonb LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v_charge jsonb := p_event #> '{data,object}';
  v_invoice text := coalesce(p_event #>> '{data,object,invoice}',
                             p_event #>> '{expanded,invoice_payments,data,0,invoice}');
  v_paid jsonb;
  v_account_id text;
  v_period record;
BEGIN
  IF v_invoice IS NULL THEN
    -- A payment creditgate did not sell: nothing to take back.
    RETURN jsonb_build_object('handled', false, 'outcome', 'no_order_or_invoice',
      'account_id', creditgate.stripe_account(ARRAY[v_charge #>> '{metadata,account_id}'], v_charge ->> 'customer'));
  END IF;
  v_account_id := coalesce(
    (SELECT account_id FROM creditgate.invoice_refunds WHERE charge_id = v_charge ->> 'id'),
    (SELECT account_id FROM creditgate.stripe_events
     WHERE object_id = v_invoice AND type = 'invoice.paid' AND handled ORDER BY created, received_at LIMIT 1),
    creditgate.stripe_account(ARRAY[v_charge #>> '{metadata,account_id}'], v_charge ->> 'customer'));
  IF v_account_id IS NULL THEN
    RETURN jsonb_build_object('handled', false, 'outcome', 'unknown_account');
  END IF;
  -- The invoice.paid is read under the account's lock: one being applied now is waited
  -- for and seen here, or it sees this refund (it takes the same lock before it looks).
  PERFORM creditgate.lock_account(v_account_id);
  SELECT payload INTO v_paid FROM creditgate.stripe_events
   WHERE object_id = v_invoice AND type = 'invoice.paid' AND handled ORDER BY created, received_at LIMIT 1;
  INSERT INTO creditgate.invoice_refunds (charge_id, invoice_id, account_id, amount_minor, currency)
  VALUES (v_charge ->> 'id', v_invoice, v_account_id, (v_charge ->> 'amount')::bigint, lower(v_charge ->> 'currency'))
  ON CONFLICT (charge_id) DO NOTHING;
  UPDATE creditgate.invoice_refunds
     SET refunded_minor = greatest(refunded_minor, (v_charge ->> 'amount_refunded')::bigint), updated_at = now()
   WHERE charge_id = v_charge ->> 'id';
  IF v_paid IS NULL THEN
    RETURN jsonb_build_object('handled', true, 'outcome', 'refund_recorded', 'account_id', v_account_id);
  END IF;
  SELECT * INTO v_period FROM creditgate.invoice_period(v_paid #> '{data,object}');
  RETURN jsonb_build_object('handled', true, 'account_id', v_account_id)
    || creditgate.claw_back_invoice(v_invoice, v_account_id, coalesce((v_paid #>> '{data,object,amount_paid}')::bigint, 0),
                                    v_period.plan_id, to_timestamp(v_period.period_start), v_charge ->> 'id');
END
$$;

-- The refund of 45_payments.sql: a pack's order as before, otherwise a subscription's
-- invoice (above).
CREATE OR REPLACE FUNCTION creditgate.stripe_charge_refunded(p_event jsonb)
RETURNS jsonb LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v_charge jsonb := p_event #> '{data,object}';
  v_amount bigint := (p_event #>> '{data,object,amount}')::bigint;
  v_refunded bigint := (p_event #>> '{data,object,amount_refunded}')::bigint;
  v_order creditgate.orders;
  v_claw bigint;
  v_debt bigint;
BEGIN
  v_order := creditgate.order_for_charge(v_charge, v_charge ->> 'id', v_charge ->> 'payment_intent');
  IF v_order.id IS NULL THEN
    RETURN creditgate.stripe_invoice_refunded(p_event);
  END IF;
  PERFORM creditgate.lock_account(v_order.account_id);
  SELECT * INTO v_order FROM creditgate.orders WHERE id = v_order.id FOR UPDATE;
  v_claw := CASE WHEN v_amount > 0
                 THEN floor(v_order.credits::numeric * least(v_refunded, v_amount) / v_amount)::bigint
                 ELSE 0 END - v_order.clawed_back;
  v_debt := creditgate.claw_back(v_order.account_id, v_order.stripe_session_id, v_claw, v_charge ->> 'id');
  UPDATE creditgate.orders SET
    clawed_back = clawed_back + greatest(v_claw, 0),
    refunded_minor = greatest(refunded_minor, v_refunded),
    stripe_charge_id = coalesce(stripe_charge_id, v_charge ->> 'id'),
    status = CASE WHEN status = 'disputed' THEN status
                  WHEN greatest(refunded_minor, v_refunded) >= v_amount THEN 'refunded'
                  ELSE 'partially_refunded' END,
    updated_at = now()
  WHERE id = v_order.id;
  RETURN jsonb_build_object('handled', true, 'outcome', CASE WHEN v_claw > 0 THEN 'clawed_back' ELSE 'already_clawed_back' END,
    'account_id', v_order.account_id, 'clawed_back', greatest(v_claw, 0), 'debt', v_debt);
END
$$;

-- The invoice.paid of 45_payments.sql, reading its period with invoice_period, and taking
-- back what refunds delivered before it are owed.
CREATE OR REPLACE FUNCTION creditgate.stripe_invoice_paid(p_event jsonb)
RETURNS jsonb LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v_inv jsonb := p_event #> '{data,object}';
  v_at bigint := coalesce((p_event ->> 'created')::bigint, 0);
  v_sub text := coalesce(p_event #>> '{data,object,parent,subscription_details,subscription}', v_inv ->> 'subscription');
  v_meta jsonb := coalesce(p_event #> '{data,object,parent,subscription_details,metadata}',
                           p_event #> '{data,object,subscription_details,metadata}', '{}');
  v_account_id text;
  v_account creditgate.accounts;
  v_plan text;
  v_start bigint;
  v_end bigint;
  v_charge_id text;
BEGIN
  IF v_sub IS NULL OR coalesce(v_inv ->> 'billing_reason', '') NOT IN ('subscription_create', 'subscription_cycle') THEN
    RETURN jsonb_build_object('handled', false, 'outcome', 'not_a_period_invoice');
  END IF;
  v_account_id := creditgate.stripe_account(ARRAY[v_meta ->> 'account_id'], v_inv ->> 'customer', v_sub);
  IF v_account_id IS NULL THEN
    RETURN jsonb_build_object('handled', false, 'outcome', 'unknown_account');
  END IF;
  v_account := creditgate.lock_account(v_account_id);
  PERFORM creditgate.remember_customer(v_account_id, v_inv ->> 'customer');
  IF creditgate.subscription_ended(v_sub, p_event ->> 'id') THEN
    RETURN jsonb_build_object('handled', false, 'outcome', 'subscription_ended', 'account_id', v_account_id);
  END IF;
  IF v_account.stripe_subscription_id IS DISTINCT FROM v_sub AND v_account.stripe_subscription_id IS NOT NULL THEN
    RETURN jsonb_build_object('handled', false, 'outcome', 'other_subscription', 'account_id', v_account_id);
  END IF;

  SELECT * INTO v_plan, v_start, v_end FROM creditgate.invoice_period(v_inv);
  IF v_plan IS NULL OR v_start IS NULL OR v_end IS NULL THEN
    RETURN jsonb_build_object('handled', false, 'outcome', 'unknown_price', 'account_id', v_account_id);
  END IF;
  IF v_at < v_account.subscription_version AND v_plan <> v_account.plan_id THEN
    RETURN jsonb_build_object('handled', false, 'outcome', 'stale', 'account_id', v_account_id);
  END IF;
  IF v_account.billing_source = 'stripe' AND to_timestamp(v_start) < v_account.period_start THEN
    RETURN jsonb_build_object('handled', false, 'outcome', 'stale_period', 'account_id', v_account_id);
  END IF;
  UPDATE creditgate.accounts SET stripe_subscription_id = v_sub,
         subscription_version = greatest(subscription_version, v_at)
   WHERE id = v_account_id RETURNING * INTO v_account;
  PERFORM creditgate.open_stripe_period(v_account, v_plan, to_timestamp(v_start), to_timestamp(v_end));
  SELECT min(charge_id) INTO v_charge_id FROM creditgate.invoice_refunds
  WHERE invoice_id = v_inv ->> 'id' AND account_id = v_account_id;
  IF v_charge_id IS NOT NULL THEN
    PERFORM creditgate.claw_back_invoice(v_inv ->> 'id', v_account_id, coalesce((v_inv ->> 'amount_paid')::bigint, 0),
                                         v_plan, to_timestamp(v_start), v_charge_id);
  END IF;
  RETURN jsonb_build_object('handled', true, 'outcome', 'period_paid', 'account_id', v_account_id, 'plan', v_plan);
END
$$;

-- The metrics of 105_allowance_overrides.sql, with subscription revenue net of refunds.
CREATE OR REPLACE FUNCTION public.creditgate_metrics(request jsonb)
RETURNS jsonb LANGUAGE sql STABLE SECURITY DEFINER SET search_path = '' AS $$
  WITH span AS (
    SELECT now() - make_interval(days => least(greatest(coalesce((request ->> 'days')::integer, 30), 1), 366)) AS since
  ), usage AS (
    SELECT u.* FROM creditgate.usage_events u, span WHERE u.created_at >= span.since
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

INSERT INTO creditgate.schema_migrations (version) VALUES ('109_subscription_refunds') ON CONFLICT DO NOTHING;
