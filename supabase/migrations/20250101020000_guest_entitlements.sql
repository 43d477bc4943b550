-- Generated from sql/120_guest_entitlements.sql by `creditgate supabase-export`. Edit sql/120_guest_entitlements.sql and
-- run the command again; never edit this copy.
-- A guest's entitlements say when the guest limit is reached. They answered from the
-- anonymous plan alone, so a UI drew the chat as open while every gate call of that
-- session (or address) was 429 guest_limit_reached. Now a guest's features and agents of
-- the plan say `guest_limit_reached` (with its `scope`, session or ip, and `upgrade_to`) once
-- either count is used up, and the answer has `guest.exchanges_left` ("2 free messages
-- left"), counted as guest_gate (103_guest_rate_limit.sql) counts.

CREATE FUNCTION creditgate.guest_exchanges_left(p_session text, p_ip inet)
RETURNS jsonb LANGUAGE sql STABLE SET search_path = '' AS $$
  SELECT jsonb_build_object(
    'exchanges_left', greatest(least(s.guest_exchanges_per_session - coalesce(g.exchanges, 0),
                                     CASE WHEN p_ip IS NOT NULL
                                          THEN s.guest_exchanges_per_ip_per_day - coalesce(d.exchanges, 0) END), 0),
    'scope', CASE WHEN coalesce(g.exchanges, 0) >= s.guest_exchanges_per_session THEN 'session'
                  WHEN p_ip IS NOT NULL AND coalesce(d.exchanges, 0) >= s.guest_exchanges_per_ip_per_day THEN 'ip' END)
  FROM creditgate.settings s
  LEFT JOIN creditgate.guest_sessions g ON g.session_id = p_session
  LEFT JOIN creditgate.guest_ip_days d ON d.ip = p_ip AND d.day = (now() AT TIME ZONE 'UTC')::date;
$$;

-- The entitlements of 99_answers_and_names.sql, for a guest: the limit counted.
CREATE OR REPLACE FUNCTION public.creditgate_entitlements(request jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  v_plan creditgate.plans;
  v_account creditgate.accounts;
  v_guest jsonb;
  v_used_up jsonb;
BEGIN
  IF request ->> 'account_id' IS NULL THEN
    SELECT * INTO v_plan FROM creditgate.plans WHERE id = 'anonymous';
    v_guest := creditgate.guest_exchanges_left(request ->> 'session_id', (request ->> 'client_ip')::inet);
    IF (v_guest ->> 'exchanges_left')::integer = 0 THEN
      v_used_up := jsonb_build_object('allowed', false, 'reason', 'guest_limit_reached',
                                      'scope', v_guest ->> 'scope');
    END IF;
  ELSE
    -- As the gate sees it: an ended period rolled, expired grants gone.
    v_account := creditgate.current_account(request ->> 'account_id');
    SELECT * INTO v_plan FROM creditgate.plans WHERE id = v_account.plan_id;
  END IF;
  RETURN jsonb_strip_nulls(jsonb_build_object('guest', v_guest)) || jsonb_build_object(
    'account_id', v_account.id,
    'plan', jsonb_build_object('id', v_plan.id, 'name', v_plan.name),
    'status', coalesce(v_account.status, 'active'),
    'features', (SELECT coalesce(jsonb_object_agg(f.id, CASE
        WHEN f.id = ANY (v_plan.features) THEN jsonb_build_object('kind', f.kind,
          'balance_key', f.balance_key,
          'available', (SELECT available FROM creditgate.balances
                        WHERE account_id = v_account.id AND key = f.balance_key))
          || coalesce(v_used_up || jsonb_build_object('upgrade_to', creditgate.upgrade_to(f.id, NULL)),
                      creditgate.usable(v_account, v_plan, f))
        ELSE jsonb_build_object('allowed', false, 'kind', f.kind, 'reason', 'feature_not_in_plan',
          'upgrade_to', creditgate.upgrade_to(f.id, NULL)) END), '{}')
      FROM creditgate.features f WHERE f.active),
    'agents', (SELECT coalesce(jsonb_object_agg(a.id, CASE
        WHEN a.id = ANY (v_plan.agents) THEN jsonb_build_object('allowed', true, 'name', a.name)
          || coalesce(v_used_up || jsonb_build_object('upgrade_to', creditgate.upgrade_to(NULL, a.id)), '{}')
        ELSE jsonb_build_object('allowed', false, 'name', a.name, 'reason', 'agent_not_in_plan',
          'upgrade_to', creditgate.upgrade_to(NULL, a.id)) END), '{}')
      FROM creditgate.agents a WHERE a.active));
END
$$;

SELECT creditgate.secure();

INSERT INTO creditgate.schema_migrations (version) VALUES ('120_guest_entitlements') ON CONFLICT DO NOTHING;
