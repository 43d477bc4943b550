-- Experiment for `bench/run.py --apply-sql bench/experiments/plpgsql_helpers.sql`:
-- the ledger's four LANGUAGE sql helpers rewritten as LANGUAGE plpgsql, bodies unchanged.
--
-- Why: on PostgreSQL <= 17 a LANGUAGE sql function that cannot be inlined (these cannot:
-- they write, and carry SET search_path) is parsed and planned again on every call from
-- PL/pgSQL, because its plan lives only as long as the calling expression. PL/pgSQL
-- caches its statements' plans for the session. burn_grants, journal and
-- remember_response are called 2-5 times per gate / settle, so their re-planning is the
-- biggest single cost in the bench's profile.
--
-- Copied from sql/20_ledger.sql (ensure_balance, journal, burn_grants) and
-- sql/40_accounts.sql (remember_response). If those change, refresh this file before
-- trusting its numbers: it replaces them in the bench's throwaway database only.
CREATE OR REPLACE FUNCTION creditgate.ensure_balance(p_account_id text, p_key text)
RETURNS void LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
  INSERT INTO creditgate.balances (account_id, key) VALUES (p_account_id, p_key)
  ON CONFLICT DO NOTHING;
END $$;
CREATE OR REPLACE FUNCTION creditgate.journal(
  p_account_id text, p_key text, p_kind text, p_amount bigint,
  p_grant_id bigint DEFAULT NULL, p_usage_id uuid DEFAULT NULL,
  p_source text DEFAULT NULL, p_external_ref text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
  INSERT INTO creditgate.ledger_entries
    (account_id, key, kind, amount, balance_after, grant_id, usage_id, source, external_ref)
  SELECT p_account_id, p_key, p_kind, p_amount, b.available + b.reserved - b.debt,
         p_grant_id, p_usage_id, p_source, p_external_ref
  FROM creditgate.balances b WHERE b.account_id = p_account_id AND b.key = p_key;
END $$;
CREATE OR REPLACE FUNCTION creditgate.burn_grants(p_account_id text, p_key text, p_amount bigint)
RETURNS void LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
  IF p_amount <= 0 THEN RETURN; END IF;
  WITH ordered AS (
    SELECT id, remaining,
           sum(remaining) OVER (ORDER BY priority, expires_at NULLS LAST, id) AS upto
    FROM creditgate.grants
    WHERE account_id = p_account_id AND key = p_key AND remaining > 0
  ), taken AS (
    SELECT id, least(remaining, p_amount - (upto - remaining)) AS take
    FROM ordered WHERE upto - remaining < p_amount
  )
  UPDATE creditgate.grants g SET remaining = g.remaining - t.take
  FROM taken t WHERE g.id = t.id;
END $$;
CREATE OR REPLACE FUNCTION creditgate.remember_response(p_account_id text, p_scope text, p_key text, p_response jsonb)
RETURNS jsonb LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
  UPDATE creditgate.idempotency_keys SET response = p_response
   WHERE account_id = p_account_id AND scope = p_scope AND key = p_key;
  RETURN p_response;
END $$;
