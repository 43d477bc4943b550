-- Generated from sql/124_refunds_and_round_trips.sql by `creditgate supabase-export`. Edit sql/124_refunds_and_round_trips.sql and
-- run the command again; never edit this copy.
-- A plan round trip gave back a refunded allowance. Coming back to a plan within the
-- period it was left in (A -> B -> A) gives back what expired of its allowance
-- (98_expiry_and_holds.sql). What a refund of the invoice that paid for it could not take
-- expired too, and came back with the rest: the part an open hold kept when the refund
-- came (it expires when the hold ends, the allowance being ended by a full refund or by
-- leaving A), and all of it when the refund came while the account was on B (a refund
-- takes nothing from an allowance that no longer runs).
--
-- Now the refunds still owing (123_refunds_under_holds.sql) run again when the allowance
-- comes back: it returns as before, and they take their due share of it in the same
-- call, as they would have had it been running when they came.

-- The return to a plan of 98_expiry_and_holds.sql, then the refunds still owing.
CREATE OR REPLACE FUNCTION creditgate.reinstate_allowances(p_account creditgate.accounts)
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
  PERFORM creditgate.take_owed_refunds(p_account.id);
END
$$;

SELECT creditgate.secure();

INSERT INTO creditgate.schema_migrations (version) VALUES ('124_refunds_and_round_trips') ON CONFLICT DO NOTHING;
