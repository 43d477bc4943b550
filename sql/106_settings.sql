-- Settings the catalog carries beyond what its first RPC knows, set by `creditgate catalog
-- apply` through creditgate_apply_settings:
--
-- Periods on the calendar: with `periods = "calendar"`, new accounts reset on the 1st of
-- each month (UTC) instead of on the day they were created. Accounts that exist keep their
-- anchor; Stripe-billed accounts follow Stripe's periods either way.
--
-- Operator alerts (107_operator_alerts.sql): `alert_daily_cost_usd`, the provider cost a
-- day may reach before the operator is told (0: never).

ALTER TABLE creditgate.settings
  ADD COLUMN period_mode text NOT NULL DEFAULT 'signup' CHECK (period_mode IN ('signup', 'calendar')),
  ADD COLUMN alert_daily_cost_pico_usd bigint NOT NULL DEFAULT 0 CHECK (alert_daily_cost_pico_usd >= 0);

CREATE FUNCTION public.creditgate_apply_settings(request jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
BEGIN
  UPDATE creditgate.settings SET
    period_mode = coalesce(request ->> 'periods', 'signup'),
    alert_daily_cost_pico_usd = coalesce((request ->> 'alert_daily_cost_pico_usd')::bigint, 0);
  RETURN (SELECT jsonb_build_object('periods', period_mode, 'alert_daily_cost_pico_usd', alert_daily_cost_pico_usd)
          FROM creditgate.settings);
END
$$;

-- The account creation of 40_accounts.sql, anchored as the settings say.
CREATE OR REPLACE FUNCTION creditgate.create_account(p_account_id text, p_plan_id text, p_owner text, p_email text)
RETURNS boolean LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v_account creditgate.accounts;
  v_welcome bigint;
  v_anchor timestamptz;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM creditgate.plans WHERE id = p_plan_id AND active) THEN
    PERFORM creditgate.fail(422, 'unknown_plan', jsonb_build_object('plan', p_plan_id));
  END IF;
  -- Calendar months: anchored at the start of this month (UTC), so every account resets on
  -- the 1st; the first period is the rest of this month, with its whole allowance.
  SELECT CASE period_mode WHEN 'calendar' THEN date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
              ELSE now() END
  INTO v_anchor FROM creditgate.settings;
  INSERT INTO creditgate.accounts (id, owner_kind, email, plan_id, period_anchor, period_start, period_end)
  SELECT p_account_id, p_owner, p_email, p_plan_id, v_anchor, c.period_start, c.period_end
  FROM creditgate.period_containing(v_anchor, now()) c
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

SELECT creditgate.secure();
