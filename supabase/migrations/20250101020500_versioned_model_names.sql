-- Generated from sql/125_versioned_model_names.sql by `creditgate supabase-export`. Edit sql/125_versioned_model_names.sql and
-- run the command again; never edit this copy.
-- Model names the clouds send back. 99_answers_and_names.sql priced a name as the model it
-- names without a gateway's prefix, a snapshot date or capitals; two common spellings
-- were still refused as unknown models, so their usage could not be recorded:
--
--   * Google's stable versions, as Vertex AI and the Gemini API report them:
--     "gemini-2.0-flash-001", "models/gemini-2.0-flash-001" (gemini-2.0-flash).
--   * Amazon Bedrock's model and inference-profile ids: "anthropic.claude-haiku-4-5-
--     20251001-v1:0", "us.anthropic.claude-sonnet-4-5-20250929-v1:0" (a vendor and
--     region prefix, a ":0" revision).
--
-- The exact name still wins, and what is left must still be a name the catalog prices:
-- a model it does not know stays 422, never free.

CREATE OR REPLACE FUNCTION creditgate.find_price(p_model text, p_provider text)
RETURNS creditgate.model_prices LANGUAGE plpgsql STABLE SET search_path = '' AS $$
DECLARE
  v creditgate.model_prices;
  v_base text;
BEGIN
  -- The common case first, through the index, without another call.
  SELECT * INTO v FROM creditgate.model_prices
  WHERE superseded_at IS NULL AND model = p_model AND (p_provider IS NULL OR provider = p_provider)
  ORDER BY provider LIMIT 1;
  IF NOT FOUND THEN
    v := creditgate.price_named(p_model, p_provider);
  END IF;
  IF v.id IS NULL THEN
    -- The model the name stands for: without a gateway's prefix or Bedrock's vendor and
    -- region ("us.anthropic."), its revision ("-v1:0"), then a snapshot date (-2024-07-18,
    -- -20241022, @20241022) or Google's version (-001), and capitals. Bedrock's prefix is
    -- letters and dots only, so no model name's own dot ("gpt-4.1") is taken for one.
    v_base := lower(regexp_replace(regexp_replace(regexp_replace(regexp_replace(p_model,
                '^.*/', ''), '^([A-Za-z]+\.)+', ''), '-v[0-9]+:[0-9]+$', ''),
                '[-@]([0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{8}|[0-9]{3})$', ''));
    IF v_base <> p_model THEN
      v := creditgate.price_named(v_base, p_provider);
    END IF;
  END IF;
  IF v.id IS NULL THEN
    PERFORM creditgate.fail(422, 'unknown_model', jsonb_build_object('model', p_model, 'provider', p_provider));
  END IF;
  RETURN v;
END
$$;

SELECT creditgate.secure();

INSERT INTO creditgate.schema_migrations (version) VALUES ('125_versioned_model_names') ON CONFLICT DO NOTHING;
