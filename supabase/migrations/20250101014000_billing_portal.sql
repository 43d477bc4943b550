-- Generated from sql/100_billing_portal.sql by `creditgate supabase-export`. Edit sql/100_billing_portal.sql and
-- run the command again; never edit this copy.
-- The Stripe customer an account pays as: what its billing portal opens on (Stripe's
-- hosted page where a subscriber changes or cancels the plan, updates the card and reads
-- invoices). Those changes come back as subscription events, which the webhook applies.
-- With `user_id`, also that user's role in the account: only an owner manages billing.
CREATE FUNCTION public.creditgate_billing_customer(request jsonb)
RETURNS jsonb LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  v creditgate.accounts;
BEGIN
  SELECT * INTO v FROM creditgate.accounts WHERE id = request ->> 'account_id';
  IF NOT FOUND THEN
    PERFORM creditgate.fail(404, 'account_not_found', jsonb_build_object('account_id', request ->> 'account_id'));
  END IF;
  RETURN jsonb_build_object('account_id', v.id, 'stripe_customer_id', v.stripe_customer_id,
                            'plan', v.plan_id, 'billing_source', v.billing_source,
                            'role', (SELECT role FROM creditgate.account_members
                                     WHERE account_id = v.id AND user_id = request ->> 'user_id'));
END
$$;

SELECT creditgate.secure();

INSERT INTO creditgate.schema_migrations (version) VALUES ('100_billing_portal') ON CONFLICT DO NOTHING;
