-- Generated from sql/95_signup_trigger.sql by `creditgate supabase-export`. Edit sql/95_signup_trigger.sql and
-- run the command again; never edit this copy.
-- A Supabase sign-up creates the user's personal account, with its welcome credit and the
-- free plan's first allowance, in the transaction that inserts the auth.users row.
-- (Plain PostgreSQL gets a minimal auth.users from 00_supabase_compat.sql.)
--
-- The plan is always 'free': user metadata is written by the user at sign-up, so it must
-- not choose a plan. A sign-up never fails because of billing: if the account cannot be
-- created here (no catalog loaded yet, say), a warning is logged and the account is
-- created on the user's first authenticated call instead.
CREATE FUNCTION creditgate.on_auth_user_created()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
BEGIN
  BEGIN
    PERFORM creditgate.create_account(new.id::text, 'free', 'user', new.email);
  EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'creditgate: no account created for new user %: % (%)', new.id, SQLERRM, SQLSTATE;
  END;
  RETURN new;
END
$$;

-- The trigger is created once and never dropped here: on Supabase the migration role does
-- not own auth.users, so it may add a trigger but not drop one.
CREATE TRIGGER creditgate_on_auth_user_created
  AFTER INSERT ON auth.users
  FOR EACH ROW EXECUTE FUNCTION creditgate.on_auth_user_created();

SELECT creditgate.secure();

INSERT INTO creditgate.schema_migrations (version) VALUES ('95_signup_trigger') ON CONFLICT DO NOTHING;
