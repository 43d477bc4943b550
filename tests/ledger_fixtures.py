"""What the contract, RLS and catalog tests share: the fake Supabase REST API in front of
the suite's database, and the one list of what anon / authenticated may execute."""

from __future__ import annotations

import pytest

from tests.conftest import JWT_SECRET
from tests.fakes.postgrest_server import FakePostgREST

# The only creditgate routines a caller without the service role may execute. The offer
# and the price list are public (a pricing page reads them with the anon key); the RLS
# policies call my_account_ids() as the signed-in user. Everything else is service_role's.
ANON_EXECUTABLE = frozenset({"public.creditgate_catalog()", "public.creditgate_prices()"})
AUTHENTICATED_EXECUTABLE = ANON_EXECUTABLE | {"creditgate.my_account_ids()"}

# Every creditgate routine, whatever its kind (function, procedure, aggregate): the ones in
# the private schema, the public entry points, and any routine elsewhere whose body reaches
# into the creditgate schema (a signup trigger on auth.users, say). `sig` is the
# regprocedure text, unique and stable: "public.creditgate_gate(jsonb)".
ROUTINES_SQL = r"""
SELECT p.oid, n.nspname || '.' || p.proname || '(' || pg_catalog.oidvectortypes(p.proargtypes) || ')' AS sig,
       n.nspname, p.proname, p.prokind, p.prosecdef, p.proconfig, p.prorettype::regtype::text AS returns,
       pg_catalog.pg_get_function_identity_arguments(p.oid) AS args
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'creditgate'
   OR (n.nspname = 'public' AND p.proname LIKE 'creditgate\_%')
   OR (n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_%'
       AND p.prokind <> 'a' AND p.prosrc LIKE '%creditgate.%')
ORDER BY 2
"""


@pytest.fixture(scope="module")
def rest_server(dsn):
    """Supabase's REST API (apikey gate + PostgREST) over the suite's database. The private
    schema is exposed too, which Supabase does not do: RLS and grants must hold even then."""
    with FakePostgREST(dsn, JWT_SECRET, schemas=("public", "creditgate")) as server:
        yield server
