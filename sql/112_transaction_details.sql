-- The account's history says what each line was for: a charge names the feature, agent
-- and model of its usage, a grant (or its expiry, claw-back) the grant's reason — so a UI
-- can write "3 credits for generate_goal" or "Growth pack" without a second read.

-- The transactions of 70_reads.sql with those.
CREATE OR REPLACE FUNCTION public.creditgate_transactions(request jsonb)
RETURNS jsonb LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  v_limit integer := least(greatest(coalesce((request ->> 'limit')::integer, 50), 1), 200);
  v_cursor bigint := (request ->> 'cursor')::bigint;
  v_items jsonb;
  v_last bigint;
  v_count integer;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM creditgate.accounts WHERE id = request ->> 'account_id') THEN
    PERFORM creditgate.fail(404, 'account_not_found', jsonb_build_object('account_id', request ->> 'account_id'));
  END IF;
  SELECT jsonb_agg(jsonb_build_object('id', e.id, 'at', e.created_at, 'kind', e.kind, 'key', e.key,
           'amount', e.amount, 'balance_after', e.balance_after, 'source', e.source,
           'usage_id', e.usage_id, 'external_ref', e.external_ref,
           'feature', u.feature_id, 'agent', u.agent_id, 'model', u.model, 'reason', g.reason) ORDER BY e.id DESC),
         min(e.id), count(*)
  INTO v_items, v_last, v_count
  FROM (SELECT * FROM creditgate.ledger_entries
        WHERE account_id = request ->> 'account_id' AND (v_cursor IS NULL OR id < v_cursor)
          AND (request ->> 'key' IS NULL OR key = request ->> 'key')
        ORDER BY id DESC LIMIT v_limit) e
  LEFT JOIN creditgate.usage_events u ON u.id = e.usage_id
  LEFT JOIN creditgate.grants g ON g.id = e.grant_id;
  RETURN jsonb_build_object('items', coalesce(v_items, '[]'),
    'next_cursor', CASE WHEN v_count = v_limit AND EXISTS (
        SELECT 1 FROM creditgate.ledger_entries WHERE account_id = request ->> 'account_id' AND id < v_last
          AND (request ->> 'key' IS NULL OR key = request ->> 'key')) THEN v_last::text END);
END
$$;

SELECT creditgate.secure();
