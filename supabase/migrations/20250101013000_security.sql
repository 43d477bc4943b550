-- Generated from sql/90_security.sql by `creditgate supabase-export`. Edit sql/90_security.sql and
-- run the command again; never edit this copy.
-- Who may touch what. New functions are executable by PUBLIC, and on Supabase also
-- explicitly by anon and authenticated: revoking from PUBLIC alone leaves those two. So
-- every creditgate function is revoked from all three and granted to service_role only;
-- every table has RLS enabled and forced. Later migrations end with
-- `SELECT creditgate.secure();` so nothing they add is left open.

CREATE OR REPLACE FUNCTION creditgate.secure()
RETURNS void LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  f record;
  t record;
BEGIN
  FOR f IN
    SELECT p.oid::regprocedure AS sig, p.proname
    FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
    WHERE (n.nspname = 'creditgate' OR (n.nspname = 'public' AND p.proname LIKE 'creditgate\_%'))
      AND p.prokind IN ('f', 'p')
  LOOP
    EXECUTE format('REVOKE ALL ON ROUTINE %s FROM PUBLIC, anon, authenticated', f.sig);
    EXECUTE format('GRANT EXECUTE ON ROUTINE %s TO service_role', f.sig);
  END LOOP;
  -- The offer and the price list are public: a pricing page may read them with the anon key.
  GRANT EXECUTE ON FUNCTION public.creditgate_catalog() TO anon, authenticated;
  GRANT EXECUTE ON FUNCTION public.creditgate_prices() TO anon, authenticated;
  -- RLS policies call this as the signed-in user.
  IF to_regprocedure('creditgate.my_account_ids()') IS NOT NULL THEN
    GRANT EXECUTE ON FUNCTION creditgate.my_account_ids() TO authenticated;
  END IF;

  FOR t IN
    SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'creditgate' AND c.relkind IN ('r', 'p')
  LOOP
    EXECUTE format('ALTER TABLE creditgate.%I ENABLE ROW LEVEL SECURITY', t.relname);
    EXECUTE format('ALTER TABLE creditgate.%I FORCE ROW LEVEL SECURITY', t.relname);
    -- FORCE applies RLS to the owner too; the SECURITY DEFINER functions run as the owner
    -- (the role that ran the migrations), which must still see everything.
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_policies
                   WHERE schemaname = 'creditgate' AND tablename = t.relname AND policyname = 'ledger_owner') THEN
      EXECUTE format('CREATE POLICY ledger_owner ON creditgate.%I TO %I USING (true) WITH CHECK (true)',
                     t.relname, current_user);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_policies
                   WHERE schemaname = 'creditgate' AND tablename = t.relname AND policyname = 'service_role_all') THEN
      EXECUTE format('CREATE POLICY service_role_all ON creditgate.%I TO service_role USING (true) WITH CHECK (true)',
                     t.relname);
    END IF;
  END LOOP;
END
$$;

REVOKE ALL ON SCHEMA creditgate FROM PUBLIC;
GRANT USAGE ON SCHEMA creditgate TO service_role, authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA creditgate TO service_role;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA creditgate TO service_role;

-- A signed-in user reads the rows of the accounts they belong to, nothing else, and
-- writes nothing: every change goes through an RPC.
CREATE FUNCTION creditgate.my_account_ids()
RETURNS SETOF text LANGUAGE sql STABLE SECURITY DEFINER SET search_path = '' AS $$
  SELECT account_id FROM creditgate.account_members WHERE user_id = (SELECT auth.uid())::text;
$$;

GRANT SELECT ON creditgate.accounts, creditgate.account_members, creditgate.balances,
  creditgate.grants, creditgate.ledger_entries, creditgate.usage_events, creditgate.orders,
  creditgate.reservations TO authenticated;

CREATE POLICY member_reads ON creditgate.account_members FOR SELECT TO authenticated
  USING (user_id = (SELECT auth.uid())::text);
CREATE POLICY member_reads ON creditgate.accounts FOR SELECT TO authenticated
  USING (id IN (SELECT creditgate.my_account_ids()));
CREATE POLICY member_reads ON creditgate.balances FOR SELECT TO authenticated
  USING (account_id IN (SELECT creditgate.my_account_ids()));
CREATE POLICY member_reads ON creditgate.grants FOR SELECT TO authenticated
  USING (account_id IN (SELECT creditgate.my_account_ids()));
CREATE POLICY member_reads ON creditgate.ledger_entries FOR SELECT TO authenticated
  USING (account_id IN (SELECT creditgate.my_account_ids()));
CREATE POLICY member_reads ON creditgate.usage_events FOR SELECT TO authenticated
  USING (account_id IN (SELECT creditgate.my_account_ids()));
CREATE POLICY member_reads ON creditgate.orders FOR SELECT TO authenticated
  USING (account_id IN (SELECT creditgate.my_account_ids()));
CREATE POLICY member_reads ON creditgate.reservations FOR SELECT TO authenticated
  USING (account_id IN (SELECT creditgate.my_account_ids()));

-- Views in `public` so supabase-js can read them; security_invoker keeps the caller's RLS.
CREATE VIEW public.creditgate_my_balances WITH (security_invoker = true) AS
  SELECT account_id, key, available, reserved, debt FROM creditgate.balances;
CREATE VIEW public.creditgate_my_transactions WITH (security_invoker = true) AS
  SELECT id, account_id, key, kind, amount, balance_after, source, usage_id, created_at
  FROM creditgate.ledger_entries;
CREATE VIEW public.creditgate_my_usage WITH (security_invoker = true) AS
  SELECT id, account_id, user_id, feature_id, agent_id, provider, model, input_tokens, output_tokens,
         cached_input_tokens, reasoning_tokens, quantity, key, cost, created_at
  FROM creditgate.usage_events;
CREATE VIEW public.creditgate_my_orders WITH (security_invoker = true) AS
  SELECT id, account_id, kind, item_id, status, amount_minor, currency, credits, created_at
  FROM creditgate.orders;
-- Supabase's default privileges give anon and authenticated everything on new objects in
-- public: take it all back, then give readers exactly SELECT.
REVOKE ALL ON public.creditgate_my_balances, public.creditgate_my_transactions,
  public.creditgate_my_usage, public.creditgate_my_orders FROM PUBLIC, anon, authenticated;
GRANT SELECT ON public.creditgate_my_balances, public.creditgate_my_transactions,
  public.creditgate_my_usage, public.creditgate_my_orders TO authenticated, service_role;

SELECT creditgate.secure();

INSERT INTO creditgate.schema_migrations (version) VALUES ('90_security') ON CONFLICT DO NOTHING;
