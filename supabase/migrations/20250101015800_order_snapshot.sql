-- Generated from sql/118_order_snapshot.sql by `creditgate supabase-export`. Edit sql/118_order_snapshot.sql and
-- run the command again; never edit this copy.
-- What an order sold is what it grants. A pack's credits and key were read from the catalog
-- when the payment arrived, so an operator who changed a pack (a promo's bonus ended, a pack
-- moved to another key) while a checkout was open changed what that payer received. The
-- order keeps the pack's credits (since 45) and now its key from the moment it was made,
-- and the completion grants those. Orders made outside creditgate (Payment Links) still
-- take the catalog's.

ALTER TABLE creditgate.orders ADD COLUMN key text;
-- Orders already made were made for the pack's key of now (its credits they already keep).
UPDATE creditgate.orders o SET key = p.key FROM creditgate.packs p WHERE o.kind = 'pack' AND p.id = o.item_id;

-- The key an order's purchase was granted on: its grant's, else the order's, else the pack's.
CREATE OR REPLACE FUNCTION creditgate.order_key(o creditgate.orders)
RETURNS text LANGUAGE sql STABLE SET search_path = '' AS $$
  SELECT coalesce(
    (SELECT g.key FROM creditgate.grants g
     WHERE g.account_id = o.account_id AND g.external_ref = o.stripe_session_id AND g.source = 'purchase'),
    o.key,
    (SELECT p.key FROM creditgate.packs p WHERE p.id = o.item_id AND o.kind = 'pack'),
    'credits');
$$;

-- The order of 45_payments.sql, with the pack's key.
CREATE OR REPLACE FUNCTION public.creditgate_create_order(request jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  v_account creditgate.accounts := creditgate.lock_account(request ->> 'account_id');
  v_kind text := request ->> 'kind';
  v_item text := request ->> 'item';
  v_key text := request ->> 'idempotency_key';
  v_order creditgate.orders;
  v_price_id text;
  v_amount bigint;
  v_currency text;
  v_credits bigint := 0;
  v_pack_key text;
  v_paid_plan boolean;
BEGIN
  IF v_kind = 'pack' THEN
    SELECT stripe_price_id, price_minor, currency, credits + bonus_credits, key
      INTO v_price_id, v_amount, v_currency, v_credits, v_pack_key
      FROM creditgate.packs WHERE id = v_item AND active;
    IF NOT FOUND THEN
      PERFORM creditgate.fail(422, 'unknown_pack', jsonb_build_object('pack', v_item));
    END IF;
  ELSE
    SELECT stripe_price_id, price_minor, currency, price_minor > 0
      INTO v_price_id, v_amount, v_currency, v_paid_plan
      FROM creditgate.plans WHERE id = v_item AND active AND id <> 'anonymous';
    IF NOT FOUND THEN
      PERFORM creditgate.fail(422, 'unknown_plan', jsonb_build_object('plan', v_item));
    END IF;
    IF NOT v_paid_plan THEN
      PERFORM creditgate.fail(422, 'plan_not_purchasable', jsonb_build_object('plan', v_item,
        'reason', 'a free plan is not bought; cancel the subscription to return to it'));
    END IF;
  END IF;

  IF v_key IS NOT NULL THEN
    SELECT * INTO v_order FROM creditgate.orders WHERE account_id = v_account.id AND idempotency_key = v_key;
    IF FOUND THEN
      IF (v_order.kind, v_order.item_id) IS DISTINCT FROM (v_kind, v_item)
         OR v_order.success_url IS DISTINCT FROM request ->> 'success_url'
         OR v_order.cancel_url IS DISTINCT FROM request ->> 'cancel_url' THEN
        PERFORM creditgate.fail(409, 'idempotency_conflict',
          jsonb_build_object('idempotency_key', v_key, 'scope', 'checkout'));
      END IF;
      IF v_order.status = 'failed' AND v_order.stripe_session_id IS NULL THEN
        UPDATE creditgate.orders SET status = 'pending', updated_at = now() WHERE id = v_order.id
        RETURNING * INTO v_order;
      END IF;
      RETURN creditgate.order_answer(v_order) || jsonb_build_object('replayed', true,
        'stripe_price_id', v_price_id, 'stripe_customer_id', v_account.stripe_customer_id, 'email', v_account.email);
    END IF;
  END IF;

  IF coalesce((request ->> 'require_price')::boolean, false) AND v_price_id IS NULL THEN
    PERFORM creditgate.fail(409, 'price_not_configured', jsonb_build_object(v_kind, v_item,
      'reason', 'set stripe_price_id for it in the catalog and apply the catalog'));
  END IF;
  IF v_kind = 'plan' AND v_account.billing_source = 'stripe' AND v_account.stripe_subscription_id IS NOT NULL THEN
    -- A second subscription would bill twice; plan changes go through the subscription.
    PERFORM creditgate.fail(409, 'already_subscribed', jsonb_build_object('plan', v_account.plan_id,
      'subscription', v_account.stripe_subscription_id));
  END IF;

  INSERT INTO creditgate.orders (account_id, kind, item_id, amount_minor, currency, credits, key, idempotency_key,
                                 success_url, cancel_url)
  VALUES (v_account.id, v_kind, v_item, v_amount, v_currency, v_credits, v_pack_key, v_key,
          request ->> 'success_url', request ->> 'cancel_url')
  RETURNING * INTO v_order;
  RETURN creditgate.order_answer(v_order) || jsonb_build_object('replayed', false,
    'stripe_price_id', v_price_id, 'stripe_customer_id', v_account.stripe_customer_id, 'email', v_account.email);
END
$$;

-- The completion of 115_pack_keys.sql: an order made by creditgate grants its own credits and key.
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
  v_grant_key text;
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
  v_grant_key := v_pack.key;
  IF v_order.kind = 'pack' AND v_order.credits > 0 THEN
    -- What the payer was offered when the order was made, whatever the catalog says now.
    v_credits := v_order.credits;
    v_grant_key := coalesce(v_order.key, v_pack.key);
  END IF;

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
  v_grant := creditgate.add_grant(v_account_id, v_grant_key, 'purchase', v_credits, v_obj ->> 'id', NULL,
                                  'pack ' || v_pack.id);
  RETURN jsonb_build_object('handled', true,
    'outcome', CASE WHEN (v_grant ->> 'duplicate')::boolean THEN 'already_credited' ELSE 'credited' END,
    'account_id', v_account_id, 'pack', v_pack.id, 'key', v_grant_key, 'credits', v_credits, 'grant_id', v_grant -> 'grant_id');
END
$$;

SELECT creditgate.secure();

INSERT INTO creditgate.schema_migrations (version) VALUES ('118_order_snapshot') ON CONFLICT DO NOTHING;
