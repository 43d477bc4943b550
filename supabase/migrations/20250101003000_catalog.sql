-- Generated from sql/30_catalog.sql by `creditgate supabase-export`. Edit sql/30_catalog.sql and
-- run the command again; never edit this copy.
-- The offer: plans, packs, features, agents, model prices and settings, loaded from the
-- operator's catalog file in one transaction, idempotent to re-apply.

-- The document is what `creditgate catalog apply` builds from catalog.toml, amounts
-- already converted to integers (micro-credits, minor units, micro-USD per Mtok).
CREATE FUNCTION public.creditgate_apply_catalog(request jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  s jsonb := request -> 'settings';
  v_hash text := md5(request::text);
  v_prices_added integer := 0;
  v_prices_retired integer := 0;
BEGIN
  IF v_hash = (SELECT catalog_hash FROM creditgate.settings) THEN
    RETURN jsonb_build_object('changed', false, 'catalog_hash', v_hash);
  END IF;

  UPDATE creditgate.settings SET
    credits_per_usd = (s ->> 'credits_per_usd')::bigint,
    markup_bps = (s ->> 'markup_bps')::integer,
    welcome_credits = (s ->> 'welcome_credits')::bigint,
    currency = s ->> 'currency',
    guest_exchanges_per_session = (s ->> 'guest_exchanges_per_session')::integer,
    guest_exchanges_per_ip_per_day = (s ->> 'guest_exchanges_per_ip_per_day')::integer,
    guest_session_ttl_hours = (s ->> 'guest_session_ttl_hours')::integer,
    low_balance = (s ->> 'low_balance_credits')::bigint,
    reservation_ttl_seconds = (s ->> 'reservation_ttl_seconds')::integer,
    abuse_sessions_per_ip = (s ->> 'abuse_sessions_per_ip')::integer,
    catalog_hash = v_hash,
    catalog_applied_at = now();

  -- Items missing from the file are deactivated, not deleted: accounts and orders
  -- still point at them.
  INSERT INTO creditgate.agents AS t (id, name, description, display_order, active)
  SELECT x.id, x.name, x.description, coalesce(x.display_order, 0), true
  FROM jsonb_to_recordset(request -> 'agents') AS x(id text, name text, description text, display_order integer)
  ON CONFLICT (id) DO UPDATE SET name = excluded.name, description = excluded.description,
    display_order = excluded.display_order, active = true;
  UPDATE creditgate.agents SET active = false
   WHERE id NOT IN (SELECT x ->> 'id' FROM jsonb_array_elements(request -> 'agents') x);

  INSERT INTO creditgate.features AS t (id, name, kind, balance_key, pricing_mode, credits_per_unit, requests_key, active)
  SELECT x.id, x.name, x.kind, x.balance_key, x.pricing_mode, x.credits_per_unit, x.requests_key, true
  FROM jsonb_to_recordset(request -> 'features')
    AS x(id text, name text, kind text, balance_key text, pricing_mode text, credits_per_unit bigint, requests_key text)
  ON CONFLICT (id) DO UPDATE SET name = excluded.name, kind = excluded.kind,
    balance_key = excluded.balance_key, pricing_mode = excluded.pricing_mode,
    credits_per_unit = excluded.credits_per_unit, requests_key = excluded.requests_key, active = true;
  UPDATE creditgate.features SET active = false
   WHERE id NOT IN (SELECT x ->> 'id' FROM jsonb_array_elements(request -> 'features') x);

  -- Stripe price ids move between items when an operator edits the file; clear them
  -- first so the unique constraint judges the new state, not a half-applied one.
  UPDATE creditgate.plans SET stripe_price_id = NULL;
  UPDATE creditgate.packs SET stripe_price_id = NULL;

  INSERT INTO creditgate.plans AS t (id, name, price_minor, currency, billing_interval, stripe_price_id,
    allowances, features, agents, rate_limit_per_minute, display_order, active)
  SELECT x.id, x.name, x.price_minor, x.currency, coalesce(x.billing_interval, 'month'), nullif(x.stripe_price_id, ''),
         coalesce(x.allowances, '{}'), coalesce(x.features, '{}'), coalesce(x.agents, '{}'),
         coalesce(x.rate_limit_per_minute, 0), coalesce(x.display_order, 0), true
  FROM jsonb_to_recordset(request -> 'plans')
    AS x(id text, name text, price_minor bigint, currency text, billing_interval text, stripe_price_id text,
         allowances jsonb, features text[], agents text[], rate_limit_per_minute integer, display_order integer)
  ON CONFLICT (id) DO UPDATE SET name = excluded.name, price_minor = excluded.price_minor,
    currency = excluded.currency, billing_interval = excluded.billing_interval,
    stripe_price_id = excluded.stripe_price_id, allowances = excluded.allowances,
    features = excluded.features, agents = excluded.agents,
    rate_limit_per_minute = excluded.rate_limit_per_minute, display_order = excluded.display_order, active = true;
  UPDATE creditgate.plans SET active = false
   WHERE id NOT IN (SELECT x ->> 'id' FROM jsonb_array_elements(request -> 'plans') x);

  INSERT INTO creditgate.packs AS t (id, name, price_minor, currency, credits, bonus_credits, stripe_price_id, display_order, active)
  SELECT x.id, x.name, x.price_minor, x.currency, x.credits, coalesce(x.bonus_credits, 0),
         nullif(x.stripe_price_id, ''), coalesce(x.display_order, 0), true
  FROM jsonb_to_recordset(request -> 'packs')
    AS x(id text, name text, price_minor bigint, currency text, credits bigint, bonus_credits bigint,
         stripe_price_id text, display_order integer)
  ON CONFLICT (id) DO UPDATE SET name = excluded.name, price_minor = excluded.price_minor,
    currency = excluded.currency, credits = excluded.credits, bonus_credits = excluded.bonus_credits,
    stripe_price_id = excluded.stripe_price_id, display_order = excluded.display_order, active = true;
  UPDATE creditgate.packs SET active = false
   WHERE id NOT IN (SELECT x ->> 'id' FROM jsonb_array_elements(request -> 'packs') x);

  -- A price that changed gets a new version; the old one is kept for the usage rows
  -- charged at it.
  CREATE TEMP TABLE incoming ON COMMIT DROP AS
  SELECT * FROM jsonb_to_recordset(request -> 'models') AS x(
    provider text, model text, input_per_mtok bigint, output_per_mtok bigint,
    cached_input_per_mtok bigint, reasoning_per_mtok bigint, cache_write_per_mtok bigint,
    long_context_threshold bigint, long_context_input_per_mtok bigint,
    long_context_output_per_mtok bigint, long_context_cached_input_per_mtok bigint,
    long_context_cache_write_per_mtok bigint, source text);

  UPDATE creditgate.model_prices m SET superseded_at = now()
  WHERE m.superseded_at IS NULL AND NOT EXISTS (
    SELECT 1 FROM incoming i
    WHERE i.provider = m.provider AND i.model = m.model
      AND i.input_per_mtok = m.input_per_mtok AND i.output_per_mtok = m.output_per_mtok
      AND i.cached_input_per_mtok IS NOT DISTINCT FROM m.cached_input_per_mtok
      AND i.reasoning_per_mtok IS NOT DISTINCT FROM m.reasoning_per_mtok
      AND i.cache_write_per_mtok IS NOT DISTINCT FROM m.cache_write_per_mtok
      AND i.long_context_threshold IS NOT DISTINCT FROM m.long_context_threshold
      AND i.long_context_input_per_mtok IS NOT DISTINCT FROM m.long_context_input_per_mtok
      AND i.long_context_output_per_mtok IS NOT DISTINCT FROM m.long_context_output_per_mtok
      AND i.long_context_cached_input_per_mtok IS NOT DISTINCT FROM m.long_context_cached_input_per_mtok
      AND i.long_context_cache_write_per_mtok IS NOT DISTINCT FROM m.long_context_cache_write_per_mtok);
  GET DIAGNOSTICS v_prices_retired = ROW_COUNT;

  INSERT INTO creditgate.model_prices (provider, model, input_per_mtok, output_per_mtok,
    cached_input_per_mtok, reasoning_per_mtok, cache_write_per_mtok, long_context_threshold,
    long_context_input_per_mtok, long_context_output_per_mtok, long_context_cached_input_per_mtok,
    long_context_cache_write_per_mtok, source)
  SELECT i.provider, i.model, i.input_per_mtok, i.output_per_mtok, i.cached_input_per_mtok,
         i.reasoning_per_mtok, i.cache_write_per_mtok, i.long_context_threshold,
         i.long_context_input_per_mtok, i.long_context_output_per_mtok,
         i.long_context_cached_input_per_mtok, i.long_context_cache_write_per_mtok, i.source
  FROM incoming i
  WHERE NOT EXISTS (SELECT 1 FROM creditgate.model_prices m
                    WHERE m.superseded_at IS NULL AND m.provider = i.provider AND m.model = i.model);
  GET DIAGNOSTICS v_prices_added = ROW_COUNT;

  RETURN jsonb_build_object('changed', true, 'catalog_hash', v_hash,
                            'prices_added', v_prices_added, 'prices_retired', v_prices_retired);
END
$$;

-- The current price of a model; an unknown model is refused, never charged zero.
CREATE FUNCTION creditgate.find_price(p_model text, p_provider text)
RETURNS creditgate.model_prices LANGUAGE plpgsql STABLE SET search_path = '' AS $$
DECLARE
  v creditgate.model_prices;
BEGIN
  -- LiteLLM-style ids carry the provider ("gemini/gemini-2.5-pro"); callers may send
  -- either that or the provider's own name ("gemini-2.5-pro"). An exact match wins, and is
  -- looked up first through the index; the suffix match scans the (small) price list.
  SELECT * INTO v FROM creditgate.model_prices
  WHERE superseded_at IS NULL AND model = p_model AND (p_provider IS NULL OR provider = p_provider)
  ORDER BY provider LIMIT 1;
  IF NOT FOUND THEN
    SELECT * INTO v FROM creditgate.model_prices
    WHERE superseded_at IS NULL AND (p_provider IS NULL OR provider = p_provider)
      AND right(model, length(p_model) + 1) = '/' || p_model
    ORDER BY provider, model LIMIT 1;
  END IF;
  IF NOT FOUND THEN
    PERFORM creditgate.fail(422, 'unknown_model',
      jsonb_build_object('model', p_model, 'provider', p_provider));
  END IF;
  RETURN v;
END
$$;

-- Provider cost of a call in pico-USD (1e-12 USD): tokens x micro-USD per Mtok is exact
-- in integers. Cached and cache-write tokens are parts of input, reasoning a part of output.
-- PL/pgSQL and no query: plain arithmetic on the price row, evaluated without planning.
CREATE FUNCTION creditgate.model_cost_pico_usd(
  p creditgate.model_prices, p_input bigint, p_output bigint, p_cached bigint,
  p_reasoning bigint, p_cache_write bigint)
RETURNS bigint LANGUAGE plpgsql IMMUTABLE SET search_path = '' AS $$
DECLARE
  v_input bigint := p.input_per_mtok;
  v_output bigint := p.output_per_mtok;
  v_cached bigint := p.cached_input_per_mtok;
  v_cache_write bigint := p.cache_write_per_mtok;
BEGIN
  -- Above a model's long-context threshold the whole call is priced at the long-context
  -- rates, as Google and Anthropic bill it.
  IF p_input > p.long_context_threshold THEN
    v_input := coalesce(p.long_context_input_per_mtok, v_input);
    v_output := coalesce(p.long_context_output_per_mtok, v_output);
    v_cached := coalesce(p.long_context_cached_input_per_mtok, v_cached);
    v_cache_write := coalesce(p.long_context_cache_write_per_mtok, v_cache_write);
  END IF;
  RETURN ((p_input - p_cached - p_cache_write)::numeric * v_input
        + p_cached::numeric * coalesce(v_cached, v_input)
        + p_cache_write::numeric * coalesce(v_cache_write, v_input)
        + (p_output - p_reasoning)::numeric * v_output
        + p_reasoning::numeric * coalesce(p.reasoning_per_mtok, v_output))::bigint;
END
$$;

-- Pico-USD to micro-credits at the configured rate and markup, rounded up: a call is
-- never charged less than it cost.
CREATE FUNCTION creditgate.usd_to_credits(p_pico_usd bigint)
RETURNS bigint LANGUAGE plpgsql STABLE SET search_path = '' AS $$
BEGIN
  RETURN (SELECT ceil(p_pico_usd::numeric * s.credits_per_usd * s.markup_bps / 10000000000)::bigint
          FROM creditgate.settings s);
END
$$;

-- The cheapest active plans that include a feature or agent: what a denial suggests.
CREATE FUNCTION creditgate.upgrade_to(p_feature text, p_agent text)
RETURNS jsonb LANGUAGE sql STABLE SET search_path = '' AS $$
  SELECT coalesce(jsonb_agg(id ORDER BY price_minor, display_order), '[]')
  FROM (
    SELECT id, price_minor, display_order FROM creditgate.plans
    WHERE active AND id <> 'anonymous'
      AND (p_feature IS NULL OR p_feature = ANY (features))
      AND (p_agent IS NULL OR p_agent = ANY (agents))
    ORDER BY price_minor, display_order LIMIT 3
  ) x;
$$;

CREATE FUNCTION creditgate.packs_for_sale()
RETURNS jsonb LANGUAGE sql STABLE SET search_path = '' AS $$
  SELECT coalesce(jsonb_agg(jsonb_build_object('id', id, 'name', name, 'price_minor', price_minor,
           'currency', currency, 'credits', credits, 'bonus_credits', bonus_credits)
         ORDER BY display_order, price_minor), '[]')
  FROM creditgate.packs WHERE active;
$$;

CREATE FUNCTION public.creditgate_catalog()
RETURNS jsonb LANGUAGE sql STABLE SECURITY DEFINER SET search_path = '' AS $$
  SELECT jsonb_build_object(
    'currency', (SELECT currency FROM creditgate.settings),
    'plans', (SELECT coalesce(jsonb_agg(jsonb_build_object(
        'id', id, 'name', name, 'price_minor', price_minor, 'currency', currency,
        'interval', billing_interval, 'allowances', allowances, 'features', to_jsonb(features),
        'agents', to_jsonb(agents), 'rate_limit_per_minute', rate_limit_per_minute,
        'stripe_price_id', stripe_price_id) ORDER BY display_order, price_minor), '[]')
      FROM creditgate.plans WHERE active),
    'packs', creditgate.packs_for_sale(),
    'features', (SELECT coalesce(jsonb_agg(jsonb_build_object(
        'id', id, 'name', name, 'kind', kind, 'balance_key', balance_key,
        'pricing_mode', pricing_mode, 'credits_per_unit', credits_per_unit,
        'requests_key', requests_key) ORDER BY id), '[]')
      FROM creditgate.features WHERE active),
    'agents', (SELECT coalesce(jsonb_agg(jsonb_build_object(
        'id', id, 'name', name, 'description', description) ORDER BY display_order, id), '[]')
      FROM creditgate.agents WHERE active));
$$;

CREATE FUNCTION public.creditgate_prices()
RETURNS jsonb LANGUAGE sql STABLE SECURITY DEFINER SET search_path = '' AS $$
  SELECT jsonb_build_object(
    'credits_per_usd', s.credits_per_usd, 'markup_bps', s.markup_bps,
    'items', (SELECT coalesce(jsonb_agg(jsonb_build_object(
        'price_id', id, 'provider', provider, 'model', model,
        'input_per_mtok', input_per_mtok, 'output_per_mtok', output_per_mtok,
        'cached_input_per_mtok', cached_input_per_mtok, 'reasoning_per_mtok', reasoning_per_mtok,
        'cache_write_per_mtok', cache_write_per_mtok, 'long_context_threshold', long_context_threshold,
        'long_context_input_per_mtok', long_context_input_per_mtok,
        'long_context_output_per_mtok', long_context_output_per_mtok,
        'long_context_cached_input_per_mtok', long_context_cached_input_per_mtok,
        'long_context_cache_write_per_mtok', long_context_cache_write_per_mtok,
        'source', source, 'effective_from', effective_from) ORDER BY provider, model), '[]')
      FROM creditgate.model_prices WHERE superseded_at IS NULL))
  FROM creditgate.settings s;
$$;

CREATE FUNCTION public.creditgate_health()
RETURNS jsonb LANGUAGE sql STABLE SECURITY DEFINER SET search_path = '' AS $$
  SELECT jsonb_build_object('schema_version', (SELECT max(version) FROM creditgate.schema_migrations),
                            'catalog_applied_at', (SELECT catalog_applied_at FROM creditgate.settings));
$$;

INSERT INTO creditgate.schema_migrations (version) VALUES ('30_catalog') ON CONFLICT DO NOTHING;
