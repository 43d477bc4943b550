-- Generated from sql/45_payments.sql by `creditgate supabase-export`. Edit sql/45_payments.sql and
-- run the command again; never edit this copy.
-- Money in: orders made by checkout, and Stripe's events applied exactly once.
--
-- An event is stored and applied in one transaction, so a crash leaves neither. Its id
-- makes a second delivery a no-op; the business key (checkout session, plan + period,
-- the order's clawed-back total) makes a second event about the same thing one too.
-- Stripe does not promise order, so subscription state carries the newest event time
-- applied (accounts.subscription_version) and anything older is ignored.

ALTER TABLE creditgate.orders
  ADD COLUMN success_url text,
  ADD COLUMN cancel_url text;
CREATE INDEX orders_payment_intent ON creditgate.orders (stripe_payment_intent) WHERE stripe_payment_intent IS NOT NULL;
CREATE INDEX orders_charge ON creditgate.orders (stripe_charge_id) WHERE stripe_charge_id IS NOT NULL;

-- Every verified event, handled or not: unknown types and unknown accounts are kept
-- so nothing Stripe said is lost.
CREATE TABLE creditgate.stripe_events (
  id          text PRIMARY KEY,
  type        text NOT NULL,
  object_id   text,
  account_id  text,
  created     bigint,
  livemode    boolean,
  handled     boolean NOT NULL DEFAULT false,
  outcome     text,
  payload     jsonb NOT NULL,
  received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stripe_events_object ON creditgate.stripe_events (object_id, type);
CREATE INDEX stripe_events_unhandled ON creditgate.stripe_events (received_at) WHERE NOT handled;

CREATE TABLE creditgate.disputes (
  id           text PRIMARY KEY,
  account_id   text NOT NULL REFERENCES creditgate.accounts (id),
  order_id     uuid REFERENCES creditgate.orders (id),
  charge_id    text,
  amount_minor bigint NOT NULL CHECK (amount_minor >= 0),
  currency     text NOT NULL,
  reason       text,
  status       text NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  closed_at    timestamptz
);
CREATE INDEX disputes_open ON creditgate.disputes (account_id) WHERE closed_at IS NULL;

-- ───────────────────────────────────────────────────────────────── helpers

CREATE FUNCTION creditgate.as_uuid(p text)
RETURNS uuid LANGUAGE sql IMMUTABLE SET search_path = '' AS $$
  SELECT CASE WHEN p ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN p::uuid END;
$$;

CREATE FUNCTION creditgate.unix_time(p text)
RETURNS timestamptz LANGUAGE sql IMMUTABLE SET search_path = '' AS $$
  SELECT CASE WHEN p ~ '^[0-9]{1,12}$' THEN to_timestamp(p::bigint) END;
$$;

-- The first hint naming an existing account, else the account of the Stripe customer,
-- else the one holding the subscription.
CREATE FUNCTION creditgate.stripe_account(p_hints text[], p_customer text, p_subscription text DEFAULT NULL)
RETURNS text LANGUAGE sql STABLE SET search_path = '' AS $$
  SELECT coalesce(
    (SELECT a.id FROM unnest(p_hints) WITH ORDINALITY h(id, n)
     JOIN creditgate.accounts a ON a.id = h.id ORDER BY h.n LIMIT 1),
    (SELECT a.id FROM creditgate.accounts a WHERE a.stripe_customer_id = p_customer),
    (SELECT a.id FROM creditgate.accounts a WHERE a.stripe_subscription_id = p_subscription LIMIT 1));
$$;

CREATE FUNCTION creditgate.remember_customer(p_account_id text, p_customer text)
RETURNS void LANGUAGE sql SET search_path = '' AS $$
  UPDATE creditgate.accounts a SET stripe_customer_id = p_customer
   WHERE a.id = p_account_id AND a.stripe_customer_id IS NULL AND p_customer IS NOT NULL
     AND NOT EXISTS (SELECT 1 FROM creditgate.accounts o WHERE o.stripe_customer_id = p_customer);
$$;

-- The price decides (a plan changed in the billing portal keeps its checkout metadata);
-- the metadata is the fallback for catalogs without Stripe price ids.
CREATE FUNCTION creditgate.stripe_plan(p_price text, p_fallback text)
RETURNS text LANGUAGE sql STABLE SET search_path = '' AS $$
  SELECT coalesce((SELECT id FROM creditgate.plans WHERE stripe_price_id = p_price AND active),
                  (SELECT id FROM creditgate.plans WHERE id = p_fallback AND active));
$$;

CREATE FUNCTION creditgate.free_plan()
RETURNS text LANGUAGE sql STABLE SET search_path = '' AS $$
  SELECT id FROM creditgate.plans WHERE active AND price_minor = 0 AND id <> 'anonymous'
  ORDER BY id = 'free' DESC, display_order, id LIMIT 1;
$$;

CREATE FUNCTION creditgate.subscription_ended(p_subscription text, p_event_id text)
RETURNS boolean LANGUAGE sql STABLE SET search_path = '' AS $$
  SELECT EXISTS (SELECT 1 FROM creditgate.stripe_events
                 WHERE object_id = p_subscription AND type = 'customer.subscription.deleted' AND id <> p_event_id);
$$;

CREATE FUNCTION creditgate.order_answer(o creditgate.orders)
RETURNS jsonb LANGUAGE sql STABLE SET search_path = '' AS $$
  SELECT jsonb_build_object(
    'order_id', o.id, 'account_id', o.account_id, 'kind', o.kind, 'item', o.item_id, 'status', o.status,
    'amount_minor', o.amount_minor, 'currency', o.currency, 'credits', o.credits,
    'session_id', o.stripe_session_id, 'checkout_url', o.checkout_url,
    'success_url', o.success_url, 'cancel_url', o.cancel_url,
    'name', CASE o.kind WHEN 'pack' THEN (SELECT name FROM creditgate.packs WHERE id = o.item_id)
                        ELSE (SELECT name FROM creditgate.plans WHERE id = o.item_id) END,
    'interval', CASE WHEN o.kind = 'plan' THEN (SELECT billing_interval FROM creditgate.plans WHERE id = o.item_id) END);
$$;

-- A Stripe period opens: what is left of earlier allowances ends now (a renewal paid a
-- little early must not stack two months), then the plan's allowance for the period is
-- granted, once per plan and period. An older period than the current one is ignored.
CREATE FUNCTION creditgate.open_stripe_period(p_account creditgate.accounts, p_plan text,
  p_start timestamptz, p_end timestamptz)
RETURNS creditgate.accounts LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
  IF p_account.billing_source = 'stripe' AND p_start < p_account.period_start THEN
    RETURN p_account;
  END IF;
  IF p_start IS DISTINCT FROM p_account.period_start THEN
    UPDATE creditgate.grants SET expires_at = now()
     WHERE account_id = p_account.id AND source = 'allowance' AND live
       AND (expires_at IS NULL OR expires_at > now()) AND period_start IS DISTINCT FROM p_start;
    PERFORM creditgate.expire_grants(p_account.id);
  END IF;
  RETURN creditgate.apply_plan(p_account, p_plan, p_start, p_end, 'stripe');
END
$$;

-- Takes back `p_amount` of a purchase: first what is left of its grant (as far as it is
-- not reserved), then what was spent of it, from whatever else is available, the rest as
-- debt. One journal line of kind 'clawback'.
CREATE FUNCTION creditgate.claw_back(p_account_id text, p_grant_ref text, p_amount bigint, p_ref text)
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
  PERFORM creditgate.ensure_balance(p_account_id, 'credits');
  SELECT * INTO v_grant FROM creditgate.grants WHERE account_id = p_account_id AND external_ref = p_grant_ref;
  SELECT available INTO v_available FROM creditgate.balances WHERE account_id = p_account_id AND key = 'credits';
  v_take := least(coalesce(v_grant.remaining, 0), v_available, p_amount);
  IF v_take > 0 THEN
    UPDATE creditgate.grants SET remaining = remaining - v_take WHERE id = v_grant.id;
  END IF;
  v_paid := least(v_available - v_take, p_amount - v_take);
  UPDATE creditgate.balances
     SET available = available - v_take - v_paid, debt = debt + (p_amount - v_take - v_paid)
   WHERE account_id = p_account_id AND key = 'credits'
  RETURNING * INTO v_balance;
  PERFORM creditgate.burn_grants(p_account_id, 'credits', v_paid);
  PERFORM creditgate.journal(v_balance, 'clawback', -p_amount, v_grant.id, NULL, 'purchase', p_ref);
  RETURN p_amount - v_take - v_paid;
END
$$;

-- ───────────────────────────────────────────────────────────────── checkout

-- The order a checkout pays for, made before Stripe is called. The caller's key makes a
-- replay return the same order (and, once attached, the same session).
CREATE FUNCTION public.creditgate_create_order(request jsonb)
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
  v_paid_plan boolean;
BEGIN
  IF v_kind = 'pack' THEN
    SELECT stripe_price_id, price_minor, currency, credits + bonus_credits
      INTO v_price_id, v_amount, v_currency, v_credits
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

  INSERT INTO creditgate.orders (account_id, kind, item_id, amount_minor, currency, credits, idempotency_key,
                                 success_url, cancel_url)
  VALUES (v_account.id, v_kind, v_item, v_amount, v_currency, v_credits, v_key,
          request ->> 'success_url', request ->> 'cancel_url')
  RETURNING * INTO v_order;
  RETURN creditgate.order_answer(v_order) || jsonb_build_object('replayed', false,
    'stripe_price_id', v_price_id, 'stripe_customer_id', v_account.stripe_customer_id, 'email', v_account.email);
END
$$;

-- The Stripe customer is created once per account: the first one remembered wins and is
-- the one every caller goes on with.
CREATE FUNCTION public.creditgate_set_stripe_customer(request jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  v_account creditgate.accounts := creditgate.lock_account(request ->> 'account_id');
BEGIN
  PERFORM creditgate.remember_customer(v_account.id, request ->> 'customer_id');
  RETURN jsonb_build_object('account_id', v_account.id, 'stripe_customer_id',
    (SELECT stripe_customer_id FROM creditgate.accounts WHERE id = v_account.id));
END
$$;

-- Attaches the checkout session to its order (the first one attached wins), or marks an
-- order whose session could not be made as failed.
CREATE FUNCTION public.creditgate_attach_checkout(request jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  v_order creditgate.orders;
BEGIN
  IF coalesce((request ->> 'failed')::boolean, false) THEN
    UPDATE creditgate.orders SET status = 'failed', updated_at = now()
     WHERE id = creditgate.as_uuid(request ->> 'order_id') AND stripe_session_id IS NULL AND status = 'pending';
  ELSE
    UPDATE creditgate.orders SET stripe_session_id = coalesce(stripe_session_id, request ->> 'session_id'),
           checkout_url = CASE WHEN stripe_session_id IS NULL THEN request ->> 'checkout_url' ELSE checkout_url END,
           updated_at = now()
     WHERE id = creditgate.as_uuid(request ->> 'order_id');
  END IF;
  SELECT * INTO v_order FROM creditgate.orders WHERE id = creditgate.as_uuid(request ->> 'order_id');
  IF NOT FOUND THEN
    PERFORM creditgate.fail(404, 'order_not_found', jsonb_build_object('order_id', request ->> 'order_id'));
  END IF;
  RETURN creditgate.order_answer(v_order);
END
$$;

CREATE FUNCTION public.creditgate_checkout_session(request jsonb)
RETURNS jsonb LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  v_order creditgate.orders;
BEGIN
  SELECT * INTO v_order FROM creditgate.orders WHERE stripe_session_id = request ->> 'session_id';
  IF NOT FOUND THEN
    PERFORM creditgate.fail(404, 'checkout_not_found', jsonb_build_object('session_id', request ->> 'session_id'));
  END IF;
  RETURN creditgate.order_answer(v_order);
END
$$;

-- ───────────────────────────────────────────────────────────────── events: checkout

CREATE FUNCTION creditgate.stripe_checkout_paid(p_event jsonb)
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
  v_grant := creditgate.add_grant(v_account_id, 'credits', 'purchase', v_credits, v_obj ->> 'id', NULL,
                                  'pack ' || v_pack.id);
  RETURN jsonb_build_object('handled', true,
    'outcome', CASE WHEN (v_grant ->> 'duplicate')::boolean THEN 'already_credited' ELSE 'credited' END,
    'account_id', v_account_id, 'pack', v_pack.id, 'credits', v_credits, 'grant_id', v_grant -> 'grant_id');
END
$$;

CREATE FUNCTION creditgate.stripe_checkout_closed(p_event jsonb, p_status text)
RETURNS jsonb LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v_obj jsonb := p_event #> '{data,object}';
  v_order creditgate.orders;
BEGIN
  UPDATE creditgate.orders SET status = p_status,
         stripe_session_id = coalesce(stripe_session_id, v_obj ->> 'id'), updated_at = now()
   WHERE (id = creditgate.as_uuid(v_obj #>> '{metadata,order_id}') OR stripe_session_id = v_obj ->> 'id')
     AND status = 'pending'
  RETURNING * INTO v_order;
  IF v_order.id IS NULL THEN
    RETURN jsonb_build_object('handled', false, 'outcome', 'no_pending_order',
      'account_id', creditgate.stripe_account(ARRAY[v_obj #>> '{metadata,account_id}', v_obj ->> 'client_reference_id'],
                                              v_obj ->> 'customer'));
  END IF;
  RETURN jsonb_build_object('handled', true, 'outcome', 'order_' || p_status, 'account_id', v_order.account_id);
END
$$;

-- ───────────────────────────────────────────────────────────────── events: subscriptions

CREATE FUNCTION creditgate.stripe_subscription_changed(p_event jsonb)
RETURNS jsonb LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v_sub jsonb := p_event #> '{data,object}';
  v_item jsonb := p_event #> '{data,object,items,data,0}';
  v_at bigint := coalesce((p_event ->> 'created')::bigint, 0);
  v_status text := coalesce(v_sub ->> 'status', '');
  v_deleted boolean := p_event ->> 'type' = 'customer.subscription.deleted';
  v_account_id text;
  v_account creditgate.accounts;
  v_plan text;
  v_free text;
BEGIN
  v_account_id := creditgate.stripe_account(ARRAY[v_sub #>> '{metadata,account_id}'], v_sub ->> 'customer', v_sub ->> 'id');
  IF v_account_id IS NULL THEN
    RETURN jsonb_build_object('handled', false, 'outcome', 'unknown_account');
  END IF;
  v_account := creditgate.lock_account(v_account_id);
  PERFORM creditgate.remember_customer(v_account_id, v_sub ->> 'customer');
  IF NOT v_deleted AND creditgate.subscription_ended(v_sub ->> 'id', p_event ->> 'id') THEN
    RETURN jsonb_build_object('handled', false, 'outcome', 'subscription_ended', 'account_id', v_account_id);
  END IF;
  IF v_at < v_account.subscription_version THEN
    RETURN jsonb_build_object('handled', false, 'outcome', 'stale', 'account_id', v_account_id);
  END IF;
  v_deleted := v_deleted OR v_status IN ('canceled', 'incomplete_expired', 'unpaid', 'paused');
  IF v_account.stripe_subscription_id IS DISTINCT FROM v_sub ->> 'id' AND v_account.stripe_subscription_id IS NOT NULL
     AND (v_deleted OR v_status = 'incomplete') THEN
    RETURN jsonb_build_object('handled', false, 'outcome', 'other_subscription', 'account_id', v_account_id);
  END IF;
  UPDATE creditgate.accounts SET subscription_version = v_at WHERE id = v_account_id RETURNING * INTO v_account;

  IF v_deleted THEN
    v_free := creditgate.free_plan();
    IF v_free IS NOT NULL AND (v_account.plan_id <> v_free OR v_account.billing_source = 'stripe') THEN
      v_account := creditgate.apply_plan(v_account, v_free, now(), now() + interval '1 month', 'local');
    END IF;
    -- unpaid or paused may become active again: keep which subscription it is.
    UPDATE creditgate.accounts SET stripe_subscription_id =
             CASE WHEN v_status IN ('unpaid', 'paused') AND p_event ->> 'type' <> 'customer.subscription.deleted'
                  THEN v_sub ->> 'id' END
     WHERE id = v_account_id;
    RETURN jsonb_build_object('handled', true, 'outcome', 'downgraded', 'account_id', v_account_id, 'plan', v_free);
  END IF;
  IF v_status NOT IN ('active', 'trialing', 'past_due') THEN
    RETURN jsonb_build_object('handled', true, 'outcome', 'awaiting_payment', 'account_id', v_account_id);
  END IF;

  v_plan := creditgate.stripe_plan(v_item #>> '{price,id}', v_sub #>> '{metadata,plan}');
  IF v_plan IS NULL THEN
    RETURN jsonb_build_object('handled', false, 'outcome', 'unknown_price', 'account_id', v_account_id);
  END IF;
  UPDATE creditgate.accounts SET stripe_subscription_id = v_sub ->> 'id' WHERE id = v_account_id
  RETURNING * INTO v_account;
  IF v_plan = v_account.plan_id AND v_account.billing_source = 'stripe' THEN
    -- Same plan: a renewal's allowance comes with its invoice.paid, not before.
    RETURN jsonb_build_object('handled', true, 'outcome', 'unchanged', 'account_id', v_account_id, 'plan', v_plan);
  END IF;
  PERFORM creditgate.open_stripe_period(v_account, v_plan,
    creditgate.unix_time(coalesce(v_item ->> 'current_period_start', v_sub ->> 'current_period_start')),
    creditgate.unix_time(coalesce(v_item ->> 'current_period_end', v_sub ->> 'current_period_end')));
  RETURN jsonb_build_object('handled', true, 'outcome', 'plan_applied', 'account_id', v_account_id, 'plan', v_plan);
END
$$;

-- An invoice of a subscription's start or renewal was paid: the period on its plan line
-- opens with its allowance. The plan + period key grants it once, whether this event or
-- the subscription's own got there first.
CREATE FUNCTION creditgate.stripe_invoice_paid(p_event jsonb)
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

  SELECT p.id, (l #>> '{period,start}')::bigint, (l #>> '{period,end}')::bigint INTO v_plan, v_start, v_end
  FROM jsonb_array_elements(coalesce(v_inv #> '{lines,data}', '[]')) l
  JOIN creditgate.plans p ON p.active
   AND p.stripe_price_id = coalesce(l #>> '{pricing,price_details,price}', l #>> '{price,id}')
  ORDER BY (l #>> '{period,start}')::bigint DESC LIMIT 1;
  IF v_plan IS NULL THEN
    v_plan := creditgate.stripe_plan(NULL, v_meta ->> 'plan');
    v_start := (v_inv #>> '{lines,data,0,period,start}')::bigint;
    v_end := (v_inv #>> '{lines,data,0,period,end}')::bigint;
  END IF;
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
  RETURN jsonb_build_object('handled', true, 'outcome', 'period_paid', 'account_id', v_account_id, 'plan', v_plan);
END
$$;

-- ───────────────────────────────────────────────────────────────── events: after payment

-- The pack order a charge paid for: by the order id in its metadata (copied from the
-- PaymentIntent), else by the charge or the PaymentIntent recorded on the order.
CREATE FUNCTION creditgate.order_for_charge(p_charge jsonb, p_charge_id text, p_payment_intent text)
RETURNS creditgate.orders LANGUAGE sql STABLE SET search_path = '' AS $$
  SELECT * FROM creditgate.orders
  WHERE kind = 'pack' AND (id = creditgate.as_uuid(p_charge #>> '{metadata,order_id}')
        OR stripe_charge_id = p_charge_id OR stripe_payment_intent = p_payment_intent)
  ORDER BY id = creditgate.as_uuid(p_charge #>> '{metadata,order_id}') DESC, created_at LIMIT 1;
$$;

-- `amount_refunded` is cumulative: the order's share to take back is the refunded share
-- of its credits (rounded down), less what earlier refunds already took.
CREATE FUNCTION creditgate.stripe_charge_refunded(p_event jsonb)
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
    -- A subscription's invoice, or a payment creditgate did not sell: nothing to take back.
    RETURN jsonb_build_object('handled', false, 'outcome', 'no_pack_order',
      'account_id', creditgate.stripe_account(ARRAY[v_charge #>> '{metadata,account_id}'], v_charge ->> 'customer'));
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

-- A dispute puts the account on hold (the gate refuses it) until it is won; a lost one
-- takes back what is left of the pack's credits.
CREATE FUNCTION creditgate.stripe_dispute(p_event jsonb)
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
                                 v_dispute ->> 'id');
    UPDATE creditgate.orders SET clawed_back = credits, updated_at = now() WHERE id = v_order.id;
  END IF;
  RETURN jsonb_build_object('handled', true, 'outcome', 'dispute_lost', 'account_id', v_account_id);
END
$$;

-- ───────────────────────────────────────────────────────────────── the entry point

-- One verified Stripe event: stored, and applied in the same transaction. A delivery of
-- an event already stored is acknowledged and changes nothing.
CREATE FUNCTION public.creditgate_apply_stripe_event(request jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  v_type text := request ->> 'type';
  v_result jsonb;
BEGIN
  IF request ->> 'id' IS NULL OR v_type IS NULL OR jsonb_typeof(request #> '{data,object}') IS DISTINCT FROM 'object'
     OR coalesce(request ->> 'created', '') !~ '^[0-9]{1,12}$' THEN
    PERFORM creditgate.fail(400, 'invalid_payload', jsonb_build_object('reason', 'not a Stripe event'));
  END IF;
  INSERT INTO creditgate.stripe_events (id, type, object_id, created, livemode, payload)
  VALUES (request ->> 'id', v_type, request #>> '{data,object,id}', (request ->> 'created')::bigint,
          (request ->> 'livemode')::boolean, request)
  ON CONFLICT (id) DO NOTHING;
  IF NOT FOUND THEN
    RETURN jsonb_build_object('received', true, 'duplicate', true, 'handled', false);
  END IF;

  v_result := CASE
    WHEN v_type IN ('checkout.session.completed', 'checkout.session.async_payment_succeeded')
      THEN creditgate.stripe_checkout_paid(request)
    WHEN v_type = 'checkout.session.async_payment_failed' THEN creditgate.stripe_checkout_closed(request, 'failed')
    WHEN v_type = 'checkout.session.expired' THEN creditgate.stripe_checkout_closed(request, 'expired')
    WHEN v_type IN ('customer.subscription.created', 'customer.subscription.updated', 'customer.subscription.deleted')
      THEN creditgate.stripe_subscription_changed(request)
    WHEN v_type = 'invoice.paid' THEN creditgate.stripe_invoice_paid(request)
    WHEN v_type = 'charge.refunded' THEN creditgate.stripe_charge_refunded(request)
    WHEN v_type IN ('charge.dispute.created', 'charge.dispute.closed') THEN creditgate.stripe_dispute(request)
    ELSE jsonb_build_object('handled', false, 'outcome', 'ignored_type')
  END;
  UPDATE creditgate.stripe_events
     SET handled = coalesce((v_result ->> 'handled')::boolean, false), outcome = v_result ->> 'outcome',
         account_id = v_result ->> 'account_id'
   WHERE id = request ->> 'id';
  RETURN jsonb_build_object('received', true, 'duplicate', false) || v_result;
END
$$;

-- secure() is defined by 90_security.sql; on a fresh database it runs after this file.
DO $$
BEGIN
  IF to_regprocedure('creditgate.secure()') IS NOT NULL THEN
    PERFORM creditgate.secure();
  END IF;
END
$$;

INSERT INTO creditgate.schema_migrations (version) VALUES ('45_payments') ON CONFLICT DO NOTHING;
