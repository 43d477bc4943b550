-- Generated from sql/96_used_this_period.sql by `creditgate supabase-export`. Edit sql/96_used_this_period.sql and
-- run the command again; never edit this copy.
-- What each balance used this period is kept on the balance row, moved by the same UPDATE
-- that charges it. The balance read, the threshold notices and the metrics used to sum the
-- period's `consume` lines instead, and the journal is indexed by id, not time, so that
-- cost grew with every call the account had ever made.

ALTER TABLE creditgate.balances
  ADD COLUMN used_this_period bigint NOT NULL DEFAULT 0 CHECK (used_this_period >= 0);

-- Counts the account's consumption since `p_since` again from the journal, for every key.
-- Lines are walked newest first and the walk stops five minutes before `p_since`: a line's
-- created_at is its transaction's start, and one account's lines are written in the order
-- its calls got the account lock, so ids and times disagree by a call's wait for that lock,
-- never by minutes. The work is the lines written since then, not the history.
CREATE FUNCTION creditgate.recount_period_usage(p_account_id text, p_since timestamptz)
RETURNS void LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v_line record;
  v_from bigint;
BEGIN
  FOR v_line IN
    SELECT id, created_at FROM creditgate.ledger_entries WHERE account_id = p_account_id ORDER BY id DESC
  LOOP
    EXIT WHEN v_line.created_at < p_since - interval '5 minutes';
    v_from := v_line.id;
  END LOOP;
  UPDATE creditgate.balances b
     SET used_this_period = coalesce((SELECT -sum(e.amount) FROM creditgate.ledger_entries e
                                      WHERE e.account_id = p_account_id AND e.key = b.key AND e.kind = 'consume'
                                        AND e.id >= v_from AND e.created_at >= p_since), 0)
   WHERE b.account_id = p_account_id;
END
$$;

-- Whatever moves a period (the monthly roll, a plan change, Stripe's invoice.paid)
-- recounts, so the counters always belong to the account's current period_start.
CREATE FUNCTION creditgate.period_moved()
RETURNS trigger LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
  PERFORM creditgate.recount_period_usage(NEW.id, NEW.period_start);
  RETURN NULL;
END
$$;

CREATE TRIGGER period_moved AFTER UPDATE OF period_start ON creditgate.accounts
  FOR EACH ROW WHEN (OLD.period_start IS DISTINCT FROM NEW.period_start)
  EXECUTE FUNCTION creditgate.period_moved();

SELECT count(creditgate.recount_period_usage(id, period_start)) FROM creditgate.accounts;

-- The functions that charge a balance add to the counter in their UPDATE; the ones that
-- read usage read it. The gate's guarded debit and the strict request count, restated for
-- that, become one helper, `charge`, instead of two copies.

-- Takes `p_amount` of usage that happened: what is available pays, the rest becomes debt.
-- Settling a hold frees `p_freed` of the balance's reserved part in the same movement;
-- what it frees pays outstanding debt first (burning grants for it), so debt > 0 stays
-- only where nothing is available. Returns the part of `p_amount` that went to debt.
-- The account lock is held, so reading the balance here and writing it below cannot race.
CREATE OR REPLACE FUNCTION creditgate.consume(
  p_account_id text, p_key text, p_amount bigint, p_usage_id uuid DEFAULT NULL, p_freed bigint DEFAULT 0)
RETURNS bigint LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v_pay_debt bigint := 0;
  v_paid bigint := 0;
  v_balance creditgate.balances;
BEGIN
  IF p_amount <= 0 AND p_freed <= 0 THEN
    RETURN 0;
  END IF;
  p_amount := greatest(p_amount, 0);
  SELECT least(debt, p_freed), least(available + p_freed - least(debt, p_freed), p_amount)
  INTO v_pay_debt, v_paid
  FROM creditgate.balances WHERE account_id = p_account_id AND key = p_key;
  IF NOT FOUND THEN
    PERFORM creditgate.ensure_balance(p_account_id, p_key);
    v_pay_debt := 0;
    v_paid := 0;
  END IF;
  UPDATE creditgate.balances
     SET reserved = reserved - p_freed,
         available = available + p_freed - v_pay_debt - v_paid,
         debt = debt - v_pay_debt + (p_amount - v_paid),
         -- Counted unless the call began before the current period (see charge).
         used_this_period = used_this_period + CASE WHEN now() >= (
           SELECT period_start FROM creditgate.accounts WHERE id = p_account_id) THEN p_amount ELSE 0 END
   WHERE account_id = p_account_id AND key = p_key
  RETURNING * INTO v_balance;
  PERFORM creditgate.burn_grants(p_account_id, p_key, v_pay_debt + v_paid);
  IF p_amount > 0 THEN
    PERFORM creditgate.journal(v_balance, 'consume', -p_amount, NULL, p_usage_id);
  END IF;
  RETURN p_amount - v_paid;
END
$$;

-- Gate-time charge of one key: the guarded UPDATE is the only check (a balance in debt has
-- nothing available, so it fails too). A hold moves the amount to reserved; a spend burns
-- grants, writes the journal line and counts toward the period.
CREATE FUNCTION creditgate.charge(p_account_id text, p_key text, p_amount bigint, p_usage_id uuid,
  p_hold boolean DEFAULT false)
RETURNS creditgate.balances LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
  v_balance creditgate.balances;
BEGIN
  UPDATE creditgate.balances
     SET available = available - p_amount,
         reserved = reserved + CASE WHEN p_hold THEN p_amount ELSE 0 END,
         -- A call that began before the current period (it waited for the lock while another
         -- call opened the period) has its journal line dated in the period before: not counted.
         used_this_period = used_this_period + CASE WHEN NOT p_hold AND now() >= (
           SELECT period_start FROM creditgate.accounts WHERE id = p_account_id) THEN p_amount ELSE 0 END
   WHERE account_id = p_account_id AND key = p_key AND available >= greatest(p_amount, 1)
  RETURNING * INTO v_balance;
  IF NOT FOUND THEN
    SELECT * INTO v_balance FROM creditgate.balances WHERE account_id = p_account_id AND key = p_key;
    PERFORM creditgate.deny_short(p_key, p_amount, v_balance);
  END IF;
  IF NOT p_hold THEN
    PERFORM creditgate.burn_grants(p_account_id, p_key, p_amount);
    PERFORM creditgate.journal(v_balance, 'consume', -p_amount, NULL, p_usage_id);
  END IF;
  RETURN v_balance;
END
$$;

-- Takes one unit of a second counted key (one `requests` per call) when the plan meters it:
-- as usage that happened (debt if short) for a call recorded without a gate call, or, with
-- p_strict, refused when short, as the gate charges it.
CREATE OR REPLACE FUNCTION creditgate.count_request(p_account creditgate.accounts, p_plan creditgate.plans,
  p_key text, p_usage_id uuid, p_strict boolean)
RETURNS void LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
  IF p_key IS NULL OR NOT (p_plan.allowances ? p_key) THEN
    RETURN;
  END IF;
  IF p_strict THEN
    PERFORM creditgate.charge(p_account.id, p_key, 1000000, p_usage_id);
  ELSE
    PERFORM creditgate.consume(p_account.id, p_key, 1000000, p_usage_id);
  END IF;
END
$$;

-- The gate of 50_gate.sql, charging through `charge`.
CREATE OR REPLACE FUNCTION public.creditgate_gate(request jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  v_feature creditgate.features;
  v_account creditgate.accounts;
  v_plan creditgate.plans;
  v_balance creditgate.balances;
  v_account_id text := request ->> 'account_id';
  v_mode text := coalesce(request ->> 'mode', 'check');
  v_agent text := request ->> 'agent';
  v_idem text := request ->> 'idempotency_key';
  v_cost bigint;
  v_previous jsonb;
  v_reservation jsonb;
  v_usage_id uuid;
  v_count integer;
  v_low bigint;
  v_ttl integer;
  v_response jsonb;
BEGIN
  SELECT * INTO v_feature FROM creditgate.features WHERE id = request ->> 'feature' AND active;
  IF NOT FOUND THEN
    PERFORM creditgate.fail(422, 'unknown_feature', jsonb_build_object('feature', request ->> 'feature'));
  END IF;
  IF v_agent IS NOT NULL AND NOT EXISTS (SELECT 1 FROM creditgate.agents WHERE id = v_agent AND active) THEN
    PERFORM creditgate.fail(422, 'unknown_agent', jsonb_build_object('agent', v_agent));
  END IF;
  IF v_account_id IS NULL THEN
    RETURN creditgate.guest_gate(request, v_feature);
  END IF;
  v_cost := creditgate.estimate_cost(v_feature, request);

  -- A signed-in user's first call creates their account.
  IF (request ->> 'auto_create')::boolean THEN
    IF NOT EXISTS (SELECT 1 FROM creditgate.accounts WHERE id = v_account_id) THEN
      PERFORM creditgate.create_account(v_account_id, 'free', 'user', request ->> 'email');
    END IF;
  END IF;
  -- The key is claimed, and a commit's usage row written, before the account is locked:
  -- a replay waits on the claim, not in the account's queue, and the lock is held for the
  -- money part only. A denial rolls all of it back. No cycle can form: gate keys are
  -- claimed by gate calls only, and a gate call holds no lock while it claims.
  IF v_mode <> 'check' THEN
    v_previous := creditgate.claim_idempotency(v_account_id, 'gate', v_idem, request);
    IF v_previous IS NOT NULL THEN
      RETURN v_previous;
    END IF;
  END IF;
  IF v_mode = 'commit' AND v_feature.kind = 'metered' THEN
    v_usage_id := gen_random_uuid();
    INSERT INTO creditgate.usage_events (id, account_id, user_id, feature_id, agent_id, provider, model,
      input_tokens, output_tokens, quantity, key, cost, metadata)
    VALUES (v_usage_id, v_account_id, request ->> 'user_id', v_feature.id, v_agent, request ->> 'provider',
      request ->> 'model', coalesce((request #>> '{estimate,input_tokens}')::bigint, 0),
      coalesce((request #>> '{estimate,max_output_tokens}')::bigint, 0),
      coalesce((request #>> '{estimate,quantity}')::bigint, 0), v_feature.balance_key, v_cost,
      '{"mode": "commit"}');
  END IF;
  SELECT low_balance, reservation_ttl_seconds INTO v_low, v_ttl FROM creditgate.settings;

  v_account := creditgate.roll_period(creditgate.lock_account(v_account_id));
  SELECT * INTO v_plan FROM creditgate.plans WHERE id = v_account.plan_id;

  IF v_account.status = 'disputed' THEN
    PERFORM creditgate.fail(403, 'account_disputed', jsonb_build_object('allowed', false,
      'account_id', v_account_id));
  END IF;
  IF NOT (v_feature.id = ANY (v_plan.features)) THEN
    PERFORM creditgate.fail(403, 'feature_not_in_plan', jsonb_build_object('allowed', false,
      'plan', v_plan.id, 'feature', v_feature.id, 'upgrade_to', creditgate.upgrade_to(v_feature.id, v_agent)));
  END IF;
  IF v_agent IS NOT NULL AND NOT (v_agent = ANY (v_plan.agents)) THEN
    PERFORM creditgate.fail(403, 'agent_not_in_plan', jsonb_build_object('allowed', false,
      'plan', v_plan.id, 'agent', v_agent, 'upgrade_to', creditgate.upgrade_to(NULL, v_agent)));
  END IF;
  IF v_plan.rate_limit_per_minute > 0 THEN
    INSERT INTO creditgate.rate_windows AS w (account_id, window_start, requests)
    VALUES (v_account_id, date_trunc('minute', now()), 1)
    ON CONFLICT (account_id, window_start) DO UPDATE SET requests = w.requests + 1
    RETURNING requests INTO v_count;
    IF v_count > v_plan.rate_limit_per_minute THEN
      PERFORM creditgate.fail(429, 'rate_limited', jsonb_build_object('allowed', false,
        'limit', v_plan.rate_limit_per_minute,
        'retry_after', greatest(1, ceil(60 - extract(epoch FROM now() - date_trunc('minute', now()))))::bigint));
    END IF;
  END IF;

  IF v_feature.kind = 'metered' THEN
    IF v_mode = 'check' THEN
      SELECT * INTO v_balance FROM creditgate.balances
      WHERE account_id = v_account_id AND key = v_feature.balance_key;
      IF coalesce(v_balance.debt, 0) > 0 OR coalesce(v_balance.available, 0) < greatest(v_cost, 1) THEN
        PERFORM creditgate.deny_short(v_feature.balance_key, v_cost, v_balance);
      END IF;
    ELSE
      v_balance := creditgate.charge(v_account_id, v_feature.balance_key, v_cost, v_usage_id, v_mode = 'reserve');
      IF v_mode = 'reserve' THEN
        INSERT INTO creditgate.reservations (account_id, key, amount, feature_id, model, expires_at)
        VALUES (v_account_id, v_feature.balance_key, v_cost, v_feature.id, request ->> 'model',
                now() + make_interval(secs => coalesce((request ->> 'ttl_seconds')::integer, v_ttl)))
        RETURNING jsonb_build_object('id', id, 'amount', amount, 'expires_at', expires_at) INTO v_reservation;
      END IF;
      PERFORM creditgate.count_request(v_account, v_plan, v_feature.requests_key, v_usage_id, true);
    END IF;
  END IF;

  v_response := jsonb_build_object(
    'allowed', true, 'account_id', v_account_id, 'plan', v_plan.id, 'feature', v_feature.id,
    'agent', v_agent, 'model', request ->> 'model', 'mode', v_mode, 'cost_estimate', v_cost,
    'reservation', v_reservation,
    'charged', CASE WHEN v_mode = 'commit' THEN v_cost END, 'usage_id', v_usage_id,
    'balance', CASE WHEN v_balance.key IS NOT NULL
                    THEN jsonb_build_object('key', v_balance.key, 'available', v_balance.available) END,
    'warnings', CASE WHEN v_balance.key = 'credits' AND v_balance.available < v_low
                     THEN '["low_balance"]'::jsonb ELSE '[]'::jsonb END);
  IF v_mode <> 'check' THEN
    PERFORM creditgate.remember_response(v_account_id, 'gate', v_idem, v_response);
  END IF;
  RETURN v_response;
END
$$;

CREATE OR REPLACE FUNCTION public.creditgate_balance(request jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  v_account creditgate.accounts := creditgate.current_account(request ->> 'account_id');
  v_low bigint := (SELECT low_balance FROM creditgate.settings);
  v_balances jsonb;
  v_credits bigint;
  v_burn numeric;
BEGIN
  WITH keys AS (
    SELECT b.key FROM creditgate.balances b WHERE b.account_id = v_account.id
    UNION
    SELECT k FROM creditgate.plans p, jsonb_object_keys(p.allowances) k WHERE p.id = v_account.plan_id
  ), rows AS (
    SELECT k.key,
           coalesce(b.available, 0) AS available, coalesce(b.reserved, 0) AS reserved,
           coalesce(b.debt, 0) AS debt,
           coalesce((p.allowances ->> k.key)::bigint, 0) AS allowance,
           coalesce(b.used_this_period, 0) AS used
    FROM keys k
    JOIN creditgate.plans p ON p.id = v_account.plan_id
    LEFT JOIN creditgate.balances b ON b.account_id = v_account.id AND b.key = k.key
  )
  SELECT jsonb_agg(jsonb_build_object(
           'key', key, 'available', available, 'reserved', reserved, 'debt', debt,
           'allowance', allowance, 'used_this_period', used,
           'period_start', v_account.period_start, 'resets_at', v_account.period_end,
           'percent_used', CASE WHEN allowance > 0 THEN round(used * 100.0 / allowance, 1) END,
           'status', CASE
              WHEN available = 0 OR debt > 0 OR (allowance > 0 AND used >= allowance) THEN 'exhausted'
              WHEN allowance > 0 AND used * 100 >= allowance * 90 THEN 'critical'
              WHEN allowance > 0 AND used * 100 >= allowance * 75 THEN 'warning'
              ELSE 'ok' END) ORDER BY key <> 'credits', key)
  INTO v_balances FROM rows;

  -- Runway at this period's average daily spend, averaged over at least a week so that a
  -- burst on the period's first day does not read as the daily rate.
  SELECT available, used_this_period / greatest(extract(epoch FROM now() - v_account.period_start) / 86400, 7)
  INTO v_credits, v_burn FROM creditgate.balances WHERE account_id = v_account.id AND key = 'credits';

  RETURN jsonb_build_object(
    'account_id', v_account.id, 'owner', v_account.owner_kind, 'status', v_account.status,
    'plan', (SELECT jsonb_build_object('id', id, 'name', name) FROM creditgate.plans WHERE id = v_account.plan_id),
    'balances', coalesce(v_balances, '[]'),
    'low_balance', coalesce(v_credits, 0) < v_low,
    'runway_days', CASE WHEN v_burn > 0 THEN round(coalesce(v_credits, 0) / v_burn, 1) END);
END
$$;

-- Records the 75/90/100 % allowance notices and the low-balance notice, once per account,
-- key, kind and period. Only balances with consumption since the last scan are looked at:
-- the scan follows the journal with a cursor, at most p_lines lines a run. Lines younger
-- than a minute stay ahead of the cursor and are looked at again next run, because a
-- transaction still open now may commit a lower id later; a notice recorded twice is
-- impossible (unique key), one missed is not.
CREATE OR REPLACE FUNCTION creditgate.record_notices(p_lines integer)
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
           coalesce(b.used_this_period, 0) AS used, b.available
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

CREATE OR REPLACE FUNCTION public.creditgate_metrics(request jsonb)
RETURNS jsonb LANGUAGE sql STABLE SECURITY DEFINER SET search_path = '' AS $$
  WITH span AS (
    SELECT now() - make_interval(days => least(greatest(coalesce((request ->> 'days')::integer, 30), 1), 366)) AS since
  ), usage AS (
    SELECT u.* FROM creditgate.usage_events u, span WHERE u.created_at >= span.since
  )
  SELECT jsonb_build_object(
    'since', (SELECT since FROM span),
    'daily', (SELECT coalesce(jsonb_agg(d ORDER BY d ->> 'day'), '[]') FROM (
       SELECT jsonb_build_object('day', day, 'requests', coalesce(requests, 0), 'input_tokens', coalesce(i, 0),
                'output_tokens', coalesce(o, 0), 'cost', coalesce(c, 0), 'cost_pico_usd', coalesce(p, 0),
                'revenue_minor', coalesce(revenue, 0)) AS d
       FROM (SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, count(*) requests,
                    sum(input_tokens) i, sum(output_tokens) o, sum(cost) c, sum(cost_pico_usd) p
             FROM usage GROUP BY 1) u
       FULL JOIN (SELECT to_char(o.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day,
                         sum(amount_minor - refunded_minor) revenue
                  FROM creditgate.orders o, span WHERE o.status IN ('paid', 'partially_refunded')
                    AND o.updated_at >= span.since GROUP BY 1) r USING (day)) x),
    'accounts_over_80_percent', (SELECT coalesce(jsonb_agg(jsonb_build_object('account_id', a.id, 'key', e.key,
         'used', used, 'allowance', (e.value)::bigint)), '[]')
       FROM creditgate.accounts a JOIN creditgate.plans p ON p.id = a.plan_id, jsonb_each_text(p.allowances) e,
       LATERAL (SELECT coalesce(max(b.used_this_period), 0) AS used FROM creditgate.balances b
                WHERE b.account_id = a.id AND b.key = e.key) x
       WHERE (e.value)::bigint > 0 AND used * 100 >= (e.value)::bigint * 80),
    'top_agents', (SELECT coalesce(jsonb_agg(jsonb_build_object('agent', agent_id, 'requests', n, 'cost', c)
         ORDER BY n DESC), '[]') FROM (SELECT agent_id, count(*) n, sum(cost) c FROM usage
         WHERE agent_id IS NOT NULL GROUP BY 1 ORDER BY 2 DESC LIMIT 10) t),
    'top_features', (SELECT coalesce(jsonb_agg(jsonb_build_object('feature', feature_id, 'requests', n, 'cost', c)
         ORDER BY n DESC), '[]') FROM (SELECT feature_id, count(*) n, sum(cost) c FROM usage
         GROUP BY 1 ORDER BY 2 DESC LIMIT 10) t),
    'top_models', (SELECT coalesce(jsonb_agg(jsonb_build_object('model', model, 'requests', n, 'cost_pico_usd', p)
         ORDER BY n DESC), '[]') FROM (SELECT model, count(*) n, sum(cost_pico_usd) p FROM usage
         WHERE model IS NOT NULL GROUP BY 1 ORDER BY 2 DESC LIMIT 10) t),
    'guest_abuse', (SELECT coalesce(jsonb_agg(jsonb_build_object('ip', host(ip), 'day', day,
         'sessions', sessions, 'exchanges', exchanges) ORDER BY sessions DESC), '[]')
       FROM creditgate.guest_ip_days d, span, creditgate.settings s
       WHERE d.day >= (span.since AT TIME ZONE 'UTC')::date AND d.sessions > s.abuse_sessions_per_ip));
$$;

-- Every invariant of DESIGN.md, per (account, key): H = available + reserved,
-- reserved = what active reservations hold, debt only where nothing is available, and the
-- journal summing (and its last line pointing) to H - D, and the period's usage counter
-- agreeing with the period's `consume` lines.
CREATE OR REPLACE FUNCTION public.creditgate_reconcile(request jsonb)
RETURNS jsonb LANGUAGE sql STABLE SECURITY DEFINER SET search_path = '' AS $$
  WITH b AS (
    SELECT * FROM creditgate.balances
    WHERE request ->> 'account_id' IS NULL OR account_id = request ->> 'account_id'
  ), facts AS (
    SELECT b.account_id, b.key, b.available, b.reserved, b.debt,
      coalesce((SELECT sum(remaining) FROM creditgate.grants g
                WHERE g.account_id = b.account_id AND g.key = b.key), 0) AS held,
      coalesce((SELECT sum(amount) FROM creditgate.reservations r
                WHERE r.account_id = b.account_id AND r.key = b.key AND r.status = 'active'), 0) AS reserved_by_holds,
      coalesce((SELECT sum(amount) FROM creditgate.ledger_entries e
                WHERE e.account_id = b.account_id AND e.key = b.key), 0) AS journal_sum,
      (SELECT balance_after FROM creditgate.ledger_entries e
       WHERE e.account_id = b.account_id AND e.key = b.key ORDER BY id DESC LIMIT 1) AS journal_last,
      b.used_this_period,
      coalesce((SELECT -sum(e.amount) FROM creditgate.ledger_entries e JOIN creditgate.accounts a ON a.id = e.account_id
                WHERE e.account_id = b.account_id AND e.key = b.key AND e.kind = 'consume'
                  AND e.created_at >= a.period_start), 0) AS used_by_journal
    FROM b
  ), problems AS (
    SELECT account_id, key, problem FROM facts, LATERAL (VALUES
      (CASE WHEN held <> available + reserved THEN 'grants_hold_' || held || '_but_available_plus_reserved_is_' || (available + reserved) END),
      (CASE WHEN reserved <> reserved_by_holds THEN 'reserved_' || reserved || '_but_active_holds_are_' || reserved_by_holds END),
      (CASE WHEN debt > 0 AND available > 0 THEN 'debt_with_available_credits' END),
      (CASE WHEN journal_sum <> held - debt THEN 'journal_sums_to_' || journal_sum || '_not_' || (held - debt) END),
      (CASE WHEN coalesce(journal_last, 0) <> held - debt THEN 'last_journal_line_says_' || coalesce(journal_last, 0) || '_not_' || (held - debt) END),
      (CASE WHEN used_this_period <> used_by_journal THEN 'used_this_period_' || used_this_period || '_but_journal_says_' || used_by_journal END)
    ) v(problem) WHERE problem IS NOT NULL
  )
  SELECT jsonb_build_object(
    'ok', NOT EXISTS (SELECT 1 FROM problems),
    'balances_checked', (SELECT count(*) FROM b),
    'problems', (SELECT coalesce(jsonb_agg(jsonb_build_object('account_id', account_id, 'key', key,
                   'problem', problem)), '[]') FROM problems));
$$;

SELECT creditgate.secure();

INSERT INTO creditgate.schema_migrations (version) VALUES ('96_used_this_period') ON CONFLICT DO NOTHING;
