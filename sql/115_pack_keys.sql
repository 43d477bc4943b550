-- Packs for any balance key. A pack used to add only `credits`, so a plan's quota that ran
-- out (requests, tokens, a per-type bucket like lead_generation) could only be upgraded or
-- waited out. Now a pack names the key it tops up (`key`, default credits); buying it grants
-- that key, its refund and a lost dispute take that key back, and a denial for running short
-- of a key offers the packs of that key.

ALTER TABLE creditgate.packs ADD COLUMN key text NOT NULL DEFAULT 'credits';

-- The key an order's purchase was granted on: its grant's when there is one (a pack's key
-- may be edited after the sale, and what is taken back must be what was given), else the
-- pack's.
CREATE FUNCTION creditgate.order_key(o creditgate.orders)
RETURNS text LANGUAGE sql STABLE SET search_path = '' AS $$
  SELECT coalesce(
    (SELECT g.key FROM creditgate.grants g
     WHERE g.account_id = o.account_id AND g.external_ref = o.stripe_session_id AND g.source = 'purchase'),
    (SELECT p.key FROM creditgate.packs p WHERE p.id = o.item_id AND o.kind = 'pack'),
    'credits');
$$;

-- The packs on sale for one key, or all of them (NULL): each says its key, so a catalog
-- reader can tell a credit pack from a top-up of a quota.
CREATE FUNCTION creditgate.packs_for_sale(p_key text)
RETURNS jsonb LANGUAGE sql STABLE SET search_path = '' AS $$
  SELECT coalesce(jsonb_agg(jsonb_build_object('id', id, 'name', name, 'price_minor', price_minor,
           'currency', currency, 'key', key, 'credits', credits, 'bonus_credits', bonus_credits)
         ORDER BY display_order, price_minor), '[]')
  FROM creditgate.packs WHERE active AND (p_key IS NULL OR key = p_key);
$$;

-- The catalog read of 30_catalog.sql calls this one: every pack, with its key.
CREATE OR REPLACE FUNCTION creditgate.packs_for_sale()
RETURNS jsonb LANGUAGE sql STABLE SET search_path = '' AS $$
  SELECT creditgate.packs_for_sale(NULL::text);
$$;

-- The order answer of 45_payments.sql, with the key (the simulated checkout page names it).
CREATE OR REPLACE FUNCTION creditgate.order_answer(o creditgate.orders)
RETURNS jsonb LANGUAGE sql STABLE SET search_path = '' AS $$
  SELECT jsonb_build_object(
    'order_id', o.id, 'account_id', o.account_id, 'kind', o.kind, 'item', o.item_id, 'status', o.status,
    'amount_minor', o.amount_minor, 'currency', o.currency, 'credits', o.credits, 'key', creditgate.order_key(o),
    'session_id', o.stripe_session_id, 'checkout_url', o.checkout_url,
    'success_url', o.success_url, 'cancel_url', o.cancel_url,
    'name', CASE o.kind WHEN 'pack' THEN (SELECT name FROM creditgate.packs WHERE id = o.item_id)
                        ELSE (SELECT name FROM creditgate.plans WHERE id = o.item_id) END,
    'interval', CASE WHEN o.kind = 'plan' THEN (SELECT billing_interval FROM creditgate.plans WHERE id = o.item_id) END);
$$;

-- The checkout completion of 45_payments.sql: the pack's key is granted, not always credits.
CREATE OR REPLACE FUNCTION creditgate.stripe_checkout_paid(p_event jsonb)
RETURNS jsonb LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v_obj jsonb := p_event #> '{data,object}';
  v_meta jsonb := coalesce(p_event #> '{data,object,metadata}', '{}');
  v_line jsonb := coalesce(p_event #> '{expanded,line_items,data,0}', p_event #> '{data,object,line_items,data,0}');
  v_account creditgate.accounts;
  v_account_id text;
  v_pack creditgate.packs;
  v_plan text;
  v_order creditgate.orders;
  v_quantity bigint := 1;
  v_credits bigint;
  v_grant jsonb;
BEGIN
  v_account_id := creditgate.stripe_account(ARRAY[v_meta ->> 'account_id', v_obj ->> 'client_reference_id'],
                                            v_obj ->> 'customer');
  IF v_account_id IS NULL THEN
    RETURN jsonb_build_object('handled', false, 'outcome', 'unknown_account');
  END IF;
  v_account := creditgate.lock_account(v_account_id);
  PERFORM creditgate.remember_customer(v_account_id, v_obj ->> 'customer');
  SELECT * INTO v_order FROM creditgate.orders
   WHERE account_id = v_account_id
     AND (id = creditgate.as_uuid(v_meta ->> 'order_id') OR stripe_session_id = v_obj ->> 'id')
   ORDER BY id = creditgate.as_uuid(v_meta ->> 'order_id') DESC LIMIT 1
   FOR UPDATE;

  IF p_event ->> 'type' = 'checkout.session.completed'
     AND coalesce(v_obj ->> 'payment_status', '') NOT IN ('paid', 'no_payment_required') THEN
    -- A bank debit still settling: async_payment_succeeded or _failed follows.
    UPDATE creditgate.orders SET stripe_session_id = coalesce(stripe_session_id, v_obj ->> 'id'),
           stripe_payment_intent = coalesce(stripe_payment_intent, v_obj ->> 'payment_intent'), updated_at = now()
     WHERE id = v_order.id;
    RETURN jsonb_build_object('handled', true, 'outcome', 'awaiting_payment', 'account_id', v_account_id);
  END IF;

  IF v_obj ->> 'mode' = 'subscription' THEN
    UPDATE creditgate.orders SET status = 'paid', stripe_session_id = coalesce(stripe_session_id, v_obj ->> 'id'),
           updated_at = now()
     WHERE id = v_order.id AND status IN ('pending', 'expired', 'failed');
    IF v_obj ->> 'subscription' IS NOT NULL THEN
      IF jsonb_typeof(p_event #> '{expanded,subscription}') = 'object' THEN
        -- The subscription as fetched at delivery: applied like its own event, under
        -- this event's time, so a newer subscription event still wins.
        RETURN creditgate.stripe_subscription_changed(jsonb_build_object(
          'id', p_event ->> 'id', 'type', 'customer.subscription.updated', 'created', p_event -> 'created',
          'data', jsonb_build_object('object', p_event #> '{expanded,subscription}')));
      END IF;
      -- The subscription's own events carry its plan and period.
      RETURN jsonb_build_object('handled', true, 'outcome', 'subscription_started', 'account_id', v_account_id);
    END IF;
    -- No subscription behind it: the simulated payment mode, where the plan bills locally.
    v_plan := creditgate.stripe_plan(v_line #>> '{price,id}', coalesce(v_meta ->> 'plan', v_order.item_id));
    IF v_plan IS NULL THEN
      RETURN jsonb_build_object('handled', false, 'outcome', 'unknown_plan', 'account_id', v_account_id);
    END IF;
    IF v_plan <> v_account.plan_id THEN
      PERFORM creditgate.apply_plan(v_account, v_plan, now(), now() + interval '1 month', 'local');
    END IF;
    RETURN jsonb_build_object('handled', true, 'outcome', 'plan_applied', 'account_id', v_account_id, 'plan', v_plan);
  END IF;
  IF v_obj ->> 'mode' IS DISTINCT FROM 'payment' THEN
    RETURN jsonb_build_object('handled', false, 'outcome', 'not_a_payment', 'account_id', v_account_id);
  END IF;

  -- A deactivated pack bought before it was deactivated is still credited.
  SELECT * INTO v_pack FROM creditgate.packs WHERE id = coalesce(v_meta ->> 'pack', v_order.item_id);
  IF NOT FOUND THEN
    SELECT * INTO v_pack FROM creditgate.packs WHERE stripe_price_id = v_line #>> '{price,id}';
    v_quantity := greatest(coalesce((v_line ->> 'quantity')::bigint, 1), 1);
  END IF;
  IF v_pack.id IS NULL THEN
    RETURN jsonb_build_object('handled', false, 'outcome', 'unknown_pack', 'account_id', v_account_id);
  END IF;
  v_credits := (v_pack.credits + v_pack.bonus_credits) * v_quantity;

  IF v_order.id IS NULL THEN
    -- A Payment Link or a session made outside creditgate: the order is recorded now.
    INSERT INTO creditgate.orders (account_id, kind, item_id, status, amount_minor, currency, credits,
                                   stripe_session_id, stripe_payment_intent)
    VALUES (v_account_id, 'pack', v_pack.id, 'paid', coalesce((v_obj ->> 'amount_total')::bigint, v_pack.price_minor),
            coalesce(v_obj ->> 'currency', v_pack.currency), v_credits, v_obj ->> 'id', v_obj ->> 'payment_intent')
    ON CONFLICT (stripe_session_id) DO NOTHING;
  ELSE
    UPDATE creditgate.orders SET
      status = CASE WHEN status IN ('pending', 'expired', 'failed') THEN 'paid' ELSE status END,
      credits = v_credits,
      amount_minor = coalesce((v_obj ->> 'amount_total')::bigint, amount_minor),
      stripe_session_id = coalesce(stripe_session_id, v_obj ->> 'id'),
      stripe_payment_intent = coalesce(stripe_payment_intent, v_obj ->> 'payment_intent'),
      updated_at = now()
    WHERE id = v_order.id;
  END IF;

  -- The session id is the grant's external_ref: a session is credited once, whichever
  -- event (or how many deliveries of it) brings the news.
  v_grant := creditgate.add_grant(v_account_id, v_pack.key, 'purchase', v_credits, v_obj ->> 'id', NULL,
                                  'pack ' || v_pack.id);
  RETURN jsonb_build_object('handled', true,
    'outcome', CASE WHEN (v_grant ->> 'duplicate')::boolean THEN 'already_credited' ELSE 'credited' END,
    'account_id', v_account_id, 'pack', v_pack.id, 'key', v_pack.key, 'credits', v_credits, 'grant_id', v_grant -> 'grant_id');
END
$$;

-- The refund of 109_subscription_refunds.sql: a pack's claw-back takes the key it granted.
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
  v_debt := creditgate.claw_back(v_order.account_id, v_order.stripe_session_id, v_claw, v_charge ->> 'id',
                                 creditgate.order_key(v_order));
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

-- The dispute of 45_payments.sql: a lost one takes back the key the pack granted.
CREATE OR REPLACE FUNCTION creditgate.stripe_dispute(p_event jsonb)
RETURNS jsonb LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v_dispute jsonb := p_event #> '{data,object}';
  v_charge jsonb := coalesce(p_event #> '{expanded,charge}', '{}');
  v_closed boolean := p_event ->> 'type' = 'charge.dispute.closed';
  v_status text := v_dispute ->> 'status';
  v_order creditgate.orders;
  v_account_id text;
  v_row creditgate.disputes;
BEGIN
  v_order := creditgate.order_for_charge(v_charge, v_dispute ->> 'charge', v_dispute ->> 'payment_intent');
  v_account_id := coalesce(v_order.account_id,
    (SELECT account_id FROM creditgate.disputes WHERE id = v_dispute ->> 'id'),
    creditgate.stripe_account(ARRAY[v_charge #>> '{metadata,account_id}'], v_charge ->> 'customer'));
  IF v_account_id IS NULL THEN
    RETURN jsonb_build_object('handled', false, 'outcome', 'unknown_account');
  END IF;
  PERFORM creditgate.lock_account(v_account_id);

  INSERT INTO creditgate.disputes (id, account_id, order_id, charge_id, amount_minor, currency, reason, status, closed_at)
  VALUES (v_dispute ->> 'id', v_account_id, v_order.id, v_dispute ->> 'charge', (v_dispute ->> 'amount')::bigint,
          v_dispute ->> 'currency', v_dispute ->> 'reason', v_status, CASE WHEN v_closed THEN now() END)
  ON CONFLICT (id) DO NOTHING
  RETURNING * INTO v_row;
  IF v_row.id IS NULL THEN
    SELECT * INTO v_row FROM creditgate.disputes WHERE id = v_dispute ->> 'id' FOR UPDATE;
    IF v_row.closed_at IS NOT NULL THEN
      -- Closed already (a late `created`, or a repeated close): decided, nothing to redo.
      RETURN jsonb_build_object('handled', false, 'outcome', 'dispute_already_closed', 'account_id', v_account_id);
    END IF;
    UPDATE creditgate.disputes SET status = v_status, closed_at = CASE WHEN v_closed THEN now() END
     WHERE id = v_row.id;
  END IF;

  IF NOT v_closed THEN
    UPDATE creditgate.orders SET status = 'disputed', stripe_charge_id = coalesce(stripe_charge_id, v_dispute ->> 'charge'),
           updated_at = now() WHERE id = v_order.id;
    UPDATE creditgate.accounts SET status = 'disputed' WHERE id = v_account_id;
    RETURN jsonb_build_object('handled', true, 'outcome', 'account_disputed', 'account_id', v_account_id);
  END IF;

  IF v_status IN ('won', 'warning_closed') THEN
    UPDATE creditgate.orders SET status = CASE WHEN refunded_minor >= amount_minor AND refunded_minor > 0 THEN 'refunded'
                                               WHEN refunded_minor > 0 THEN 'partially_refunded' ELSE 'paid' END,
           updated_at = now()
     WHERE id = v_order.id AND status = 'disputed';
    UPDATE creditgate.accounts SET status = 'active' WHERE id = v_account_id
       AND NOT EXISTS (SELECT 1 FROM creditgate.disputes WHERE account_id = v_account_id AND closed_at IS NULL);
    RETURN jsonb_build_object('handled', true, 'outcome', 'dispute_won', 'account_id', v_account_id);
  END IF;
  IF v_order.id IS NOT NULL THEN
    SELECT * INTO v_order FROM creditgate.orders WHERE id = v_order.id FOR UPDATE;
    PERFORM creditgate.claw_back(v_account_id, v_order.stripe_session_id, v_order.credits - v_order.clawed_back,
                                 v_dispute ->> 'id', creditgate.order_key(v_order));
    UPDATE creditgate.orders SET clawed_back = credits, updated_at = now() WHERE id = v_order.id;
  END IF;
  RETURN jsonb_build_object('handled', true, 'outcome', 'dispute_lost', 'account_id', v_account_id);
END
$$;

-- The settings of 113_denial_alerts.sql, with each pack's key. The key rides here, not in
-- creditgate_apply_catalog, so that large function is not restated; this call runs on
-- every apply (even when the catalog's hash is unchanged) and sets only what differs.
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
  -- Only when given: the tests and tools that set one setting must not reset the packs.
  IF request ? 'pack_keys' THEN
    IF jsonb_typeof(request -> 'pack_keys') <> 'object' OR EXISTS (
         SELECT 1 FROM jsonb_each(request -> 'pack_keys') e
         WHERE jsonb_typeof(e.value) <> 'string' OR NOT creditgate.known_key(e.value #>> '{}')) THEN
      PERFORM creditgate.fail(422, 'invalid_request', jsonb_build_object('errors', jsonb_build_array(
        jsonb_build_object('loc', jsonb_build_array('body', 'pack_keys'),
                           'msg', 'pack_keys maps pack ids to balance keys a plan or feature meters'))));
    END IF;
    -- Only the packs listed: one the catalog retired keeps the key it was sold on, since a
    -- checkout of it may still complete.
    UPDATE creditgate.packs p SET key = request -> 'pack_keys' ->> p.id
     WHERE request -> 'pack_keys' ? p.id AND p.key IS DISTINCT FROM request -> 'pack_keys' ->> p.id;
  END IF;
  RETURN (SELECT jsonb_build_object('periods', period_mode, 'alert_daily_cost_pico_usd', alert_daily_cost_pico_usd,
                                    'allowance_notices', to_jsonb(allowance_notice_percents),
                                    'alert_daily_denials', alert_daily_denials)
          FROM creditgate.settings);
END
$$;

-- The denial of 99_answers_and_names.sql: a quota that ran out offers the packs of its key
-- (none, unless the catalog sells some), and running short of credits only credit packs.
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
                         'packs', creditgate.packs_for_sale(p_key)));
  END IF;
  SELECT * INTO v_account FROM creditgate.accounts WHERE id = p_balance.account_id;
  PERFORM creditgate.fail(402, 'quota_exhausted',
    jsonb_build_object('allowed', false, 'key', p_key, 'required', p_required,
                       'available', coalesce(p_balance.available, 0), 'debt', coalesce(p_balance.debt, 0),
                       'packs', creditgate.packs_for_sale(p_key), 'resets_at', v_account.period_end,
                       'upgrade_to', creditgate.plans_with_more(p_key, v_account.plan_id)));
END
$$;

-- The account's orders of 70_reads.sql: a pack order says the key it tops up.
CREATE OR REPLACE FUNCTION public.creditgate_orders(request jsonb)
RETURNS jsonb LANGUAGE sql STABLE SECURITY DEFINER SET search_path = '' AS $$
  SELECT jsonb_build_object('items', coalesce(jsonb_agg(jsonb_build_object(
      'order_id', o.id, 'kind', o.kind, 'item', o.item_id, 'status', o.status, 'amount_minor', o.amount_minor,
      'currency', o.currency, 'credits', o.credits, 'refunded_minor', o.refunded_minor,
      'key', CASE WHEN o.kind = 'pack' THEN creditgate.order_key(o) END,
      'checkout_session_id', o.stripe_session_id, 'created_at', o.created_at, 'updated_at', o.updated_at)
    ORDER BY o.created_at DESC), '[]'))
  FROM creditgate.orders o WHERE o.account_id = request ->> 'account_id';
$$;

SELECT creditgate.secure();
