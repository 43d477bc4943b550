"""SupabaseLedger: the same RPC entry points, reached over Supabase's REST API (PostgREST).

supabase-py's `create_client` builds auth, storage, realtime and functions clients too
(~0.36 s of cold start) only for us to use its `.rpc()`, which is the `postgrest`
package's `SyncPostgrestClient`. So we use that client directly.

The client carries the service_role key and nothing else, for its whole life. It is shared
by every request a warm function serves, so a user's token must never be set on it
(`client.auth(token)` would leak one user's identity to the next request): functions
verify the user's JWT themselves and pass the account explicitly.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from functions.core.errors import ServiceUnavailable, data_problem, ledger_problem
from functions.core.ledger import Ledger

# PostgREST's own codes for "the database could not be reached" (connection, pool, schema
# cache load) and what a gateway in front of it answers without a PostgREST body.
_UNAVAILABLE_CODES = {"PGRST000", "PGRST001", "PGRST002", "PGRST003", "502", "503", "504", "520"}
# The key was refused (missing, bad signature, expired) or PostgREST cannot find our
# functions: retrying will not help, an operator has to fix the configuration.
_MISCONFIGURED_CODES = {"PGRST301", "PGRST302", "PGRST303", "PGRST202", "PGRST106", "401", "403"}


class SupabaseLedger(Ledger):
    def __init__(self, url: str, service_role_key: str, *, timeout: float = 30.0, connect_timeout: float = 5.0):
        self.url = url.rstrip("/")
        self._key = service_role_key
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._client = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # the key must not end up in a log line
        return f"SupabaseLedger({self.url!r})"

    @property
    def client(self):
        # postgrest + httpx cost ~0.1 s to import: paid on the first call, not by every
        # cold import of a function that may never touch the database.
        if self._client is None:
            with self._lock:
                if self._client is None:
                    import httpx
                    from postgrest import SyncPostgrestClient

                    headers = {"apikey": self._key, "Authorization": f"Bearer {self._key}"}
                    # Our own httpx client, for a bounded timeout: postgrest's default is
                    # 120 s, longer than any function may run. (`http_client` needs
                    # postgrest >= 1.1.)
                    http = httpx.Client(
                        base_url=f"{self.url}/rest/v1",
                        headers=headers,
                        timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout),
                        follow_redirects=False,
                    )
                    self._client = SyncPostgrestClient(f"{self.url}/rest/v1", headers=headers, http_client=http)
        return self._client

    def rpc(self, name: str, request: dict[str, Any] | None = None) -> Any:
        import httpx
        from postgrest.exceptions import APIError

        # Each entry point takes one jsonb argument named `request`; the few that take
        # none (catalog, prices, health) are called with an empty body.
        params = {"request": request} if request is not None else {}
        try:
            return self.client.rpc(name, params).execute().data
        except APIError as error:
            raise _problem(error) from None
        except httpx.UnsupportedProtocol as error:
            raise ServiceUnavailable(
                f"SUPABASE_URL {self.url!r} is not an http(s) URL", code="database_misconfigured"
            ) from error
        except httpx.TransportError as error:
            # Connect errors, resets and timeouts alike. A timeout after the request was
            # sent may hide a committed call; the caller's retry with the same
            # idempotency key then gets the first answer back.
            raise ServiceUnavailable("The database is unreachable", code="database_unavailable") from error

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.session.close()


def _problem(error: Any) -> Exception:
    """What an APIError from PostgREST means to creditgate's callers."""
    code = str(error.code or "")
    if code.startswith("PT"):
        # RAISE ... USING ERRCODE 'PTxxx', MESSAGE = code, DETAIL = json: the same three
        # fields the Postgres adapter reads, which PostgREST hands back as code/message/details.
        try:
            status = int(code[2:])
        except ValueError:
            status = 500
        return ledger_problem(status, error.message or "error", _detail(error.details))
    if not code:
        # Not PostgREST's answer but the gateway's (Supabase's says only
        # {"message": "Invalid API key", "hint": ...}): the request never reached the database.
        if "api key" in (error.message or "").lower():
            code = "401"
        else:
            return ServiceUnavailable("The database is unreachable", code="database_unavailable")
    if (problem := data_problem(code, error.message)) is not None:
        return problem
    if code in _UNAVAILABLE_CODES:
        return ServiceUnavailable("The database is unreachable", code="database_unavailable")
    if code in _MISCONFIGURED_CODES or (code == "42501" and _is_function_permission(error.message)):
        # 42501 on the call itself: the key is valid but not service_role's (the anon
        # key, say), so every entry point is refused.
        return ServiceUnavailable(
            f"The database refused creditgate's credentials or schema ({code}: {error.message}); "
            "check SUPABASE_SERVICE_ROLE_KEY and that the migrations ran",
            code="database_misconfigured",
        )
    # Anything else is a bug (ours or the database's), like an unexpected psycopg error
    # in the Postgres adapter: left unhandled so it is logged with its context.
    return error


def _is_function_permission(message: str | None) -> bool:
    return bool(message) and message.startswith("permission denied for function")


def _detail(details: Any) -> dict[str, Any]:
    # PostgREST sends DETAIL as the string it was raised with; a proxy may already have
    # decoded it.
    if isinstance(details, dict):
        return details
    if not details:
        return {}
    try:
        decoded = json.loads(details)
    except (TypeError, ValueError):
        return {}
    return decoded if isinstance(decoded, dict) else {}
