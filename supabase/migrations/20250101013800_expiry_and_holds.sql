-- Generated from sql/98_expiry_and_holds.sql by `creditgate supabase-export`. Edit sql/98_expiry_and_holds.sql and
-- run the command again; never edit this copy.
-- Expiry that respects holds, and grants that expire on time.
--
-- A grant that expires while holds made before its expiry cover part of it keeps that
-- part for them: such a hold is paid from it when it settles (expiry used to take
-- "whatever is available" instead, so the hold was later paid from the user's pack or
-- next allowance: credits lost, the ledger still balanced). Nothing else may spend that
-- part (a commit, usage without a hold, another hold's settle, a claw-back): a grant past
-- its expiry is burned only by a hold made before it expired. When the holds end, what
-- is left of it goes.
--
-- A grant's own time (a promo's expires_at) was only enforced by the next maintenance
-- run, so an expired grant could still be spent; every call that locks an account now
-- expires what is due first.
--
-- Coming back to a plan within the period it was left in (A -> B -> A, or a lapsed
-- Stripe subscription paid again) gave no allowance: its allowance for the period had
-- been granted once and was expired on leaving. What was taken from it then comes back,
-- and what holds kept of it is its own again.
--
-- A released or expired hold could be settled by any number of usage calls, each
-- charging again; it now serves one. Usage of a feature priced by tokens needs token
-- counts, and a reserve or commit on one needs a token estimate: both were charged 0.

-- Expire lines are few (at most one or two per grant) and looked up by grant.
CREATE INDEX ledger_entries_expired ON creditgate.ledger_entries (grant_id) WHERE kind = 'expire';
-- "Is a grant of this account due?" on every call: by account, not across all accounts.
CREATE INDEX grants_due ON creditgate.grants (account_id, expires_at) WHERE live;

-- Whether a grant of the account is past its time (it may still be covered by holds).
CREATE FUNCTION creditgate.grant_due(p_account_id text)
RETURNS boolean LANGUAGE plpgsql STABLE SET search_path = '' AS $$
BEGIN
  RETURN coalesce((SELECT min(expires_at) FROM creditgate.grants WHERE account_id = p_account_id AND live) <= now(),
                  false);
END
$$;

-- What of an expired grant can go now: its remaining, less what the holds made before it
-- expired cover of it in burn order, and never more than is available.
CREATE FUNCTION creditgate.expirable(p_grant creditgate.grants, p_balance creditgate.balances)
RETURNS bigint LANGUAGE plpgsql STABLE SET search_path = '' AS $$
DECLARE
  v_upto bigint;
  v_held bigint;
BEGIN
  -- Live grants burned before this one, and this one. A grant without an expiry sorts
  -- after every expiring grant of its priority (the row comparison is NULL for it).
  SELECT coalesce(sum(o.remaining), 0) INTO v_upto FROM creditgate.grants o
  WHERE o.account_id = p_grant.account_id AND o.key = p_grant.key AND o.live
    AND (o.priority, o.expires_at, o.id) <= (p_grant.priority, p_grant.expires_at, p_grant.id);
  SELECT coalesce(sum(amount), 0) INTO v_held FROM creditgate.reservations
  WHERE account_id = p_grant.account_id AND key = p_grant.key AND status = 'active'
    AND created_at < p_grant.expires_at;
  RETURN greatest(least(p_grant.remaining, p_balance.available, v_upto - v_held), 0);
END
$$;

-- Burn order: priority, then soonest expiry, then oldest (20_ledger.sql), over the grants
-- that were not yet expired at `p_made_at`: now for a spend, the hold's creation for a
-- hold's settle. Most calls fit in the first such grant: one indexed, HOT update.
-- Otherwise one statement takes `p_amount` across them in order; should they hold less
-- (they cannot, as long as only holds made before an expiry cover the expired grant),
-- the rest is taken in plain burn order, so the balance and its grants never disagree.
DROP FUNCTION creditgate.burn_grants(text, text, bigint);
CREATE FUNCTION creditgate.burn_grants(p_account_id text, p_key text, p_amount bigint,
  p_made_at timestamptz DEFAULT NULL)
RETURNS void LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v_since timestamptz := coalesce(p_made_at, now());
  v_taken bigint;
BEGIN
  IF p_amount <= 0 THEN
    RETURN;
  END IF;
  UPDATE creditgate.grants SET remaining = remaining - p_amount
   WHERE id = (SELECT id FROM creditgate.grants
               WHERE account_id = p_account_id AND key = p_key AND live
                 AND (expires_at IS NULL OR expires_at > v_since)
               ORDER BY priority, expires_at, id LIMIT 1)
     AND remaining >= p_amount;
  IF FOUND THEN
    RETURN;
  END IF;
  WITH ordered AS (
    SELECT id, remaining,
           sum(remaining) OVER (ORDER BY priority, expires_at, id) AS upto
    FROM creditgate.grants
    WHERE account_id = p_account_id AND key = p_key AND live AND (expires_at IS NULL OR expires_at > v_since)
  ), taken AS (
    SELECT id, least(remaining, p_amount - (upto - remaining)) AS take
    FROM ordered WHERE upto - remaining < p_amount
  ), burned AS (
    UPDATE creditgate.grants g SET remaining = g.remaining - t.take
    FROM taken t WHERE g.id = t.id
    RETURNING t.take
  )
  SELECT coalesce(sum(take), 0) INTO v_taken FROM burned;
  IF v_taken < p_amount THEN
    WITH ordered AS (
      SELECT id, remaining, sum(remaining) OVER (ORDER BY priority, expires_at, id) AS upto
      FROM creditgate.grants WHERE account_id = p_account_id AND key = p_key AND live
    ), taken AS (
      SELECT id, least(remaining, p_amount - v_taken - (upto - remaining)) AS take
      FROM ordered WHERE upto - remaining < p_amount - v_taken
    )
    UPDATE creditgate.grants g SET remaining = g.remaining - t.take FROM taken t WHERE g.id = t.id;
  END IF;
END
$$;

-- The consume of 96_used_this_period.sql; a hold's settle burns as the hold may
-- (`p_hold_made_at`, see burn_grants).
DROP FUNCTION creditgate.consume(text, text, bigint, uuid, bigint);
CREATE FUNCTION creditgate.consume(
  p_account_id text, p_key text, p_amount bigint, p_usage_id uuid DEFAULT NULL, p_freed bigint DEFAULT 0,
  p_hold_made_at timestamptz DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v_pay_debt bigint := 0;
  v_paid bigint := 0;
  v_balance creditgate.balances;
BEGIN
  IF p_amount <= 0 AND p_freed <= 0 THEN
    RETURN 0;
  END IF;
  p_amount := greatest(p_amount, 0);
  SELECT least(debt, p_freed), least(available + p_freed - least(debt, p_freed), p_amount)
  INTO v_pay_debt, v_paid
  FROM creditgate.balances WHERE account_id = p_account_id AND key = p_key;
  IF NOT FOUND THEN
    PERFORM creditgate.ensure_balance(p_account_id, p_key);
    v_pay_debt := 0;
    v_paid := 0;
  END IF;
  UPDATE creditgate.balances
     SET reserved = reserved - p_freed,
         available = available + p_freed - v_pay_debt - v_paid,
         debt = debt - v_pay_debt + (p_amount - v_paid),
         -- Counted unless the call began before the current period (see charge).
         used_this_period = used_this_period + CASE WHEN now() >= (
           SELECT period_start FROM creditgate.accounts WHERE id = p_account_id) THEN p_amount ELSE 0 END
   WHERE account_id = p_account_id AND key = p_key
  RETURNING * INTO v_balance;
  PERFORM creditgate.burn_grants(p_account_id, p_key, v_pay_debt + v_paid, p_hold_made_at);
  IF p_amount > 0 THEN
    PERFORM creditgate.journal(v_balance, 'consume', -p_amount, NULL, p_usage_id);
  END IF;
  RETURN p_amount - v_paid;
END
$$;

-- Removes what can go of grants whose time is up (see expirable); the caller holds the
-- account lock.
CREATE OR REPLACE FUNCTION creditgate.expire_grants(p_account_id text, p_key text DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  g creditgate.grants;
  v_balance creditgate.balances;
  v_take bigint;
  v_total bigint := 0;
BEGIN
  FOR g IN
    SELECT * FROM creditgate.grants
    WHERE account_id = p_account_id AND (p_key IS NULL OR key = p_key) AND live AND expires_at <= now()
    ORDER BY key, priority, expires_at, id
  LOOP
    -- Read each time: what the grant before this one gave up is no longer available.
    SELECT * INTO v_balance FROM creditgate.balances WHERE account_id = p_account_id AND key = g.key;
    v_take := creditgate.expirable(g, v_balance);
    CONTINUE WHEN v_take <= 0;
    UPDATE creditgate.grants SET remaining = remaining - v_take WHERE id = g.id;
    UPDATE creditgate.balances SET available = available - v_take
     WHERE account_id = p_account_id AND key = g.key
    RETURNING * INTO v_balance;
    PERFORM creditgate.journal(v_balance, 'expire', -v_take, g.id, NULL, g.source, g.external_ref);
    v_total := v_total + v_take;
  END LOOP;
  RETURN v_total;
END
$$;

-- The reset of 20_ledger.sql, and before it, on every call that locks the account, the
-- expiry of any grant whose own time is up (one index probe when there is none).
CREATE OR REPLACE FUNCTION creditgate.roll_period(p_account creditgate.accounts)
RETURNS creditgate.accounts LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v_start timestamptz;
  v_end timestamptz;
BEGIN
  IF p_account.period_end > now() THEN
    -- (grant_due written out: this runs on every gate call.)
    IF (SELECT min(expires_at) FROM creditgate.grants WHERE account_id = p_account.id AND live) <= now() THEN
      PERFORM creditgate.expire_grants(p_account.id);
    END IF;
    RETURN p_account;
  END IF;
  PERFORM creditgate.expire_grants(p_account.id);
  IF p_account.billing_source = 'stripe' THEN
    -- Stripe's invoice.paid opens the next period; until it arrives the plan has no new
    -- allowance (a lapsed subscription must not keep granting).
    RETURN p_account;
  END IF;
  SELECT c.period_start, c.period_end INTO v_start, v_end
  FROM creditgate.period_containing(p_account.period_anchor, now()) c;
  UPDATE creditgate.accounts SET period_start = v_start, period_end = v_end
   WHERE id = p_account.id
  RETURNING * INTO p_account;
  PERFORM creditgate.grant_allowances(p_account);
  RETURN p_account;
END
$$;

-- Reads lock and roll only when something is due: an ended local period, as in
-- 70_reads.sql, or now also a grant whose time is up, so no balance shows it.
CREATE OR REPLACE FUNCTION creditgate.current_account(p_account_id text)
RETURNS creditgate.accounts LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v creditgate.accounts;
BEGIN
  SELECT * INTO v FROM creditgate.accounts WHERE id = p_account_id;
  IF NOT FOUND THEN
    PERFORM creditgate.fail(404, 'account_not_found', jsonb_build_object('account_id', p_account_id));
  END IF;
  IF (v.period_end <= now() AND v.billing_source = 'local') OR creditgate.grant_due(v.id) THEN
    v := creditgate.roll_period(creditgate.lock_account(p_account_id));
  END IF;
  RETURN v;
END
$$;

-- On coming back to the account's plan within a period whose allowance of it was already
-- granted: what holds kept of it (cut to end when the account left) runs to the period's
-- end again, and what expired when it left comes back as a new grant: everything that
-- expired of the plan's allowance this period, less what earlier returns gave back. Not
-- a whole allowance: what was used of it stays used.
CREATE FUNCTION creditgate.reinstate_allowances(p_account creditgate.accounts)
RETURNS void LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  a record;
  v_expired bigint;
BEGIN
  UPDATE creditgate.grants SET expires_at = p_account.period_end
   WHERE account_id = p_account.id AND source = 'allowance' AND plan_id = p_account.plan_id
     AND period_start = p_account.period_start AND live AND expires_at < p_account.period_end;
  FOR a IN
    SELECT key, min(external_ref) FILTER (WHERE external_ref NOT LIKE '%:back:%') AS ref,
           coalesce(sum(amount) FILTER (WHERE external_ref LIKE '%:back:%'), 0)::bigint AS given_back,
           count(*) FILTER (WHERE external_ref LIKE '%:back:%') AS returns,
           array_agg(id) AS ids
    FROM creditgate.grants
    WHERE account_id = p_account.id AND source = 'allowance' AND plan_id = p_account.plan_id
      AND period_start = p_account.period_start
    GROUP BY key
  LOOP
    SELECT coalesce(-sum(amount), 0) INTO v_expired FROM creditgate.ledger_entries
    WHERE grant_id = ANY (a.ids) AND kind = 'expire';
    IF v_expired > a.given_back AND a.ref IS NOT NULL THEN
      PERFORM creditgate.add_grant(p_account.id, a.key, 'allowance', v_expired - a.given_back,
        a.ref || ':back:' || (a.returns + 1), p_account.period_end, NULL, p_account.plan_id, p_account.period_start);
    END IF;
  END LOOP;
END
$$;

-- The plan change of 40_accounts.sql, reinstating on a return to a plan (above).
CREATE OR REPLACE FUNCTION creditgate.apply_plan(p_account creditgate.accounts, p_plan_id text,
  p_period_start timestamptz DEFAULT NULL, p_period_end timestamptz DEFAULT NULL,
  p_billing_source text DEFAULT NULL)
RETURNS creditgate.accounts LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v_switched boolean := p_plan_id <> p_account.plan_id;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM creditgate.plans WHERE id = p_plan_id AND active) THEN
    PERFORM creditgate.fail(422, 'unknown_plan', jsonb_build_object('plan', p_plan_id));
  END IF;
  IF NOT v_switched AND p_period_start IS NOT DISTINCT FROM NULL THEN
    RETURN p_account;
  END IF;
  IF v_switched THEN
    -- The old plan's allowance ends now. expire_grants takes its unreserved part at once and
    -- the rest when the holds on it settle or are released.
    UPDATE creditgate.grants SET expires_at = least(expires_at, now())
     WHERE account_id = p_account.id AND source = 'allowance' AND live;
    PERFORM creditgate.expire_grants(p_account.id);
  END IF;
  UPDATE creditgate.accounts SET
    plan_id = p_plan_id,
    billing_source = coalesce(p_billing_source, billing_source),
    period_start = coalesce(p_period_start, period_start),
    period_end = coalesce(p_period_end, period_end),
    period_anchor = CASE WHEN p_period_start IS NOT NULL AND coalesce(p_billing_source, billing_source) = 'local'
                         THEN p_period_start ELSE period_anchor END
  WHERE id = p_account.id
  RETURNING * INTO p_account;
  PERFORM creditgate.grant_allowances(p_account);
  IF v_switched THEN
    PERFORM creditgate.reinstate_allowances(p_account);
  END IF;
  RETURN p_account;
END
$$;

-- A check may ask about a token-priced feature without an estimate; a reserve or a commit
-- without one would hold or charge nothing for a call that costs tokens.
CREATE FUNCTION creditgate.need_token_estimate(request jsonb)
RETURNS void LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
  IF coalesce(request ->> 'mode', 'check') <> 'check' THEN
    PERFORM creditgate.fail(422, 'invalid_request', jsonb_build_object('errors', jsonb_build_array(
      jsonb_build_object('loc', jsonb_build_array('body', 'estimate'),
                         'msg', 'this feature is priced by tokens: a reserve or commit needs an estimate '
                                'of input_tokens and/or max_output_tokens'))));
  END IF;
END
$$;

-- The estimate of 50_gate.sql; a reserve or commit on a token-priced feature needs tokens.
DROP FUNCTION creditgate.estimate_cost(creditgate.features, jsonb);
-- (Also the provider cost and the price it used: a commit's usage row keeps them, as
-- record_usage's does, so metrics and cost alerts count committed calls too.)
CREATE FUNCTION creditgate.estimate_cost(p_feature creditgate.features, request jsonb,
  OUT cost bigint, OUT cost_pico_usd bigint, OUT price_id bigint)
LANGUAGE plpgsql STABLE SET search_path = '' AS $$
DECLARE
  e jsonb := coalesce(request -> 'estimate', '{}');
  v_in bigint := coalesce((e ->> 'input_tokens')::bigint, 0);
  v_out bigint := coalesce((e ->> 'max_output_tokens')::bigint, 0);
  v_price creditgate.model_prices;
BEGIN
  cost := 0;
  cost_pico_usd := 0;
  IF p_feature.kind = 'access' THEN
    RETURN;
  ELSIF p_feature.pricing_mode = 'model' THEN
    IF request ->> 'model' IS NOT NULL THEN
      v_price := creditgate.find_price(request ->> 'model', request ->> 'provider');
    END IF;
    IF NOT (e ? 'input_tokens' OR e ? 'max_output_tokens') THEN
      PERFORM creditgate.need_token_estimate(request);
      RETURN;
    END IF;
    IF v_price.id IS NULL THEN
      PERFORM creditgate.fail(422, 'invalid_request', jsonb_build_object('errors', jsonb_build_array(
        jsonb_build_object('loc', jsonb_build_array('body', 'model'),
                           'msg', 'a model is required to price a token estimate'))));
    END IF;
    cost_pico_usd := creditgate.model_cost_pico_usd(v_price, v_in, v_out, 0, 0, 0);
    cost := creditgate.usd_to_credits(cost_pico_usd);
    price_id := v_price.id;
  ELSIF p_feature.pricing_mode = 'tokens' THEN
    IF NOT (e ? 'input_tokens' OR e ? 'max_output_tokens') THEN
      PERFORM creditgate.need_token_estimate(request);
    END IF;
    cost := (v_in + v_out) * 1000000;
  ELSE
    cost := coalesce((e ->> 'quantity')::bigint, 1) * p_feature.credits_per_unit;
  END IF;
END
$$;

-- The usage of 60_usage.sql: token-priced usage needs its token counts, a released or
-- expired hold serves one usage call (it is then settled; `released` says 0 was freed now),
-- and a call past the plan's request quota is an overdraft too.
CREATE OR REPLACE FUNCTION creditgate.record_usage(request jsonb)
RETURNS jsonb LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  u jsonb := coalesce(request -> 'usage', '{}');
  v_in bigint := coalesce((u ->> 'input_tokens')::bigint, 0);
  v_out bigint := coalesce((u ->> 'output_tokens')::bigint, 0);
  v_cached bigint := coalesce((u ->> 'cached_input_tokens')::bigint, 0);
  v_reasoning bigint := coalesce((u ->> 'reasoning_tokens')::bigint, 0);
  v_cache_write bigint := coalesce((u ->> 'cache_write_tokens')::bigint, 0);
  v_quantity bigint := coalesce((request ->> 'quantity')::bigint, 1);
  v_account_id text := request ->> 'account_id';
  v_idem text := request ->> 'idempotency_key';
  v_res creditgate.reservations;
  v_feature creditgate.features;
  v_account creditgate.accounts;
  v_plan creditgate.plans;
  v_price creditgate.model_prices;
  v_balance creditgate.balances;
  v_previous jsonb;
  v_pico bigint := 0;
  v_cost bigint;
  v_debt bigint;
  v_quota_debt bigint := 0;
  v_usage_id uuid := gen_random_uuid();
  v_settling boolean := false;
BEGIN
  IF request ->> 'reservation_id' IS NOT NULL THEN
    SELECT * INTO v_res FROM creditgate.reservations
    WHERE id = creditgate.to_uuid(request ->> 'reservation_id');
    IF NOT FOUND OR (v_account_id IS NOT NULL AND v_account_id <> v_res.account_id) THEN
      PERFORM creditgate.fail(404, 'reservation_not_found',
        jsonb_build_object('reservation_id', request ->> 'reservation_id'));
    END IF;
    v_account_id := v_res.account_id;
  END IF;
  SELECT * INTO v_feature FROM creditgate.features WHERE id = request ->> 'feature' AND active;
  IF NOT FOUND THEN
    PERFORM creditgate.fail(422, 'unknown_feature', jsonb_build_object('feature', request ->> 'feature'));
  END IF;
  IF v_feature.kind <> 'metered' THEN
    PERFORM creditgate.fail(422, 'feature_not_metered', jsonb_build_object('feature', v_feature.id));
  END IF;
  IF request ->> 'agent' IS NOT NULL
     AND NOT EXISTS (SELECT 1 FROM creditgate.agents WHERE id = request ->> 'agent') THEN
    PERFORM creditgate.fail(422, 'unknown_agent', jsonb_build_object('agent', request ->> 'agent'));
  END IF;

  -- Unlike the gate, usage claims its key under the account lock: a batch holds the locks
  -- of the accounts it has done while it claims the next event's key, and a claim taken
  -- before waiting for a lock could close a cycle with it.
  v_account := creditgate.lock_account(v_account_id);
  v_previous := creditgate.claim_idempotency(v_account_id, 'usage', v_idem, request);
  IF v_previous IS NOT NULL THEN
    RETURN v_previous || '{"replayed": true}';
  END IF;
  v_account := creditgate.roll_period(v_account);
  SELECT * INTO v_plan FROM creditgate.plans WHERE id = v_account.plan_id;

  IF request ->> 'model' IS NOT NULL AND v_feature.pricing_mode = 'model' THEN
    v_price := creditgate.find_price(request ->> 'model', request ->> 'provider');
  ELSIF request ->> 'model' IS NOT NULL THEN
    -- Not charged by the model, but its provider cost is still worth knowing.
    BEGIN
      v_price := creditgate.find_price(request ->> 'model', request ->> 'provider');
    EXCEPTION WHEN SQLSTATE 'PT422' THEN
      v_price := NULL;
    END;
  ELSIF v_feature.pricing_mode = 'model' THEN
    PERFORM creditgate.fail(422, 'invalid_request', jsonb_build_object('errors', jsonb_build_array(
      jsonb_build_object('loc', jsonb_build_array('body', 'model'),
                         'msg', 'this feature is priced by model: model is required'))));
  END IF;
  IF v_feature.pricing_mode IN ('model', 'tokens') AND NOT (request ? 'usage') THEN
    PERFORM creditgate.fail(422, 'invalid_request', jsonb_build_object('errors', jsonb_build_array(
      jsonb_build_object('loc', jsonb_build_array('body', 'usage'),
                         'msg', 'this feature is priced by tokens: usage (or raw_usage) is required'))));
  END IF;
  IF v_price.id IS NOT NULL THEN
    v_pico := creditgate.model_cost_pico_usd(v_price, v_in, v_out, v_cached, v_reasoning, v_cache_write);
  END IF;
  v_cost := CASE v_feature.pricing_mode
              WHEN 'model' THEN creditgate.usd_to_credits(v_pico)
              WHEN 'tokens' THEN (v_in + v_out) * 1000000
              ELSE v_quantity * v_feature.credits_per_unit END;

  IF v_res.id IS NOT NULL THEN
    IF v_res.key <> v_feature.balance_key THEN
      PERFORM creditgate.fail(422, 'reservation_feature_mismatch',
        jsonb_build_object('reservation_id', v_res.id, 'reservation_key', v_res.key, 'feature', v_feature.id));
    END IF;
    SELECT * INTO v_res FROM creditgate.reservations WHERE id = v_res.id;
    IF v_res.status = 'settled' OR v_res.usage_id IS NOT NULL THEN
      PERFORM creditgate.fail(409, 'reservation_settled', jsonb_build_object('reservation_id', v_res.id));
    END IF;
    -- A released or expired hold no longer covers the call, but the call happened: it is
    -- charged to the balance all the same, once (the hold keeps the usage it served).
    v_settling := v_res.status = 'active';
    UPDATE creditgate.reservations SET status = 'settled', usage_id = v_usage_id,
      closed_at = coalesce(closed_at, now())
     WHERE id = v_res.id;
  END IF;

  INSERT INTO creditgate.usage_events (id, account_id, user_id, session_id, feature_id, agent_id,
    provider, model, price_id, prices, input_tokens, output_tokens, cached_input_tokens,
    reasoning_tokens, cache_write_tokens, quantity, key, cost, cost_pico_usd, reservation_id, metadata)
  SELECT v_usage_id, v_account_id, request ->> 'user_id', request ->> 'session_id', v_feature.id,
    request ->> 'agent', coalesce(request ->> 'provider', v_price.provider), request ->> 'model', v_price.id,
    CASE WHEN v_price.id IS NOT NULL THEN jsonb_build_object(
      'input_per_mtok', v_price.input_per_mtok, 'output_per_mtok', v_price.output_per_mtok,
      'cached_input_per_mtok', v_price.cached_input_per_mtok, 'reasoning_per_mtok', v_price.reasoning_per_mtok,
      'cache_write_per_mtok', v_price.cache_write_per_mtok,
      'credits_per_usd', s.credits_per_usd, 'markup_bps', s.markup_bps) END,
    v_in, v_out, v_cached, v_reasoning, v_cache_write,
    CASE WHEN v_feature.pricing_mode = 'per_unit' THEN v_quantity ELSE 0 END,
    v_feature.balance_key, v_cost, v_pico, v_res.id, request -> 'metadata'
  FROM creditgate.settings s;

  -- Settling frees the hold and charges the actual cost in one movement of the balance.
  v_debt := creditgate.consume(v_account_id, v_feature.balance_key, v_cost, v_usage_id,
                               CASE WHEN v_settling THEN v_res.amount ELSE 0 END,
                               CASE WHEN v_settling THEN v_res.created_at END);
  IF v_debt > 0 THEN
    UPDATE creditgate.usage_events SET debt_added = v_debt WHERE id = v_usage_id;
  END IF;
  IF v_res.id IS NULL THEN
    -- A call that went through a reservation was counted at the gate.
    -- (count_request, as usage that happened: past the quota it is debt on that key, and
    -- the answer says so.)
    IF v_feature.requests_key IS NOT NULL AND v_plan.allowances ? v_feature.requests_key THEN
      v_quota_debt := creditgate.consume(v_account_id, v_feature.requests_key, 1000000, v_usage_id);
    END IF;
  END IF;
  IF v_settling THEN
    PERFORM creditgate.expire_grants(v_account_id, v_feature.balance_key);
  END IF;

  SELECT * INTO v_balance FROM creditgate.balances
  WHERE account_id = v_account_id AND key = v_feature.balance_key;
  RETURN creditgate.remember_response(v_account_id, 'usage', v_idem, jsonb_build_object(
    'usage_id', v_usage_id, 'account_id', v_account_id, 'feature', v_feature.id,
    'cost', v_cost, 'cost_pico_usd', v_pico,
    'balance', jsonb_build_object('key', v_balance.key, 'available', v_balance.available, 'debt', v_balance.debt),
    'reservation', CASE WHEN v_res.id IS NOT NULL THEN jsonb_build_object(
      'id', v_res.id, 'status', 'settled',
      'released', CASE WHEN v_settling THEN greatest(v_res.amount - v_cost, 0) ELSE 0 END) END,
    'overdraft', v_debt > 0 OR v_quota_debt > 0));
END
$$;

-- The maintenance run of 55_maintenance.sql: a grant is due when expire_grants can take
-- something of it (a hold that covers it is not "more" work for every run).
CREATE OR REPLACE FUNCTION public.creditgate_run_maintenance(request jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  v_bad boolean := false;
  v_limit integer;
  v_left integer;
  v_seen text[] := '{}';
  v_account creditgate.accounts;
  v_done jsonb;
  v_granted bigint := 0;
  v_expired bigint := 0;
  v_holds bigint := 0;
  v_guests integer := 0;
  v_swept integer;
  v_swept_more boolean := false;
  v_notices jsonb;
  v_more boolean;
BEGIN
  IF request ? 'limit' THEN
    -- Checked in steps: casting a non-number first would be a 500, not a 422.
    v_bad := jsonb_typeof(request -> 'limit') <> 'number';
    IF NOT v_bad THEN
      v_bad := (request ->> 'limit')::numeric NOT BETWEEN 1 AND 5000 OR (request ->> 'limit')::numeric % 1 <> 0;
    END IF;
  END IF;
  IF v_bad THEN
    PERFORM creditgate.fail(422, 'invalid_request', jsonb_build_object('errors', jsonb_build_array(
      jsonb_build_object('loc', jsonb_build_array('body', 'limit'),
                         'msg', 'limit must be an integer from 1 to 5000'))));
  END IF;
  v_limit := coalesce((request ->> 'limit')::integer, 500);

  -- Three kinds of due account, oldest first; each taken with its lock or skipped.
  v_left := v_limit;
  FOR v_account IN
    SELECT * FROM creditgate.accounts
    WHERE period_end <= now() AND billing_source = 'local'
    ORDER BY period_end LIMIT v_left
    FOR NO KEY UPDATE SKIP LOCKED
  LOOP
    v_done := creditgate.maintain_account(v_account);
    v_seen := v_seen || v_account.id;
    v_granted := v_granted + (v_done ->> 'allowances_granted')::integer;
    v_expired := v_expired + (v_done ->> 'grants_expired')::integer;
    v_holds := v_holds + (v_done ->> 'reservations_expired')::integer;
  END LOOP;

  v_left := v_limit - cardinality(v_seen);
  FOR v_account IN
    SELECT a.* FROM creditgate.reservations r JOIN creditgate.accounts a ON a.id = r.account_id
    WHERE r.status = 'active' AND r.expires_at <= now()
    ORDER BY r.expires_at LIMIT v_left
    -- Locking the hold too makes a row that another run settled meanwhile be re-checked
    -- (and dropped) instead of passing on the version this statement first saw.
    FOR NO KEY UPDATE OF a, r SKIP LOCKED
  LOOP
    CONTINUE WHEN v_account.id = ANY (v_seen);  -- one row per stale hold; the first did them all
    v_done := creditgate.maintain_account(v_account);
    v_seen := v_seen || v_account.id;
    v_granted := v_granted + (v_done ->> 'allowances_granted')::integer;
    v_expired := v_expired + (v_done ->> 'grants_expired')::integer;
    v_holds := v_holds + (v_done ->> 'reservations_expired')::integer;
  END LOOP;

  v_left := v_limit - cardinality(v_seen);
  FOR v_account IN
    SELECT a.* FROM creditgate.grants g
    JOIN creditgate.balances b ON b.account_id = g.account_id AND b.key = g.key
    JOIN creditgate.accounts a ON a.id = g.account_id
    -- Only what expire_grants can take: the part of a grant a hold covers waits for it.
    WHERE g.live AND g.expires_at <= now() AND b.available > 0 AND creditgate.expirable(g, b) > 0
    ORDER BY g.expires_at LIMIT v_left
    FOR NO KEY UPDATE OF a, g, b SKIP LOCKED  -- re-checked on their latest versions, as above
  LOOP
    CONTINUE WHEN v_account.id = ANY (v_seen);
    v_done := creditgate.maintain_account(v_account);
    v_seen := v_seen || v_account.id;
    v_granted := v_granted + (v_done ->> 'allowances_granted')::integer;
    v_expired := v_expired + (v_done ->> 'grants_expired')::integer;
    v_holds := v_holds + (v_done ->> 'reservations_expired')::integer;
  END LOOP;

  -- Guests: expired sessions go with the idempotency keys their gate calls left.
  WITH doomed AS (
    SELECT session_id FROM creditgate.guest_sessions WHERE expires_at <= now()
    ORDER BY expires_at LIMIT v_limit FOR UPDATE SKIP LOCKED
  ), gone AS (
    DELETE FROM creditgate.guest_sessions g USING doomed d WHERE g.session_id = d.session_id
    RETURNING g.session_id
  ), keys AS (
    DELETE FROM creditgate.idempotency_keys k USING gone
    WHERE k.account_id = 'guest:' || gone.session_id
  )
  SELECT count(*) INTO v_guests FROM gone;

  -- Counters nobody reads any more: per-IP guest days older than 90 days (the admin
  -- metrics look back 30 by default), and rate windows older than an hour (only the
  -- current minute counts).
  WITH old AS (
    SELECT ip, day FROM creditgate.guest_ip_days WHERE day < (now() AT TIME ZONE 'UTC')::date - 90
    LIMIT v_limit * 10 FOR UPDATE SKIP LOCKED
  )
  DELETE FROM creditgate.guest_ip_days d USING old WHERE d.ip = old.ip AND d.day = old.day;
  GET DIAGNOSTICS v_swept = ROW_COUNT;
  v_swept_more := v_swept = v_limit * 10;
  WITH old AS (
    SELECT account_id, window_start FROM creditgate.rate_windows WHERE window_start < now() - interval '1 hour'
    LIMIT v_limit * 10 FOR UPDATE SKIP LOCKED
  )
  DELETE FROM creditgate.rate_windows w USING old
  WHERE w.account_id = old.account_id AND w.window_start = old.window_start;
  GET DIAGNOSTICS v_swept = ROW_COUNT;
  v_swept_more := v_swept_more OR v_swept = v_limit * 10;

  -- The journal scan is cheap per line, so its bound does not shrink with small batches.
  v_notices := creditgate.record_notices(greatest(v_limit * 20, 10000));

  -- More is left if anything due remains that this run did not get to (or that another
  -- run holds right now: the next run will find it done or do it).
  v_more := v_swept_more OR (v_notices ->> 'more')::boolean
    OR EXISTS (SELECT 1 FROM creditgate.accounts WHERE period_end <= now() AND billing_source = 'local')
    OR EXISTS (SELECT 1 FROM creditgate.reservations WHERE status = 'active' AND expires_at <= now())
    OR EXISTS (SELECT 1 FROM creditgate.grants g
               JOIN creditgate.balances b ON b.account_id = g.account_id AND b.key = g.key
               WHERE g.live AND g.expires_at <= now() AND b.available > 0 AND creditgate.expirable(g, b) > 0)
    OR EXISTS (SELECT 1 FROM creditgate.guest_sessions WHERE expires_at <= now());

  RETURN jsonb_build_object(
    'allowances_granted', v_granted, 'grants_expired', v_expired, 'reservations_expired', v_holds,
    'guest_sessions_deleted', v_guests, 'notices', (v_notices ->> 'notices')::integer,
    'accounts', cardinality(v_seen), 'usage_lines_checked', (v_notices ->> 'lines')::integer,
    'more', v_more);
END
$$;

SELECT creditgate.secure();

INSERT INTO creditgate.schema_migrations (version) VALUES ('98_expiry_and_holds') ON CONFLICT DO NOTHING;
