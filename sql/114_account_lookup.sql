-- Support looks accounts up: one account as the admin API shows it, and a list filtered by
-- email (as the user typed it, any case), plan or status, a page at a time in id order.

CREATE INDEX accounts_email ON creditgate.accounts (lower(email)) WHERE email IS NOT NULL;

-- Read as the balance read reads it: a period that ended rolls and grants past their time
-- expire first (current_account), so support sees what the user can spend.
CREATE FUNCTION public.creditgate_get_account(request jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  v_answer jsonb;
BEGIN
  PERFORM creditgate.current_account(request ->> 'account_id');
  v_answer := creditgate.account_summary(request ->> 'account_id');
  RETURN v_answer || jsonb_build_object(
    'members', (SELECT coalesce(jsonb_agg(jsonb_build_object('user_id', user_id, 'role', role) ORDER BY user_id), '[]')
                FROM creditgate.account_members WHERE account_id = request ->> 'account_id'));
END
$$;

CREATE FUNCTION public.creditgate_list_accounts(request jsonb)
RETURNS jsonb LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  v_limit integer := least(greatest(coalesce((request ->> 'limit')::integer, 50), 1), 200);
  v_items jsonb;
  v_last text;
  v_count integer;
BEGIN
  SELECT jsonb_agg(jsonb_build_object('account_id', a.id, 'owner', a.owner_kind, 'email', a.email,
           'status', a.status, 'plan', a.plan_id, 'billing_source', a.billing_source,
           'created_at', a.created_at, 'period_end', a.period_end) ORDER BY a.id),
         max(a.id), count(*)
  INTO v_items, v_last, v_count
  FROM (SELECT * FROM creditgate.accounts
        WHERE (request ->> 'cursor' IS NULL OR id > request ->> 'cursor')
          AND (request ->> 'email' IS NULL OR lower(email) = lower(request ->> 'email'))
          AND (request ->> 'plan' IS NULL OR plan_id = request ->> 'plan')
          AND (request ->> 'status' IS NULL OR status = request ->> 'status')
        ORDER BY id LIMIT v_limit) a;
  RETURN jsonb_build_object('items', coalesce(v_items, '[]'),
    'next_cursor', CASE WHEN v_count = v_limit AND EXISTS (
        SELECT 1 FROM creditgate.accounts WHERE id > v_last
          AND (request ->> 'email' IS NULL OR lower(email) = lower(request ->> 'email'))
          AND (request ->> 'plan' IS NULL OR plan_id = request ->> 'plan')
          AND (request ->> 'status' IS NULL OR status = request ->> 'status')) THEN v_last END);
END
$$;

SELECT creditgate.secure();
