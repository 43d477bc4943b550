-- What a hold kept of a refunded allowance. A subscription invoice's refund (109) takes
-- back what is left of the period's allowance up to the refunded share, but never what an
-- open hold keeps of it, and that part was lost to the refund for good: when the hold was
-- released, expired, or settled for less than it held, what it freed went back to the
-- user, though it had been refunded.
--
-- A refund that is still due something that may yet come to it now says so (`owing`): a
-- part of the allowance holds keep (a hold's end frees it, or it expires then), or what
-- expired of it and a return to the plan within the period would give back. Its claw-back
-- runs again when a hold frees what it kept. Each run takes what the first one did: what
-- is left and unheld, up to the share still due, never as debt. What the hold's call spent
-- stays spent, as what the user had used before the refund does, and a refund due only
-- that is not owing (it would run on every hold end of the period to take nothing).
--
-- What holds keep of the share is set aside when the refund comes: left in the allowance,
-- another call's spend while the hold was open burned it (the allowance burns first), the
-- hold's cover moved to the user's other credits, and when it ended nothing of the
-- allowance was left to take: the refund lost what the hold had kept. Set aside as its own
-- grant that ended then, the rules of 98_expiry_and_holds.sql keep it for the holds made
-- before (their calls may still spend it); nothing else can burn it, and when they end it
-- is the refund's. It belongs to no plan or period, so no allowance sum counts it and a
-- return to the plan does not give it back.
--
-- The claw-back also looks at each grant of the allowance: it stopped at the first one it
-- could take nothing from (all of it held), and back on a plan while a hold kept part of its
-- allowance, what expired on leaving comes back as its own unheld grant, which a refund then
-- left to the user.

ALTER TABLE creditgate.invoice_refunds ADD COLUMN owing boolean NOT NULL DEFAULT false;
CREATE INDEX invoice_refunds_owing ON creditgate.invoice_refunds (account_id) WHERE owing;

-- Refunds made before this migration are looked at again the next time a hold of their
-- account ends; one that is due nothing more is then no longer owing.
UPDATE creditgate.invoice_refunds r SET owing = true
WHERE EXISTS (SELECT 1 FROM creditgate.stripe_events e
              WHERE e.object_id = r.invoice_id AND e.type = 'invoice.paid' AND e.handled);

-- Whether a later claw-back of a refunded allowance (plan, period, key) may find something:
-- what is left of its grants (only holds keep it once a claw-back has run: it takes the rest
-- up to the share), or more of it expired than returns to the plan gave back (the next
-- return gives that back, 98_expiry_and_holds.sql).
CREATE FUNCTION creditgate.allowance_to_come(p_account_id text, p_key text, p_plan text, p_start timestamptz)
RETURNS boolean LANGUAGE plpgsql STABLE SET search_path = '' AS $$
DECLARE
  v_ids bigint[];
  v_given_back bigint;
  v_expired bigint;
BEGIN
  IF EXISTS (SELECT 1 FROM creditgate.grants
             WHERE account_id = p_account_id AND key = p_key AND source = 'allowance' AND plan_id = p_plan
               AND period_start = p_start AND live) THEN
    RETURN true;
  END IF;
  SELECT array_agg(id), coalesce(sum(amount) FILTER (WHERE external_ref LIKE '%:back:%'), 0)
    INTO v_ids, v_given_back
  FROM creditgate.grants
  WHERE account_id = p_account_id AND key = p_key AND source = 'allowance' AND plan_id = p_plan
    AND period_start = p_start;
  SELECT coalesce(-sum(amount), 0) INTO v_expired FROM creditgate.ledger_entries
  WHERE grant_id = ANY (v_ids) AND kind = 'expire';
  RETURN v_expired > v_given_back;
END
$$;

-- The claw-back of 109_subscription_refunds.sql, which also records whether the invoice's
-- refunds are still due something that may yet be taken.
CREATE OR REPLACE FUNCTION creditgate.claw_back_invoice(p_invoice_id text, p_account_id text, p_paid bigint,
  p_plan text, p_start timestamptz, p_charge_id text)
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
  v_owing boolean := false;
  v_balance creditgate.balances;
  v_kept bigint;
  v_n bigint;
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
    -- The parts set aside for the refund (below): what no hold made before it covers any
    -- more is the refund's now, on the plan or not; what holds still cover stays set aside;
    -- what a hold's settle spent of it was used; what expired of it (were the refund not run
    -- at a hold's end) is gone as the refund would have taken it.
    v_kept := 0;
    FOR v_grant IN
      SELECT s.* FROM creditgate.grants s
      WHERE s.account_id = p_account_id AND s.key = k.key AND s.source = 'allowance' AND s.plan_id IS NULL
        AND s.external_ref LIKE '%:refund:%'
        AND EXISTS (SELECT 1 FROM creditgate.grants o
                    WHERE o.account_id = p_account_id AND o.key = k.key AND o.source = 'allowance'
                      AND o.plan_id = p_plan AND o.period_start = p_start
                      AND starts_with(s.external_ref, o.external_ref || ':refund:'))
      ORDER BY s.priority, s.expires_at, s.id
    LOOP
      IF v_grant.live THEN
        SELECT * INTO v_balance FROM creditgate.balances WHERE account_id = p_account_id AND key = k.key;
        v_take := creditgate.expirable(v_grant, v_balance);
        IF v_take > 0 THEN
          PERFORM creditgate.claw_back(p_account_id, v_grant.external_ref, v_take, p_charge_id, k.key);
          v_done := v_done || jsonb_build_object(k.key, coalesce((v_done ->> k.key)::bigint, 0) + v_take);
          v_due := v_due - v_take;
        END IF;
        v_kept := v_kept + v_grant.remaining - greatest(v_take, 0);
      END IF;
      v_due := v_due - coalesce((SELECT -sum(amount) FROM creditgate.ledger_entries
                                 WHERE grant_id = v_grant.id AND kind = 'expire'), 0);
    END LOOP;
    v_due := v_due - v_kept;
    v_owing := v_owing OR v_kept > 0;
    CONTINUE WHEN v_due <= 0;
    IF (v_account.plan_id, v_account.period_start) IS DISTINCT FROM (p_plan, p_start) THEN
      v_ended := true;
      -- Away from the plan in the same period: a return would bring back what expired of
      -- its allowance, and what holds keep of it expires as they end.
      v_owing := v_owing OR (v_account.period_start = p_start
                             AND creditgate.allowance_to_come(p_account_id, k.key, p_plan, p_start));
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
      -- (Taken largest first, not in burn order: a grant holds cover may come before one
      -- they do not, a return's ':back:' grant behind the held original.)
      CONTINUE WHEN v_take <= 0;
      PERFORM creditgate.claw_back(p_account_id, v_grant.external_ref, v_take, p_charge_id, k.key);
      v_done := v_done || jsonb_build_object(k.key, coalesce((v_done ->> k.key)::bigint, 0) + v_take);
      v_due := v_due - v_take;
      EXIT WHEN v_due <= 0;
    END LOOP;
    IF v_due > 0 AND v_refunded < p_paid THEN
      -- What is still due is all held now (the unheld part was taken above). Set it aside as
      -- its own grant, ended now: only the holds made before may burn it (their calls spend
      -- it or not), no other call can, and when they end it is the refund's (above). Left in
      -- the allowance, another call's spend burned it (the allowance burns first) and the
      -- holds' cover moved to the user's other credits: the refund lost it. No journal line:
      -- the balance keeps the same grants' worth. Without a plan or period, a return to the
      -- plan does not give it back (reinstate_allowances) and no allowance sum counts it.
      FOR v_grant IN
        SELECT * FROM creditgate.grants
        WHERE account_id = p_account_id AND key = k.key AND source = 'allowance' AND plan_id = p_plan
          AND period_start = p_start AND live AND (expires_at IS NULL OR expires_at > now())
        ORDER BY priority, expires_at, id
      LOOP
        v_take := least(v_due, v_grant.remaining);
        SELECT count(*) + 1 INTO v_n FROM creditgate.grants
        WHERE account_id = p_account_id AND external_ref LIKE '%:refund:%';
        UPDATE creditgate.grants SET remaining = remaining - v_take WHERE id = v_grant.id;
        INSERT INTO creditgate.grants
          (account_id, key, source, amount, remaining, priority, expires_at, external_ref, reason)
        VALUES (p_account_id, k.key, 'allowance', v_take, v_take, v_grant.priority, now(),
                v_grant.external_ref || ':refund:' || p_charge_id || ':' || v_n, v_grant.reason);
        v_owing := true;
        v_due := v_due - v_take;
        EXIT WHEN v_due <= 0;
      END LOOP;
    END IF;
    IF v_due > 0 AND v_refunded >= p_paid THEN
      -- Refunded in full while open holds keep part of it: the allowance ends now. Those
      -- holds' calls (under way) may still spend what they keep; the rest expires as
      -- they end (98_expiry_and_holds.sql).
      UPDATE creditgate.grants SET expires_at = now()
       WHERE account_id = p_account_id AND key = k.key AND source = 'allowance' AND plan_id = p_plan
         AND period_start = p_start AND live AND expires_at > now();
    END IF;
    -- Still due, and something of the allowance may yet be taken: what holds keep, or what
    -- expired of it (a return to the plan brings that back). What was used never comes back.
    v_owing := v_owing OR (v_due > 0 AND creditgate.allowance_to_come(p_account_id, k.key, p_plan, p_start));
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
  UPDATE creditgate.invoice_refunds SET owing = v_owing
   WHERE invoice_id = p_invoice_id AND owing IS DISTINCT FROM v_owing;
  RETURN jsonb_build_object(
    'outcome', CASE WHEN v_done <> '{}' THEN 'clawed_back' WHEN v_ended THEN 'allowance_ended'
                    WHEN v_spent THEN 'allowance_spent' ELSE 'already_clawed_back' END,
    'clawed_back', v_done);
END
$$;

-- Runs the claw-back again for the account's refunds that are still owing, reading each
-- invoice's plan, period and amount paid from its stored invoice.paid as the refund did.
-- The caller holds the account's lock.
CREATE FUNCTION creditgate.take_owed_refunds(p_account_id text)
RETURNS void LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  r record;
  v_paid jsonb;
  v_period record;
BEGIN
  FOR r IN
    SELECT invoice_id, min(charge_id) AS charge_id FROM creditgate.invoice_refunds
    WHERE account_id = p_account_id AND owing GROUP BY invoice_id ORDER BY invoice_id
  LOOP
    SELECT payload INTO v_paid FROM creditgate.stripe_events
     WHERE object_id = r.invoice_id AND type = 'invoice.paid' AND handled ORDER BY created, received_at LIMIT 1;
    SELECT * INTO v_period FROM creditgate.invoice_period(v_paid #> '{data,object}');
    PERFORM creditgate.claw_back_invoice(r.invoice_id, p_account_id,
      coalesce((v_paid #>> '{data,object,amount_paid}')::bigint, 0), v_period.plan_id,
      to_timestamp(v_period.period_start), r.charge_id);
  END LOOP;
END
$$;

-- The free_hold of 108_request_holds.sql: what the hold frees is first what refunds are
-- owed, then the user's.
CREATE OR REPLACE FUNCTION creditgate.free_hold(p_account_id text, p_key text, p_amount bigint)
RETURNS void LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v_balance creditgate.balances;
  v_left bigint := p_amount;
  v_take bigint;
  g creditgate.grants;
BEGIN
  IF p_amount <= 0 THEN
    RETURN;
  END IF;
  SELECT * INTO v_balance FROM creditgate.balances WHERE account_id = p_account_id AND key = p_key;
  IF v_balance.debt > 0 THEN
    FOR g IN
      SELECT * FROM creditgate.grants
      WHERE account_id = p_account_id AND key = p_key AND live AND expires_at <= now()
      ORDER BY priority, expires_at, id
    LOOP
      v_balance.available := v_left;
      v_take := creditgate.expirable(g, v_balance);
      CONTINUE WHEN v_take <= 0;
      UPDATE creditgate.grants SET remaining = remaining - v_take WHERE id = g.id;
      UPDATE creditgate.balances SET reserved = reserved - v_take
       WHERE account_id = p_account_id AND key = p_key
      RETURNING * INTO v_balance;
      PERFORM creditgate.journal(v_balance, 'expire', -v_take, g.id, NULL, g.source, g.external_ref);
      v_left := v_left - v_take;
    END LOOP;
  END IF;
  -- Nothing consumed, the rest freed (paying debt first).
  PERFORM creditgate.consume(p_account_id, p_key, 0, NULL, v_left);
  PERFORM creditgate.take_owed_refunds(p_account_id);
  PERFORM creditgate.expire_grants(p_account_id, p_key);
END
$$;

SELECT creditgate.secure();
