-- Scheduled maintenance: one RPC that does a bounded batch of due work and says whether
-- more is left. Gate, usage and balance already roll a due period lazily; this covers
-- the idle accounts, the holds nobody settled, guests, and threshold notices.
--
-- Overlapping runs (a slow run and the next schedule, a retry, two cron sources) are
-- safe: accounts are taken with their own row lock (the one gate and usage take) using
-- SKIP LOCKED, so two runs never work on one account and never wait for each other, and
-- every grant is keyed unique anyway.

-- Where the notice scan has got to in the journal. One row; the run that locks it does
-- the notices, a run that finds it locked skips them.
CREATE TABLE creditgate.maintenance_state (
  id             boolean PRIMARY KEY DEFAULT true CHECK (id),
  notices_cursor bigint NOT NULL DEFAULT 0,
  last_run_at    timestamptz
);
INSERT INTO creditgate.maintenance_state DEFAULT VALUES;

-- All due work of one account, whose row lock the caller holds: stale holds expire (their
-- amount is available again), a local-billing period that ended rolls (expire the old
-- allowance, grant the current period's once), and grants whose time is up expire.
-- Stripe-billed periods are opened by invoice.paid, so for them only expiry happens.
-- The counts come from the journal lines written here: with the lock held, every line
-- of this account after the mark is ours.
CREATE FUNCTION creditgate.maintain_account(p_account creditgate.accounts)
RETURNS jsonb LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v_mark bigint;
  v_res creditgate.reservations;
  v_holds integer := 0;
  v_granted integer;
  v_expired integer;
BEGIN
  SELECT coalesce(max(id), 0) INTO v_mark FROM creditgate.ledger_entries WHERE account_id = p_account.id;
  FOR v_res IN
    SELECT * FROM creditgate.reservations
    WHERE account_id = p_account.id AND status = 'active' AND expires_at <= now()
    ORDER BY expires_at, id
  LOOP
    PERFORM creditgate.close_reservation(v_res, 'expired');
    v_holds := v_holds + 1;
  END LOOP;
  PERFORM creditgate.roll_period(p_account);
  PERFORM creditgate.expire_grants(p_account.id);
  SELECT count(*) FILTER (WHERE kind = 'grant' AND source = 'allowance'),
         count(DISTINCT grant_id) FILTER (WHERE kind = 'expire')
  INTO v_granted, v_expired
  FROM creditgate.ledger_entries WHERE account_id = p_account.id AND id > v_mark;
  RETURN jsonb_build_object('allowances_granted', v_granted, 'grants_expired', v_expired,
                            'reservations_expired', v_holds);
END
$$;

-- Records the 75/90/100 % allowance notices and the low-balance notice, once per account,
-- key, kind and period. Only balances with consumption since the last scan are looked at:
-- the scan follows the journal with a cursor, at most p_lines lines a run. Lines younger
-- than a minute stay ahead of the cursor and are looked at again next run, because a
-- transaction still open now may commit a lower id later; a notice recorded twice is
-- impossible (unique key), one missed is not.
CREATE FUNCTION creditgate.record_notices(p_lines integer)
RETURNS jsonb LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v_state creditgate.maintenance_state;
  v_hi bigint;
  v_seen integer;
  v_young bigint;
  v_cursor bigint;
  v_passed integer;
  v_count integer;
BEGIN
  SELECT * INTO v_state FROM creditgate.maintenance_state FOR UPDATE SKIP LOCKED;
  IF NOT FOUND THEN
    RETURN jsonb_build_object('notices', 0, 'lines', 0, 'more', false);
  END IF;
  SELECT max(id), count(*), min(id) FILTER (WHERE created_at > now() - interval '1 minute')
  INTO v_hi, v_seen, v_young
  FROM (SELECT id, created_at FROM creditgate.ledger_entries
        WHERE id > v_state.notices_cursor AND kind = 'consume'
        ORDER BY id LIMIT p_lines) scanned;
  IF v_seen = 0 THEN
    UPDATE creditgate.maintenance_state SET last_run_at = now();
    RETURN jsonb_build_object('notices', 0, 'lines', 0, 'more', false);
  END IF;

  WITH touched AS (
    SELECT DISTINCT e.account_id, e.key FROM creditgate.ledger_entries e
    WHERE e.id > v_state.notices_cursor AND e.id <= v_hi AND e.kind = 'consume'
  ), period_usage AS (
    -- An account whose period is over is skipped: what it used belongs to the old period.
    SELECT t.account_id, t.key, a.period_start, coalesce((p.allowances ->> t.key)::bigint, 0) AS allowance,
           (SELECT coalesce(-sum(l.amount), 0) FROM creditgate.ledger_entries l
            WHERE l.account_id = t.account_id AND l.key = t.key AND l.kind = 'consume'
              AND l.created_at >= a.period_start) AS used,
           b.available
    FROM touched t
    JOIN creditgate.accounts a ON a.id = t.account_id AND a.period_end > now()
    JOIN creditgate.plans p ON p.id = a.plan_id
    LEFT JOIN creditgate.balances b ON b.account_id = t.account_id AND b.key = t.key
  ), crossed AS (
    SELECT c.account_id, c.key, c.period_start, 'allowance_' || pct AS kind
    FROM period_usage c, unnest(ARRAY[75, 90, 100]) pct
    WHERE c.allowance > 0 AND c.used * 100 >= c.allowance * pct
    UNION ALL
    SELECT c.account_id, c.key, c.period_start, 'low_balance'
    FROM period_usage c, creditgate.settings s
    WHERE c.key = 'credits' AND s.low_balance > 0 AND coalesce(c.available, 0) < s.low_balance
  )
  INSERT INTO creditgate.notices (account_id, key, kind, period_start)
  SELECT account_id, key, kind, period_start FROM crossed
  ON CONFLICT DO NOTHING;
  GET DIAGNOSTICS v_count = ROW_COUNT;

  v_cursor := CASE WHEN v_young IS NOT NULL THEN v_young - 1 ELSE v_hi END;
  UPDATE creditgate.maintenance_state SET notices_cursor = v_cursor, last_run_at = now();
  -- Progress is what the cursor passed for good; young lines looked at again do not count.
  SELECT count(*) INTO v_passed FROM creditgate.ledger_entries
  WHERE id > v_state.notices_cursor AND id <= v_cursor AND kind = 'consume';
  RETURN jsonb_build_object('notices', v_count, 'lines', v_passed,
    'more', v_seen = p_lines AND v_cursor > v_state.notices_cursor);
END
$$;

CREATE FUNCTION public.creditgate_run_maintenance(request jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  v_bad boolean := false;
  v_limit integer;
  v_left integer;
  v_seen text[] := '{}';
  v_account creditgate.accounts;
  v_done jsonb;
  v_granted bigint := 0;
  v_expired bigint := 0;
  v_holds bigint := 0;
  v_guests integer := 0;
  v_swept integer;
  v_swept_more boolean := false;
  v_notices jsonb;
  v_more boolean;
BEGIN
  IF request ? 'limit' THEN
    -- Checked in steps: casting a non-number first would be a 500, not a 422.
    v_bad := jsonb_typeof(request -> 'limit') <> 'number';
    IF NOT v_bad THEN
      v_bad := (request ->> 'limit')::numeric NOT BETWEEN 1 AND 5000 OR (request ->> 'limit')::numeric % 1 <> 0;
    END IF;
  END IF;
  IF v_bad THEN
    PERFORM creditgate.fail(422, 'invalid_request', jsonb_build_object('errors', jsonb_build_array(
      jsonb_build_object('loc', jsonb_build_array('body', 'limit'),
                         'msg', 'limit must be an integer from 1 to 5000'))));
  END IF;
  v_limit := coalesce((request ->> 'limit')::integer, 500);

  -- Three kinds of due account, oldest first; each taken with its lock or skipped.
  v_left := v_limit;
  FOR v_account IN
    SELECT * FROM creditgate.accounts
    WHERE period_end <= now() AND billing_source = 'local'
    ORDER BY period_end LIMIT v_left
    FOR NO KEY UPDATE SKIP LOCKED
  LOOP
    v_done := creditgate.maintain_account(v_account);
    v_seen := v_seen || v_account.id;
    v_granted := v_granted + (v_done ->> 'allowances_granted')::integer;
    v_expired := v_expired + (v_done ->> 'grants_expired')::integer;
    v_holds := v_holds + (v_done ->> 'reservations_expired')::integer;
  END LOOP;

  v_left := v_limit - cardinality(v_seen);
  FOR v_account IN
    SELECT a.* FROM creditgate.reservations r JOIN creditgate.accounts a ON a.id = r.account_id
    WHERE r.status = 'active' AND r.expires_at <= now()
    ORDER BY r.expires_at LIMIT v_left
    -- Locking the hold too makes a row that another run settled meanwhile be re-checked
    -- (and dropped) instead of passing on the version this statement first saw.
    FOR NO KEY UPDATE OF a, r SKIP LOCKED
  LOOP
    CONTINUE WHEN v_account.id = ANY (v_seen);  -- one row per stale hold; the first did them all
    v_done := creditgate.maintain_account(v_account);
    v_seen := v_seen || v_account.id;
    v_granted := v_granted + (v_done ->> 'allowances_granted')::integer;
    v_expired := v_expired + (v_done ->> 'grants_expired')::integer;
    v_holds := v_holds + (v_done ->> 'reservations_expired')::integer;
  END LOOP;

  v_left := v_limit - cardinality(v_seen);
  FOR v_account IN
    SELECT a.* FROM creditgate.grants g
    JOIN creditgate.balances b ON b.account_id = g.account_id AND b.key = g.key
    JOIN creditgate.accounts a ON a.id = g.account_id
    -- Only what expire_grants can take: the part of a grant still reserved waits for its hold.
    WHERE g.live AND g.expires_at <= now() AND b.available > 0
    ORDER BY g.expires_at LIMIT v_left
    FOR NO KEY UPDATE OF a, g, b SKIP LOCKED  -- re-checked on their latest versions, as above
  LOOP
    CONTINUE WHEN v_account.id = ANY (v_seen);
    v_done := creditgate.maintain_account(v_account);
    v_seen := v_seen || v_account.id;
    v_granted := v_granted + (v_done ->> 'allowances_granted')::integer;
    v_expired := v_expired + (v_done ->> 'grants_expired')::integer;
    v_holds := v_holds + (v_done ->> 'reservations_expired')::integer;
  END LOOP;

  -- Guests: expired sessions go with the idempotency keys their gate calls left.
  WITH doomed AS (
    SELECT session_id FROM creditgate.guest_sessions WHERE expires_at <= now()
    ORDER BY expires_at LIMIT v_limit FOR UPDATE SKIP LOCKED
  ), gone AS (
    DELETE FROM creditgate.guest_sessions g USING doomed d WHERE g.session_id = d.session_id
    RETURNING g.session_id
  ), keys AS (
    DELETE FROM creditgate.idempotency_keys k USING gone
    WHERE k.account_id = 'guest:' || gone.session_id
  )
  SELECT count(*) INTO v_guests FROM gone;

  -- Counters nobody reads any more: per-IP guest days older than 90 days (the admin
  -- metrics look back 30 by default), and rate windows older than an hour (only the
  -- current minute counts).
  WITH old AS (
    SELECT ip, day FROM creditgate.guest_ip_days WHERE day < (now() AT TIME ZONE 'UTC')::date - 90
    LIMIT v_limit * 10 FOR UPDATE SKIP LOCKED
  )
  DELETE FROM creditgate.guest_ip_days d USING old WHERE d.ip = old.ip AND d.day = old.day;
  GET DIAGNOSTICS v_swept = ROW_COUNT;
  v_swept_more := v_swept = v_limit * 10;
  WITH old AS (
    SELECT account_id, window_start FROM creditgate.rate_windows WHERE window_start < now() - interval '1 hour'
    LIMIT v_limit * 10 FOR UPDATE SKIP LOCKED
  )
  DELETE FROM creditgate.rate_windows w USING old
  WHERE w.account_id = old.account_id AND w.window_start = old.window_start;
  GET DIAGNOSTICS v_swept = ROW_COUNT;
  v_swept_more := v_swept_more OR v_swept = v_limit * 10;

  -- The journal scan is cheap per line, so its bound does not shrink with small batches.
  v_notices := creditgate.record_notices(greatest(v_limit * 20, 10000));

  -- More is left if anything due remains that this run did not get to (or that another
  -- run holds right now: the next run will find it done or do it).
  v_more := v_swept_more OR (v_notices ->> 'more')::boolean
    OR EXISTS (SELECT 1 FROM creditgate.accounts WHERE period_end <= now() AND billing_source = 'local')
    OR EXISTS (SELECT 1 FROM creditgate.reservations WHERE status = 'active' AND expires_at <= now())
    OR EXISTS (SELECT 1 FROM creditgate.grants g
               JOIN creditgate.balances b ON b.account_id = g.account_id AND b.key = g.key
               WHERE g.live AND g.expires_at <= now() AND b.available > 0)
    OR EXISTS (SELECT 1 FROM creditgate.guest_sessions WHERE expires_at <= now());

  RETURN jsonb_build_object(
    'allowances_granted', v_granted, 'grants_expired', v_expired, 'reservations_expired', v_holds,
    'guest_sessions_deleted', v_guests, 'notices', (v_notices ->> 'notices')::integer,
    'accounts', cardinality(v_seen), 'usage_lines_checked', (v_notices ->> 'lines')::integer,
    'more', v_more);
END
$$;

-- On a database migrated before 90_security.sql existed this secures what is above; on
-- a fresh one secure() does not exist yet and 90_security.sql runs it after this file.
DO $$
BEGIN
  IF to_regprocedure('creditgate.secure()') IS NOT NULL THEN
    PERFORM creditgate.secure();
  END IF;
END
$$;
