-- Generated from sql/40_accounts.sql by `creditgate supabase-export`. Edit sql/40_accounts.sql and
-- run the command again; never edit this copy.
-- Accounts: created once (welcome credit and the first period's allowance with them),
-- members, plan changes and operator grants.

-- Idempotency: the first call claims (account, scope, key) with the hash of its body and
-- stores its answer before committing. A concurrent replay waits on the claim's row and
-- then reads that answer; another body under the same key is a conflict. A call that is
-- denied rolls back its claim, so the key stays free for a retry.
CREATE FUNCTION creditgate.claim_idempotency(p_account_id text, p_scope text, p_key text, p_request jsonb)
RETURNS jsonb LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v_hash text := md5((p_request - 'client_ip')::text);
  v_row creditgate.idempotency_keys;
BEGIN
  INSERT INTO creditgate.idempotency_keys (account_id, scope, key, request_hash)
  VALUES (p_account_id, p_scope, p_key, v_hash)
  ON CONFLICT DO NOTHING;
  IF FOUND THEN
    RETURN NULL;
  END IF;
  SELECT * INTO v_row FROM creditgate.idempotency_keys
  WHERE account_id = p_account_id AND scope = p_scope AND key = p_key;
  IF v_row.request_hash <> v_hash OR v_row.response IS NULL THEN
    PERFORM creditgate.fail(409, 'idempotency_conflict',
      jsonb_build_object('idempotency_key', p_key, 'scope', p_scope));
  END IF;
  RETURN v_row.response;
END
$$;

CREATE FUNCTION creditgate.remember_response(p_account_id text, p_scope text, p_key text, p_response jsonb)
RETURNS jsonb LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
  UPDATE creditgate.idempotency_keys SET response = p_response
   WHERE account_id = p_account_id AND scope = p_scope AND key = p_key;
  RETURN p_response;
END
$$;

-- Creates the account if it does not exist; concurrent calls meet on the primary key, so
-- the welcome grant and first allowance happen exactly once.
CREATE FUNCTION creditgate.create_account(p_account_id text, p_plan_id text, p_owner text, p_email text)
RETURNS boolean LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v_account creditgate.accounts;
  v_welcome bigint;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM creditgate.plans WHERE id = p_plan_id AND active) THEN
    PERFORM creditgate.fail(422, 'unknown_plan', jsonb_build_object('plan', p_plan_id));
  END IF;
  INSERT INTO creditgate.accounts (id, owner_kind, email, plan_id, period_anchor, period_start, period_end)
  VALUES (p_account_id, p_owner, p_email, p_plan_id, now(), now(), now() + interval '1 month')
  ON CONFLICT (id) DO NOTHING
  RETURNING * INTO v_account;
  IF v_account.id IS NULL THEN
    RETURN false;
  END IF;
  PERFORM creditgate.ensure_balance(p_account_id, 'credits');
  SELECT welcome_credits INTO v_welcome FROM creditgate.settings;
  IF v_welcome > 0 THEN
    PERFORM creditgate.add_grant(p_account_id, 'credits', 'welcome', v_welcome, 'welcome', NULL, 'welcome credit');
  END IF;
  PERFORM creditgate.grant_allowances(v_account);
  IF p_owner = 'user' THEN
    INSERT INTO creditgate.account_members (account_id, user_id, role)
    VALUES (p_account_id, p_account_id, 'owner') ON CONFLICT DO NOTHING;
  END IF;
  RETURN true;
END
$$;

CREATE FUNCTION creditgate.account_summary(p_account_id text)
RETURNS jsonb LANGUAGE sql STABLE SET search_path = '' AS $$
  SELECT jsonb_build_object(
    'account_id', a.id, 'owner', a.owner_kind, 'email', a.email, 'status', a.status,
    'plan', jsonb_build_object('id', p.id, 'name', p.name),
    'period_start', a.period_start, 'period_end', a.period_end, 'created_at', a.created_at,
    'balances', (SELECT coalesce(jsonb_agg(jsonb_build_object('key', b.key, 'available', b.available,
                   'reserved', b.reserved, 'debt', b.debt) ORDER BY b.key), '[]')
                 FROM creditgate.balances b WHERE b.account_id = a.id))
  FROM creditgate.accounts a JOIN creditgate.plans p ON p.id = a.plan_id
  WHERE a.id = p_account_id;
$$;

CREATE FUNCTION public.creditgate_ensure_account(request jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  v_created boolean;
BEGIN
  v_created := creditgate.create_account(request ->> 'account_id', coalesce(request ->> 'plan', 'free'),
                                         coalesce(request ->> 'owner', 'user'), request ->> 'email');
  RETURN creditgate.account_summary(request ->> 'account_id') || jsonb_build_object('created', v_created);
END
$$;

CREATE FUNCTION public.creditgate_set_member(request jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
BEGIN
  PERFORM creditgate.lock_account(request ->> 'account_id');
  INSERT INTO creditgate.account_members (account_id, user_id, role)
  VALUES (request ->> 'account_id', request ->> 'user_id', coalesce(request ->> 'role', 'member'))
  ON CONFLICT (account_id, user_id) DO UPDATE SET role = excluded.role;
  RETURN jsonb_build_object('account_id', request ->> 'account_id', 'user_id', request ->> 'user_id',
                            'role', coalesce(request ->> 'role', 'member'));
END
$$;

-- Whether a signed-in user may act for an account: its own personal account, or an org
-- account it is a member of.
CREATE FUNCTION public.creditgate_is_member(request jsonb)
RETURNS boolean LANGUAGE sql STABLE SECURITY DEFINER SET search_path = '' AS $$
  SELECT EXISTS (SELECT 1 FROM creditgate.account_members
                 WHERE account_id = request ->> 'account_id' AND user_id = request ->> 'user_id');
$$;

-- A plan change: the old plan's allowance for this period expires, the new plan's is
-- granted for the same period. Stripe-driven changes pass their own period bounds.
CREATE FUNCTION creditgate.apply_plan(p_account creditgate.accounts, p_plan_id text,
  p_period_start timestamptz DEFAULT NULL, p_period_end timestamptz DEFAULT NULL,
  p_billing_source text DEFAULT NULL)
RETURNS creditgate.accounts LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM creditgate.plans WHERE id = p_plan_id AND active) THEN
    PERFORM creditgate.fail(422, 'unknown_plan', jsonb_build_object('plan', p_plan_id));
  END IF;
  IF p_plan_id = p_account.plan_id AND p_period_start IS NOT DISTINCT FROM NULL THEN
    RETURN p_account;
  END IF;
  IF p_plan_id <> p_account.plan_id THEN
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
  RETURN p_account;
END
$$;

CREATE FUNCTION public.creditgate_change_plan(request jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  v_account creditgate.accounts;
BEGIN
  v_account := creditgate.lock_account(request ->> 'account_id');
  v_account := creditgate.roll_period(v_account);
  PERFORM creditgate.apply_plan(v_account, request ->> 'plan');
  RETURN creditgate.account_summary(v_account.id);
END
$$;

-- An operator's grant (promo, adjustment): idempotent by the caller's key.
CREATE FUNCTION public.creditgate_grant_credits(request jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  v_account_id text := request ->> 'account_id';
  v_key text := coalesce(request ->> 'key', 'credits');
  v_idem text := request ->> 'idempotency_key';
  v_previous jsonb;
  v_grant jsonb;
BEGIN
  PERFORM creditgate.lock_account(v_account_id);
  v_previous := creditgate.claim_idempotency(v_account_id, 'grant', v_idem, request);
  IF v_previous IS NOT NULL THEN
    RETURN v_previous || jsonb_build_object('replayed', true);
  END IF;
  IF (request ->> 'expires_at')::timestamptz <= now() THEN
    PERFORM creditgate.fail(422, 'invalid_request', jsonb_build_object('errors',
      jsonb_build_array(jsonb_build_object('loc', jsonb_build_array('body', 'expires_at'),
                                           'msg', 'expires_at must be in the future'))));
  END IF;
  v_grant := creditgate.add_grant(v_account_id, v_key, request ->> 'source', (request ->> 'amount')::bigint,
    'grant:' || v_idem, (request ->> 'expires_at')::timestamptz, request ->> 'reason');
  RETURN creditgate.remember_response(v_account_id, 'grant', v_idem,
    v_grant || jsonb_build_object('account_id', v_account_id, 'reason', request ->> 'reason',
      'balance', (SELECT jsonb_build_object('key', key, 'available', available, 'debt', debt)
                  FROM creditgate.balances WHERE account_id = v_account_id AND key = v_key)));
END
$$;

INSERT INTO creditgate.schema_migrations (version) VALUES ('40_accounts') ON CONFLICT DO NOTHING;
