-- Usage grouped by what the app said about each call: `group_by=metadata.workflow_id` groups
-- by that field of the usage's `metadata` (a workflow, a discipline, a project), "" for calls
-- without it.

-- The usage summary of 99_answers_and_names.sql with that grouping.
CREATE OR REPLACE FUNCTION public.creditgate_usage_summary(request jsonb)
RETURNS jsonb LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  v_group text := coalesce(request ->> 'group_by', 'day');
  v_from timestamptz := coalesce((request ->> 'from')::timestamptz, now() - interval '30 days');
  v_to timestamptz := coalesce((request ->> 'to')::timestamptz, now());
  v_items jsonb;
  v_totals jsonb;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM creditgate.accounts WHERE id = request ->> 'account_id') THEN
    PERFORM creditgate.fail(404, 'account_not_found', jsonb_build_object('account_id', request ->> 'account_id'));
  END IF;
  WITH scoped AS (
    SELECT *, CASE
                WHEN v_group = 'day' THEN to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')
                WHEN v_group = 'model' THEN coalesce(model, '')
                WHEN v_group = 'feature' THEN feature_id
                WHEN v_group = 'agent' THEN coalesce(agent_id, '')
                WHEN v_group = 'user' THEN coalesce(user_id, '')
                WHEN v_group LIKE 'metadata.%' THEN coalesce(metadata ->> substr(v_group, 10), '') END AS grp
    FROM creditgate.usage_events
    WHERE account_id = request ->> 'account_id' AND created_at >= v_from AND created_at < v_to
  )
  SELECT jsonb_agg(jsonb_build_object('group', grp, 'requests', n, 'input_tokens', i, 'output_tokens', o,
           'cost', c, 'cost_pico_usd', p, 'other_keys', creditgate.other_keys(k)) ORDER BY grp)
  INTO v_items
  FROM (SELECT grp, count(*) n, sum(input_tokens) i, sum(output_tokens) o,
               coalesce(sum(cost) FILTER (WHERE key = 'credits'), 0) c, sum(cost_pico_usd) p,
               array_agg(ROW(key, cost)::creditgate.key_amount) FILTER (WHERE key <> 'credits') k
        FROM scoped GROUP BY grp) g;
  SELECT jsonb_build_object('requests', count(*), 'input_tokens', coalesce(sum(input_tokens), 0),
           'output_tokens', coalesce(sum(output_tokens), 0),
           'cost', coalesce(sum(cost) FILTER (WHERE key = 'credits'), 0),
           'cost_pico_usd', coalesce(sum(cost_pico_usd), 0),
           'other_keys', creditgate.other_keys(array_agg(ROW(key, cost)::creditgate.key_amount)
                                                FILTER (WHERE key <> 'credits')))
  INTO v_totals
  FROM creditgate.usage_events
  WHERE account_id = request ->> 'account_id' AND created_at >= v_from AND created_at < v_to;
  RETURN jsonb_build_object('group_by', v_group, 'from', v_from, 'to', v_to,
                            'items', coalesce(v_items, '[]'), 'totals', v_totals);
END
$$;

SELECT creditgate.secure();
