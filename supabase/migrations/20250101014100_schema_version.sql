-- Generated from sql/101_schema_version.sql by `creditgate supabase-export`. Edit sql/101_schema_version.sql and
-- run the command again; never edit this copy.
-- The schema version health reports is the migration with the highest number: by number,
-- now that there are three-digit ones ("100_…" sorts before "99_…" as text).
CREATE OR REPLACE FUNCTION public.creditgate_health()
RETURNS jsonb LANGUAGE sql STABLE SECURITY DEFINER SET search_path = '' AS $$
  SELECT jsonb_build_object(
    'schema_version', (SELECT version FROM creditgate.schema_migrations
                       ORDER BY split_part(version, '_', 1)::integer DESC, version DESC LIMIT 1),
    'catalog_applied_at', (SELECT catalog_applied_at FROM creditgate.settings));
$$;

SELECT creditgate.secure();

INSERT INTO creditgate.schema_migrations (version) VALUES ('101_schema_version') ON CONFLICT DO NOTHING;
