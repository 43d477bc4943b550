-- Generated from sql/97_notice_delivery.sql by `creditgate supabase-export`. Edit sql/97_notice_delivery.sql and
-- run the command again; never edit this copy.
-- Threshold notices go out: after each maintenance run the scheduler posts every recorded
-- notice to the app's webhook (CREDITGATE_NOTICES_WEBHOOK_URL), which emails the user.
-- Delivery is at least once: a batch is leased (its next attempt pushed out, with backoff),
-- marked delivered when the app answers 2xx, and offered again once the lease ends when it
-- did not. The notice id lets the app drop a repeat. A notice is given up after ten
-- attempts, and unsent when it has gone stale: its period is over, or it is a week old.

ALTER TABLE creditgate.notices
  ADD COLUMN delivered_at timestamptz,
  ADD COLUMN gave_up_at timestamptz,
  ADD COLUMN attempts integer NOT NULL DEFAULT 0,
  ADD COLUMN next_attempt_at timestamptz NOT NULL DEFAULT now();

-- Notices recorded before there was anything to deliver them: an upgrade must not mail
-- out a backlog.
UPDATE creditgate.notices SET gave_up_at = now();

CREATE INDEX notices_due ON creditgate.notices (next_attempt_at)
  WHERE delivered_at IS NULL AND gave_up_at IS NULL;

-- Leases up to `limit` due notices and returns them as the webhook's bodies, with the
-- account's balance as it is now. Two runs at once take different notices (SKIP LOCKED).
CREATE FUNCTION public.creditgate_lease_notices(request jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  v_limit integer := least(greatest(coalesce((request ->> 'limit')::integer, 100), 1), 1000);
  v_notices jsonb;
BEGIN
  -- Stale: a webhook configured late, or one that was down for a week, must not send
  -- last month's "90 % used" to a user whose allowance has since been renewed.
  UPDATE creditgate.notices n SET gave_up_at = now()
   WHERE n.delivered_at IS NULL AND n.gave_up_at IS NULL AND n.next_attempt_at <= now()
     AND (n.created_at < now() - interval '7 days'
          OR NOT EXISTS (SELECT 1 FROM creditgate.accounts a
                         WHERE a.id = n.account_id AND a.period_start = n.period_start));
  WITH due AS (
    SELECT id FROM creditgate.notices
    WHERE delivered_at IS NULL AND gave_up_at IS NULL AND next_attempt_at <= now()
    ORDER BY next_attempt_at, id LIMIT v_limit
    FOR UPDATE SKIP LOCKED
  ), leased AS (
    UPDATE creditgate.notices n
       SET attempts = n.attempts + 1,
           next_attempt_at = now() + least(interval '5 minutes' * power(2, n.attempts), interval '1 day')
      FROM due WHERE n.id = due.id
    RETURNING n.*
  )
  SELECT jsonb_agg(jsonb_build_object(
           'id', l.id, 'type', 'notice.' || l.kind, 'kind', l.kind, 'account_id', l.account_id,
           'email', a.email, 'plan', a.plan_id, 'key', l.key, 'period_start', l.period_start,
           'resets_at', a.period_end, 'created_at', l.created_at, 'attempt', l.attempts,
           'balance', jsonb_build_object(
             'available', coalesce(b.available, 0), 'debt', coalesce(b.debt, 0),
             'allowance', coalesce((p.allowances ->> l.key)::bigint, 0),
             'used_this_period', coalesce(b.used_this_period, 0)))
         ORDER BY l.id)
  INTO v_notices
  FROM leased l
  JOIN creditgate.accounts a ON a.id = l.account_id
  JOIN creditgate.plans p ON p.id = a.plan_id
  LEFT JOIN creditgate.balances b ON b.account_id = l.account_id AND b.key = l.key;
  RETURN jsonb_build_object('notices', coalesce(v_notices, '[]'));
END
$$;

-- Ends a lease: `delivered` the app took (2xx); `untried` were leased but not posted (the
-- run stopped at a failure or ran out of time), so they get their attempt back and are due
-- again; the rest keep their backoff, and a tenth failed attempt gives the notice up.
CREATE FUNCTION public.creditgate_settle_notices(request jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  v_delivered integer;
  v_gave_up integer;
BEGIN
  UPDATE creditgate.notices SET delivered_at = now()
   WHERE id IN (SELECT jsonb_array_elements_text(coalesce(request -> 'delivered', '[]'))::bigint)
     AND delivered_at IS NULL;
  GET DIAGNOSTICS v_delivered = ROW_COUNT;
  UPDATE creditgate.notices SET attempts = attempts - 1, next_attempt_at = now()
   WHERE id IN (SELECT jsonb_array_elements_text(coalesce(request -> 'untried', '[]'))::bigint)
     AND delivered_at IS NULL AND attempts > 0;
  UPDATE creditgate.notices SET gave_up_at = now()
   WHERE id IN (SELECT jsonb_array_elements_text(coalesce(request -> 'failed', '[]'))::bigint)
     AND delivered_at IS NULL AND gave_up_at IS NULL AND attempts >= 10;
  GET DIAGNOSTICS v_gave_up = ROW_COUNT;
  RETURN jsonb_build_object('delivered', v_delivered, 'gave_up', v_gave_up);
END
$$;

SELECT creditgate.secure();

INSERT INTO creditgate.schema_migrations (version) VALUES ('97_notice_delivery') ON CONFLICT DO NOTHING;
