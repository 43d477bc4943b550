-- Installing creditgate into an app that already has users: their accounts, and a
-- one-time grant to every account ("existing users get 5 credits"), in bounded batches an
-- operator runs until `more` is false (`creditgate backfill`). Both are idempotent: a user
-- with an account is skipped, and each account's grant is keyed by the backfill's tag.

-- Up to `limit` Supabase users (auth.users) without an account get one, as a sign-up
-- would have made it (welcome credit, the plan's first allowance). Oldest users first.
CREATE FUNCTION public.creditgate_backfill_accounts(request jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  v_limit integer := least(greatest(coalesce((request ->> 'limit')::integer, 500), 1), 5000);
  v_plan text := coalesce(request ->> 'plan', 'free');
  u record;
  v_created integer := 0;
BEGIN
  IF v_plan = 'anonymous' THEN
    PERFORM creditgate.fail(422, 'unknown_plan', jsonb_build_object('plan', v_plan));
  END IF;
  FOR u IN
    SELECT au.id::text AS id, au.email FROM auth.users au
    WHERE NOT EXISTS (SELECT 1 FROM creditgate.accounts a WHERE a.id = au.id::text)
    ORDER BY au.created_at, au.id LIMIT v_limit
  LOOP
    IF creditgate.create_account(u.id, v_plan, 'user', u.email) THEN
      v_created := v_created + 1;
    END IF;
  END LOOP;
  RETURN jsonb_build_object('created', v_created, 'more', EXISTS (
    SELECT 1 FROM auth.users au WHERE NOT EXISTS (SELECT 1 FROM creditgate.accounts a WHERE a.id = au.id::text)));
END
$$;

-- A grant of `amount` to up to `limit` accounts after `after` (ids in order), each keyed
-- "backfill:<tag>" so running it again grants nothing twice.
CREATE FUNCTION public.creditgate_backfill_grant(request jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  v_limit integer := least(greatest(coalesce((request ->> 'limit')::integer, 500), 1), 5000);
  v_id text;
  v_last text;
  v_answer jsonb;
  v_granted integer := 0;
BEGIN
  FOR v_id IN
    SELECT id FROM creditgate.accounts WHERE id > coalesce(request ->> 'after', '') ORDER BY id LIMIT v_limit
  LOOP
    v_answer := public.creditgate_grant_credits(jsonb_build_object(
      'account_id', v_id, 'amount', (request ->> 'amount')::bigint, 'key', coalesce(request ->> 'key', 'credits'),
      'source', coalesce(request ->> 'source', 'promo'), 'reason', request ->> 'reason',
      'idempotency_key', 'backfill:' || (request ->> 'tag')));
    IF NOT coalesce((v_answer ->> 'replayed')::boolean, false) THEN
      v_granted := v_granted + 1;
    END IF;
    v_last := v_id;
  END LOOP;
  RETURN jsonb_build_object('granted', v_granted, 'last', v_last,
    'more', v_last IS NOT NULL AND EXISTS (SELECT 1 FROM creditgate.accounts WHERE id > v_last));
END
$$;

SELECT creditgate.secure();
