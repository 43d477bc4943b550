-- Generated from sql/102_operator_actions.sql by `creditgate supabase-export`. Edit sql/102_operator_actions.sql and
-- run the command again; never edit this copy.
-- What an operator needs besides grants: a record of every plan and status change (for
-- churn, support and audits), lifting the hold a dispute left (a lost dispute keeps the
-- account on hold until someone decides), and taking credits away.

-- Every change of an account's plan or status, by any path (an operator, Stripe, the
-- monthly roll never changes either), written by a trigger so no path can forget it.
CREATE TABLE creditgate.account_changes (
  id         bigserial PRIMARY KEY,
  account_id text NOT NULL REFERENCES creditgate.accounts (id),
  field      text NOT NULL CHECK (field IN ('plan', 'status', 'allowances')),
  old_value  text,
  new_value  text,
  reason     text,
  at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX account_changes_account ON creditgate.account_changes (account_id, id DESC);
CREATE INDEX account_changes_at ON creditgate.account_changes (at);
GRANT SELECT, INSERT, UPDATE, DELETE ON creditgate.account_changes TO service_role;
GRANT USAGE ON SEQUENCE creditgate.account_changes_id_seq TO service_role;

-- The reason comes from the RPC that made the change (set_config('creditgate.reason', …,
-- true)), when it gave one.
CREATE FUNCTION creditgate.record_account_change()
RETURNS trigger LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v_reason text := nullif(current_setting('creditgate.reason', true), '');
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO creditgate.account_changes (account_id, field, old_value, new_value, reason)
    VALUES (NEW.id, 'plan', NULL, NEW.plan_id, v_reason);
    RETURN NULL;
  END IF;
  IF OLD.plan_id IS DISTINCT FROM NEW.plan_id THEN
    INSERT INTO creditgate.account_changes (account_id, field, old_value, new_value, reason)
    VALUES (NEW.id, 'plan', OLD.plan_id, NEW.plan_id, v_reason);
  END IF;
  IF OLD.status IS DISTINCT FROM NEW.status THEN
    INSERT INTO creditgate.account_changes (account_id, field, old_value, new_value, reason)
    VALUES (NEW.id, 'status', OLD.status, NEW.status, v_reason);
  END IF;
  RETURN NULL;
END
$$;

CREATE TRIGGER account_changed AFTER INSERT OR UPDATE OF plan_id, status ON creditgate.accounts
  FOR EACH ROW EXECUTE FUNCTION creditgate.record_account_change();

-- Accounts that exist already start their history with the plan they are on.
INSERT INTO creditgate.account_changes (account_id, field, old_value, new_value, reason, at)
SELECT id, 'plan', NULL, plan_id, 'on this plan when history began', created_at FROM creditgate.accounts;

-- An account's changes, newest first.
CREATE FUNCTION public.creditgate_account_history(request jsonb)
RETURNS jsonb LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = '' AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM creditgate.accounts WHERE id = request ->> 'account_id') THEN
    PERFORM creditgate.fail(404, 'account_not_found', jsonb_build_object('account_id', request ->> 'account_id'));
  END IF;
  RETURN jsonb_build_object('account_id', request ->> 'account_id', 'items', coalesce((
    SELECT jsonb_agg(jsonb_build_object('id', id, 'at', at, 'field', field, 'from', old_value, 'to', new_value,
                                        'reason', reason) ORDER BY id DESC)
    FROM (SELECT * FROM creditgate.account_changes WHERE account_id = request ->> 'account_id'
          ORDER BY id DESC LIMIT 200) c), '[]'));
END
$$;

-- Lifts a hold: an account a dispute put on hold is active again (after a lost dispute the
-- claw-back already happened; whether to keep serving the customer is the operator's call).
CREATE FUNCTION public.creditgate_lift_hold(request jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  v_account creditgate.accounts := creditgate.lock_account(request ->> 'account_id');
BEGIN
  PERFORM set_config('creditgate.reason', request ->> 'reason', true);
  UPDATE creditgate.accounts SET status = 'active' WHERE id = v_account.id AND status <> 'active';
  RETURN creditgate.account_summary(v_account.id) || jsonb_build_object('was', v_account.status);
END
$$;

-- Takes credits away (a correction, a chargeback handled outside Stripe): an `adjustment`
-- line. What is available pays; the rest becomes debt, as usage does. Idempotent by key.
CREATE FUNCTION public.creditgate_debit(request jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  v_account_id text := request ->> 'account_id';
  v_key text := coalesce(request ->> 'key', 'credits');
  v_idem text := request ->> 'idempotency_key';
  v_amount bigint := (request ->> 'amount')::bigint;
  v_previous jsonb;
  v_paid bigint;
  v_balance creditgate.balances;
BEGIN
  PERFORM creditgate.roll_period(creditgate.lock_account(v_account_id));
  v_previous := creditgate.claim_idempotency(v_account_id, 'debit', v_idem, request);
  IF v_previous IS NOT NULL THEN
    RETURN v_previous || jsonb_build_object('replayed', true);
  END IF;
  IF NOT creditgate.known_key(v_key) THEN
    PERFORM creditgate.fail(422, 'invalid_request', jsonb_build_object('errors',
      jsonb_build_array(jsonb_build_object('loc', jsonb_build_array('body', 'key'),
                                           'msg', 'no plan or feature of the catalog uses the key ' || v_key))));
  END IF;
  PERFORM creditgate.ensure_balance(v_account_id, v_key);
  SELECT least(available, v_amount) INTO v_paid FROM creditgate.balances
  WHERE account_id = v_account_id AND key = v_key;
  UPDATE creditgate.balances
     SET available = available - v_paid, debt = debt + (v_amount - v_paid)
   WHERE account_id = v_account_id AND key = v_key
  RETURNING * INTO v_balance;
  PERFORM creditgate.burn_grants(v_account_id, v_key, v_paid);
  PERFORM creditgate.journal(v_balance, 'adjustment', -v_amount, NULL, NULL, 'adjustment', 'debit:' || v_idem);
  RETURN creditgate.remember_response(v_account_id, 'debit', v_idem, jsonb_build_object(
    'account_id', v_account_id, 'key', v_key, 'amount', v_amount, 'debt_added', v_amount - v_paid,
    'reason', request ->> 'reason',
    'balance', jsonb_build_object('key', v_key, 'available', v_balance.available, 'debt', v_balance.debt)));
END
$$;

SELECT creditgate.secure();

INSERT INTO creditgate.schema_migrations (version) VALUES ('102_operator_actions') ON CONFLICT DO NOTHING;
