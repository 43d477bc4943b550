"""A PostgREST-compatible HTTP server for tests, backed by a real PostgreSQL.

No PostgREST binary can run where creditgate's tests run, yet `SupabaseLedger` talks to
the database only through supabase-py / postgrest-py. This server answers the subset of
the PostgREST API those clients use, and it never computes a result itself: every
request runs on the real database, in one transaction, under the role and JWT claims of
the request, the way PostgREST does it. Grants, RLS, SECURITY DEFINER, RAISE ... USING
DETAIL and the SQLSTATE-to-HTTP mapping therefore behave as they will on Supabase.

Served (under ``/rest/v1/``, behind a Supabase-like ``apikey`` gate):

* ``POST /rpc/<fn>`` with a JSON object of named arguments (or ``GET``/``HEAD`` with query
  arguments), select/filters/order/limit on set results. Like PostgREST, GET/HEAD and
  POST to a STABLE/IMMUTABLE function run in a READ ONLY transaction.
* ``GET``/``HEAD /<table-or-view>`` with ``select``, ``eq``/``neq``/``gt``/``gte``/
  ``lt``/``lte``/``like``/``ilike``/``is``/``in`` (and ``not.``), ``order``, ``limit``,
  ``offset``, ``Prefer: count=exact`` and ``Accept: application/vnd.pgrst.object+json``.

Anything else answers with PostgREST's error shape (``PGRST127`` "Feature not
implemented" for what a real PostgREST would do but this fake does not).

Every identifier from a request is quoted with ``psycopg.sql`` and every value is a bound
parameter: the test server must not be an injection hole of its own.
"""

from __future__ import annotations

import functools
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import jwt
import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

__all__ = [
    "FakePostgREST",
    "PostgRESTError",
    "make_jwt",
    "pg_error_status",
    "SUPABASE_PROJECT_REF",
]

# Claims of the fake project; only tests look at them, the server checks none of them.
SUPABASE_PROJECT_REF = "creditgate-test"
_USER_ISSUER = f"https://{SUPABASE_PROJECT_REF}.supabase.co/auth/v1"

_REST_PREFIX = "/rest/v1/"
_SINGULAR_MEDIA = "application/vnd.pgrst.object"
# Query keys PostgREST reserves; every other key is a filter (or, on GET RPC, an argument).
_RESERVED_KEYS = {"select", "order", "limit", "offset", "columns", "on_conflict"}
_LOGIC_KEYS = {"or", "and", "not.or", "not.and"}
_COMPARISONS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_IS_VALUES = {"null": "NULL", "not_null": "NOT NULL", "true": "TRUE", "false": "FALSE", "unknown": "UNKNOWN"}
# Legacy per-claim settings need a valid custom GUC name; PostgREST < 10 set them all.
_GUC_SAFE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# --------------------------------------------------------------------------- JWT helper


def make_jwt(
    secret: str,
    *,
    role: str | None,
    sub: str | uuid.UUID | None = None,
    exp_in: int | None = 3600,
    **claims: Any,
) -> str:
    """Mint an HS256 JWT shaped like the ones Supabase issues.

    Without ``sub`` it is an API key (the ``anon`` / ``service_role`` key: ``iss``
    "supabase", ``ref``, ``role``, ``iat``, ``exp``, no ``aud``). With ``sub`` it is a
    user access token from Supabase Auth (``aud`` "authenticated", ``iss`` the project's
    ``/auth/v1``, ``sub``, ``email``, ``app_metadata``, ``aal``, ``session_id``, ...).
    ``exp_in`` may be negative for an expired token, or None for no ``exp``. Extra
    ``claims`` override the defaults; a claim given as None is left out, which is how a
    test builds e.g. a token without ``aud``. ``role=None`` leaves ``role`` out.
    """
    now = int(time.time())
    payload: dict[str, Any] = {"iat": now}
    if sub is None:
        payload.update({"iss": "supabase", "ref": SUPABASE_PROJECT_REF})
    else:
        payload.update(
            {
                "iss": _USER_ISSUER,
                "aud": "authenticated",
                "sub": str(sub),
                "email": "",
                "phone": "",
                "app_metadata": {"provider": "email", "providers": ["email"]},
                "user_metadata": {},
                "aal": "aal1",
                "amr": [{"method": "password", "timestamp": now}],
                "session_id": str(uuid.uuid4()),
                "is_anonymous": False,
            }
        )
    if role is not None:
        payload["role"] = role
    if exp_in is not None:
        payload["exp"] = now + int(exp_in)
    for key, value in claims.items():
        if value is None:
            payload.pop(key, None)
        else:
            payload[key] = value
    return jwt.encode(payload, secret, algorithm="HS256")


# ------------------------------------------------------------------------------- errors


class PostgRESTError(Exception):
    """An error response, in PostgREST's JSON shape."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        hint: Any = None,
        headers: Sequence[tuple[str, str]] = (),
    ):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.hint = hint
        self.headers = list(headers)

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "details": self.details, "hint": self.hint, "message": self.message}


def pg_error_status(sqlstate: str, message: str, authed: bool) -> int:
    """The HTTP status PostgREST gives a PostgreSQL error (its ``mapSQLtoHTTP``).

    ``authed`` is PostgREST's notion: the request's role is not the anonymous role. It
    only decides 42501 (403 when authed, else 401). Note that anything unlisted is 400,
    not 500, and that the whole ``40`` class (serialization failure, deadlock) is 500.
    """
    c = sqlstate or ""
    if c.startswith("PT"):
        try:
            status = int(c[2:])
        except ValueError:
            return 500
        return status if 100 <= status <= 999 else 500
    if c.startswith("08"):
        return 503
    if c.startswith("09"):
        return 500
    if c.startswith(("0L", "0P")):
        return 403
    if c in ("23503", "23505"):
        return 409
    if c == "25006":
        return 405
    if c == "21000":
        return 400 if message.endswith("requires a WHERE clause") else 500
    if c == "22023":
        # set_config('role', ...) with a role that does not exist: a bad JWT, not bad data.
        return 401 if message.startswith("role") and message.endswith("does not exist") else 400
    if c.startswith(("25", "2D", "38", "39", "3B", "40")):
        return 500
    if c.startswith("28"):
        return 403
    if c == "53400":
        return 500
    if c.startswith("53"):
        return 503
    if c.startswith(("54", "55")):
        return 500
    if c == "57P01":
        return 503
    if c.startswith(("57", "58", "F0", "HV")):
        return 500
    if c == "P0001":
        return 400
    if c.startswith(("P0", "XX")):
        return 500
    if c == "42883":
        return 406 if message.startswith("function xmlagg(") else 404
    if c == "42P01":
        return 404
    if c == "42P17":
        return 500
    if c == "42501":
        return 403 if authed else 401
    return 400


def _error_from_pg(exc: psycopg.Error, authed: bool) -> PostgRESTError:
    diag = exc.diag
    sqlstate = exc.sqlstate or ""
    message = diag.message_primary or str(exc)
    detail, hint = diag.message_detail, diag.message_hint
    if not sqlstate:
        # No server error behind it: the connection itself failed.
        return PostgRESTError(503, "PGRST001", "Database client error. Retrying the connection.", str(exc))
    if sqlstate == "PGRST":
        return _raise_pgrst(message, detail)
    status = pg_error_status(sqlstate, message, authed)
    headers = [("WWW-Authenticate", "Bearer")] if status == 401 else []
    return PostgRESTError(status, sqlstate, message, detail, hint, headers)


def _raise_pgrst(message: str, detail: str | None) -> PostgRESTError:
    """``RAISE SQLSTATE 'PGRST'``: message and detail carry the whole response as JSON."""
    try:
        msg = json.loads(message)
        if not isinstance(msg, dict) or "code" not in msg or "message" not in msg:
            raise ValueError
    except ValueError:
        return PostgRESTError(
            500,
            "PGRST121",
            "Could not parse JSON in the \"RAISE SQLSTATE 'PGRST'\" error",
            f"Invalid JSON value for MESSAGE: '{message}'",
            "MESSAGE must be a JSON object with obligatory keys: 'code', 'message' "
            "and optional keys: 'details', 'hint'.",
        )
    try:
        if detail is None:
            raise KeyError
        det = json.loads(detail)
        status = int(det["status"])
        headers = [(str(k), str(v)) for k, v in dict(det["headers"]).items()]
    except (ValueError, KeyError, TypeError):
        text = (
            "DETAIL is missing in the RAISE statement"
            if detail is None
            else f"Invalid JSON value for DETAIL: '{detail}'"
        )
        return PostgRESTError(
            500,
            "PGRST121",
            "Could not parse JSON in the \"RAISE SQLSTATE 'PGRST'\" error",
            text,
            "DETAIL must be a JSON object with obligatory keys: 'status', 'headers' and optional key: 'status_text'.",
        )
    return PostgRESTError(status, str(msg["code"]), str(msg["message"]), msg.get("details"), msg.get("hint"), headers)


def _parse_error(message: str, details: str) -> PostgRESTError:
    return PostgRESTError(400, "PGRST100", message, details)


def _not_implemented(what: str) -> PostgRESTError:
    return PostgRESTError(
        400,
        "PGRST127",
        "Feature not implemented",
        f"{what} is not implemented by the test server (tests/fakes/postgrest_server.py)",
    )


# ------------------------------------------------------------------------------ request


@dataclass
class _Request:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def prefer(self) -> set[str]:
        raw = self.headers.get("prefer", "")
        return {p.strip() for p in raw.split(",") if p.strip()}

    def singular(self) -> bool:
        return _SINGULAR_MEDIA in self.headers.get("accept", "")


@dataclass
class _Auth:
    role: str
    claims: dict[str, Any]
    authed: bool  # PostgREST's meaning: role differs from the anonymous role


@dataclass
class _Param:
    name: str  # "" when unnamed
    type: str  # format_type() under search_path=pg_catalog, so always resolvable
    has_default: bool


@dataclass
class _Routine:
    schema: str
    name: str
    params: list[_Param]
    returns_set: bool
    is_void: bool
    is_composite: bool
    volatile: bool


@dataclass
class _Read:
    """The parts of a read that come from the query string."""

    select: sql.Composable
    where: list[sql.Composable]
    params: list[Any]
    order: sql.Composable
    limit: int | None
    offset: int


# ------------------------------------------------------------------------------- server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # 32 clients connecting at once must not overflow the listen backlog (default 5).
    request_queue_size = 256
    app: FakePostgREST


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx clients expect
    server_version = "postgrest-fake"
    sys_version = ""
    timeout = 60  # an idle keep-alive connection must not pin a thread forever
    server: _Server

    def _dispatch(self) -> None:
        body = self._read_body()
        parts = urlsplit(self.path)
        headers: dict[str, str] = {}
        for key, value in self.headers.items():
            k = key.lower()
            headers[k] = f"{headers[k]}, {value}" if k in headers else value
        req = _Request(self.command, unquote(parts.path), parse_qsl(parts.query, keep_blank_values=True), headers, body)
        status, out_headers, payload = self.server.app.handle(req)
        self.send_response(status)
        for key, value in out_headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD" and payload:
            self.wfile.write(payload)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    do_GET = do_POST = do_HEAD = do_PATCH = do_PUT = do_DELETE = do_OPTIONS = _dispatch

    def log_message(self, fmt: str, *args: Any) -> None:
        if self.server.app.log_requests:
            super().log_message(fmt, *args)


class FakePostgREST:
    """PostgREST (plus Supabase's ``apikey`` gate) over a real database, for tests.

    ``dsn`` must be a superuser (or a role that is a member of every role a JWT may
    name): each request switches to the JWT's role inside its own transaction, exactly
    like PostgREST's authenticator does. ``url`` is the project URL to give supabase-py
    (``create_client(server.url, key)``); ``rest_url`` is the base URL for a bare
    ``postgrest.SyncPostgrestClient``.
    """

    def __init__(
        self,
        dsn: str,
        jwt_secret: str,
        *,
        schemas: Sequence[str] = ("public",),
        anon_role: str | None = "anon",
        extra_search_path: Sequence[str] = ("public",),
        host: str = "127.0.0.1",
        port: int = 0,
        pool_size: int = 10,
        pool_timeout: float = 10.0,
        require_apikey: bool = True,
        jwt_leeway: int = 30,
        log_requests: bool = False,
    ) -> None:
        if not schemas:
            raise ValueError("at least one schema must be exposed")
        self.dsn = dsn
        self.jwt_secret = jwt_secret
        self.schemas = tuple(schemas)
        self.anon_role = anon_role
        self.extra_search_path = tuple(extra_search_path)
        self.host = host
        self.port = port
        self.pool_size = pool_size
        self.pool_timeout = pool_timeout
        # Supabase's gateway refuses a request carrying neither apikey nor Authorization
        # before PostgREST sees it; bare PostgREST would serve it as the anon role.
        self.require_apikey = require_apikey
        # PostgREST tolerates 30 s of clock skew on exp/nbf/iat.
        self.jwt_leeway = jwt_leeway
        self.log_requests = log_requests
        self._pool: ConnectionPool | None = None
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> FakePostgREST:
        if self._httpd is not None:
            return self
        # Statements here are all one-off dynamic SQL; server-side prepares would only
        # pile up, and Supabase's pooler in transaction mode forbids them anyway.
        pool = ConnectionPool(
            self.dsn,
            min_size=1,
            max_size=self.pool_size,
            kwargs={"prepare_threshold": None},
            open=False,
            timeout=self.pool_timeout,
            name="fake-postgrest",
        )
        pool.open(wait=True, timeout=self.pool_timeout)
        try:
            httpd = _Server((self.host, self.port), _Handler)
        except BaseException:
            pool.close()
            raise
        httpd.app = self
        self._pool, self._httpd = pool, httpd
        self.port = httpd.server_address[1]
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, name=f"fake-postgrest:{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, pool, thread = self._httpd, self._pool, self._thread
        self._httpd = self._pool = self._thread = None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)
        if pool is not None:
            pool.close()

    def __enter__(self) -> FakePostgREST:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return f"http://{self.host}:{self.port}"

    @property
    def rest_url(self) -> str:
        return f"{self.url}/rest/v1"

    @functools.cached_property
    def anon_key(self) -> str:
        """The project's anon key (a long-lived ``role: anon`` JWT), as in Supabase."""
        return make_jwt(self.jwt_secret, role="anon", exp_in=10 * 365 * 86400)

    @functools.cached_property
    def service_role_key(self) -> str:
        """The project's service_role key; the Supabase adapter's credential."""
        return make_jwt(self.jwt_secret, role="service_role", exp_in=10 * 365 * 86400)

    # -- request entry point ---------------------------------------------------------

    def handle(self, req: _Request) -> tuple[int, list[tuple[str, str]], bytes]:
        """Answer one request: (status, headers, body). Never raises."""
        try:
            return self._route(req)
        except PostgRESTError as err:
            return self._error_response(err)
        except Exception as exc:  # a bug in the fake must surface as a 500, not a hang
            return self._error_response(
                PostgRESTError(500, "PGRSTX00", f"test server error: {type(exc).__name__}: {exc}")
            )

    @staticmethod
    def _error_response(err: PostgRESTError) -> tuple[int, list[tuple[str, str]], bytes]:
        headers = [
            ("Content-Type", "application/json; charset=utf-8"),
            ("Proxy-Status", f"PostgREST; error={err.code}"),
        ]
        headers += err.headers
        return err.status, headers, json.dumps(err.body()).encode()

    def _route(self, req: _Request) -> tuple[int, list[tuple[str, str]], bytes]:
        if not req.path.startswith(_REST_PREFIX):
            raise PostgRESTError(404, "PGRST125", "Invalid path specified in request URL")
        auth = self._authenticate(req)
        rest = req.path[len(_REST_PREFIX) :]
        if rest.startswith("rpc/"):
            name = rest[len("rpc/") :]
            if not name or "/" in name:
                raise PostgRESTError(404, "PGRST125", "Invalid path specified in request URL")
            if req.method not in ("GET", "HEAD", "POST"):
                raise PostgRESTError(405, "PGRST101", f"Cannot use the {req.method} method on RPC")
            return self._rpc(req, auth, name)
        if not rest:
            raise _not_implemented("The OpenAPI root endpoint")
        if "/" in rest:
            raise PostgRESTError(404, "PGRST125", "Invalid path specified in request URL")
        if req.method not in ("GET", "HEAD"):
            raise _not_implemented(f"{req.method} on a table or view")
        return self._read_table(req, auth, rest)

    # -- authentication ----------------------------------------------------------------

    def _authenticate(self, req: _Request) -> _Auth:
        authz = req.headers.get("authorization")
        apikey = req.headers.get("apikey")
        token: str | None = None
        if authz is not None:
            scheme, _, value = authz.strip().partition(" ")
            if scheme.lower() == "bearer":
                token = value.strip()
                if not token:
                    raise self._jwt_error("PGRST301", "Empty JWT is sent in Authorization header")
        if self.require_apikey:
            # Supabase's gateway: no project key, no request; it only checks the key is
            # one of the project's, then PostgREST goes by the Authorization header.
            if apikey is None:
                raise PostgRESTError(
                    401,
                    "PGRST302",
                    "No API key found in request",
                    None,
                    "No `apikey` request header or url param was found.",
                    [("WWW-Authenticate", "Bearer")],
                )
            self._decode(apikey)
        if token is None and apikey is not None:
            # Without Authorization, the gateway forwards the apikey as the bearer token.
            token = apikey
        if token is None:
            if self.anon_role is None:
                raise PostgRESTError(
                    401, "PGRST302", "Anonymous access is disabled", headers=[("WWW-Authenticate", "Bearer")]
                )
            return _Auth(self.anon_role, {"role": self.anon_role}, False)
        claims = self._decode(token)
        role = claims.get("role")
        if not isinstance(role, str) or not role:
            if self.anon_role is None:
                raise PostgRESTError(
                    401, "PGRST302", "Anonymous access is disabled", headers=[("WWW-Authenticate", "Bearer")]
                )
            role = self.anon_role
        # PostgREST puts the effective role into the claims it hands to SQL.
        claims = {**claims, "role": role}
        return _Auth(role, claims, role != self.anon_role)

    def _decode(self, token: str) -> dict[str, Any]:
        parts = token.split(".")
        if len(parts) != 3:
            raise self._jwt_error("PGRST301", f"Expected 3 parts in JWT; got {len(parts)}")
        try:
            claims = jwt.decode(
                token,
                self.jwt_secret,
                algorithms=["HS256", "HS384", "HS512"],
                leeway=self.jwt_leeway,
                # PostgREST checks aud only when jwt-aud is configured; Supabase leaves it unset.
                options={"verify_aud": False, "require": []},
            )
        except jwt.ExpiredSignatureError:
            raise self._jwt_error("PGRST303", "JWT expired") from None
        except jwt.ImmatureSignatureError:
            raise self._jwt_error("PGRST303", "JWT not yet valid") from None
        except jwt.InvalidAlgorithmError:
            raise self._jwt_error("PGRST301", "Wrong or unsupported encoding algorithm") from None
        except jwt.InvalidSignatureError:
            raise self._jwt_error("PGRST301", "JWT cryptographic operation failed") from None
        except jwt.DecodeError:
            raise self._jwt_error("PGRST301", "JWT couldn't be decoded") from None
        except jwt.InvalidTokenError:
            raise self._jwt_error("PGRST303", "Parsing claims failed") from None
        if not isinstance(claims, dict):
            raise self._jwt_error("PGRST303", "Parsing claims failed")
        return claims

    @staticmethod
    def _jwt_error(code: str, message: str) -> PostgRESTError:
        return PostgRESTError(
            401,
            code,
            message,
            headers=[("WWW-Authenticate", f'Bearer error="invalid_token", error_description={json.dumps(message)}')],
        )

    # -- schema / transaction plumbing ---------------------------------------------------

    def _schema(self, req: _Request) -> str:
        key = "accept-profile" if req.method in ("GET", "HEAD") else "content-profile"
        schema = req.headers.get(key) or self.schemas[0]
        if schema not in self.schemas:
            raise PostgRESTError(
                406,
                "PGRST106",
                f"Invalid schema: {schema}",
                None,
                "Only the following schemas are exposed: " + ", ".join(self.schemas),
            )
        return schema

    def _transaction(self, auth: _Auth, work: Callable[[psycopg.Cursor], Any]) -> Any:
        assert self._pool is not None, "server not started"
        try:
            with self._pool.connection() as conn:
                with conn.transaction():
                    with conn.cursor() as cur:
                        return work(cur)
        except PoolTimeout:
            raise PostgRESTError(504, "PGRST003", "Timed out acquiring connection from connection pool.") from None
        except psycopg.Error as exc:
            raise _error_from_pg(exc, auth.authed) from None

    def _impersonate(self, cur: psycopg.Cursor, req: _Request, auth: _Auth, schema: str, read_only: bool) -> None:
        """Become the request, as PostgREST's per-request ``set_config`` batch does."""
        if read_only:
            # Going read-only is allowed mid-transaction (only the way back is not), so
            # the catalog lookup before it does not matter.
            cur.execute("SET TRANSACTION READ ONLY")
        search_path = ", ".join(sql.Identifier(s).as_string(cur) for s in (schema, *self.extra_search_path))
        cookies: dict[str, str] = {}
        if "cookie" in req.headers:
            try:
                jar = SimpleCookie()
                jar.load(req.headers["cookie"])
                cookies = {k: m.value for k, m in jar.items()}
            except CookieError:
                cookies = {}
        settings: list[tuple[str, str]] = [
            ("search_path", search_path),
            ("role", auth.role),
            ("request.jwt.claims", json.dumps(auth.claims)),
            ("request.method", req.method),
            ("request.path", req.path[len(_REST_PREFIX) - 1 :]),
            ("request.headers", json.dumps(req.headers)),
            ("request.cookies", json.dumps(cookies)),
        ]
        # PostgREST < 10 exposed each claim on its own; older SQL (and auth.uid() in
        # sql/00_supabase_compat.sql) still reads request.jwt.claim.sub / .role.
        for key, value in auth.claims.items():
            if _GUC_SAFE.match(key):
                text = value if isinstance(value, str) else json.dumps(value)
                settings.append((f"request.jwt.claim.{key}", text))
        query = sql.SQL("SELECT {}").format(
            sql.SQL(", ").join(
                sql.SQL("pg_catalog.set_config({}, {}, true)").format(sql.Literal(k), sql.Placeholder())
                for k, _ in settings
            )
        )
        cur.execute(query, [v for _, v in settings])

    # -- query-string parsing --------------------------------------------------------------

    def _parse_read(self, req: _Request, qualifier: str | None, skip: set[str]) -> _Read:
        """select / filters / order / limit / offset, with columns qualified by ``qualifier``."""

        def ident(col: str) -> sql.Identifier:
            return sql.Identifier(qualifier, col) if qualifier else sql.Identifier(col)

        star = sql.SQL("{}.*").format(sql.Identifier(qualifier)) if qualifier else sql.SQL("*")
        read = _Read(star, [], [], sql.SQL(""), None, 0)
        for key, value in req.query:
            if key in skip:
                continue
            if key == "select":
                read.select = self._parse_select(value, ident, star)
            elif key == "order":
                read.order = self._parse_order(value, ident)
            elif key == "limit":
                read.limit = self._parse_int(key, value)
            elif key == "offset":
                read.offset = self._parse_int(key, value)
            elif key in _RESERVED_KEYS:
                raise _not_implemented(f"The {key!r} parameter")
            elif key in _LOGIC_KEYS or "." in key:
                raise _not_implemented(f"The {key!r} filter (logic trees, embedded filters)")
            else:
                cond, values = self._parse_filter(_unquote(key), value, ident)
                read.where.append(cond)
                read.params.extend(values)
        return read

    @staticmethod
    def _parse_int(key: str, value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise _parse_error(
                f'"failed to parse {key} parameter ({value})"', f'unexpected "{value}" expecting digit'
            ) from None
        if n < 0:
            raise PostgRESTError(
                416, "PGRST103", "Requested range not satisfiable", "Limit should be greater than or equal to zero."
            )
        return n

    @staticmethod
    def _parse_select(value: str, ident: Callable[[str], sql.Identifier], star: sql.Composable) -> sql.Composable:
        out: list[sql.Composable] = []
        for item in (s.strip() for s in _split_top(value, ",")):
            if item == "*":
                out.append(star)
                continue
            if not item:
                raise _parse_error(f'"failed to parse select parameter ({value})"', "empty column name")
            if "(" in item or "->" in item or "::" in item or item.startswith("..."):
                raise _not_implemented(f"select item {item!r} (embedding, JSON paths, casts, spreads)")
            alias, sep, column = item.rpartition(":") if not item.startswith('"') else ("", "", item)
            expr: sql.Composable = ident(_unquote(column))
            if sep and alias:
                expr = sql.SQL("{} AS {}").format(expr, sql.Identifier(_unquote(alias)))
            out.append(expr)
        return sql.SQL(", ").join(out)

    @staticmethod
    def _parse_order(value: str, ident: Callable[[str], sql.Identifier]) -> sql.Composable:
        terms: list[sql.Composable] = []
        for item in _split_top(value, ","):
            column, *mods = item.strip().split(".")
            words: list[str] = []
            for mod in mods:
                if mod in ("asc", "desc") and len(words) == 0:
                    words.append(mod.upper())
                elif mod in ("nullsfirst", "nullslast") and not any("NULLS" in w for w in words):
                    words.append("NULLS FIRST" if mod == "nullsfirst" else "NULLS LAST")
                else:
                    raise _parse_error(
                        f'"failed to parse order ({value})"',
                        f'unexpected "{mod}" expecting "asc", "desc", "nullsfirst" or "nullslast"',
                    )
            if not column:
                raise _parse_error(f'"failed to parse order ({value})"', "empty column name")
            terms.append(sql.SQL(" ").join([ident(_unquote(column)), *map(sql.SQL, words)]))
        return sql.SQL(" ORDER BY ") + sql.SQL(", ").join(terms)

    @staticmethod
    def _parse_filter(
        column: str, value: str, ident: Callable[[str], sql.Identifier]
    ) -> tuple[sql.Composable, list[Any]]:
        op, dot, operand = value.partition(".")
        negate = op == "not"
        if negate:
            op, dot, operand = operand.partition(".")
        if not dot:
            raise _parse_error(f'"failed to parse filter ({value})"', "expecting an operator")
        col = ident(column)
        values: list[Any] = []
        if op in _COMPARISONS:
            # Bound as an untyped literal, like PostgREST's 'value'::unknown, so the
            # column's type decides the cast (uuid, numeric, timestamptz...).
            cond = sql.SQL("{} {} {}").format(col, sql.SQL(_COMPARISONS[op]), sql.Placeholder())
            values = [operand]
        elif op in ("like", "ilike"):
            cond = sql.SQL("{} {} {}").format(col, sql.SQL(op.upper()), sql.Placeholder())
            values = [operand.replace("*", "%")]
        elif op == "is":
            if operand.lower() not in _IS_VALUES:
                raise _parse_error(
                    f'"failed to parse filter ({value})"', 'expecting "null", "not_null", "true", "false" or "unknown"'
                )
            cond = sql.SQL("{} IS {}").format(col, sql.SQL(_IS_VALUES[operand.lower()]))
        elif op == "in":
            if not (operand.startswith("(") and operand.endswith(")")):
                raise _parse_error(f'"failed to parse filter ({value})"', 'expecting "("')
            inner = operand[1:-1]
            values = [_unquote(s) for s in _split_top(inner, ",")] if inner else []
            cond = (
                sql.SQL("{} IN ({})").format(col, sql.SQL(", ").join(sql.Placeholder() for _ in values))
                if values
                else sql.SQL("false")
            )
        else:
            raise _not_implemented(f"The {op!r} operator")
        if negate:
            cond = sql.SQL("NOT ({})").format(cond)
        return cond, values

    # -- reads: shared by tables, views and set/composite RPC results ----------------------

    def _run_read(
        self, cur: psycopg.Cursor, source: sql.Composable, source_params: Sequence[Any], read: _Read, count_exact: bool
    ) -> tuple[str, int, int | None]:
        where = (sql.SQL(" WHERE ") + sql.SQL(" AND ").join(read.where)) if read.where else sql.SQL("")
        page = sql.SQL("SELECT {} FROM {}{}{}{}{}").format(
            read.select,
            source,
            where,
            read.order,
            sql.SQL(" LIMIT {}").format(sql.Literal(read.limit)) if read.limit is not None else sql.SQL(""),
            sql.SQL(" OFFSET {}").format(sql.Literal(read.offset)) if read.offset else sql.SQL(""),
        )
        cur.execute(
            sql.SQL(
                "SELECT coalesce(pg_catalog.json_agg(pgrst_t), '[]')::text, pg_catalog.count(pgrst_t) FROM ({}) pgrst_t"
            ).format(page),
            [*source_params, *read.params],
        )
        body, n = cur.fetchone()
        total = None
        if count_exact:
            # A second evaluation; harmless for tables, and PostgREST's own count query
            # also re-runs the source.
            cur.execute(
                sql.SQL("SELECT pg_catalog.count(*) FROM {}{}").format(source, where), [*source_params, *read.params]
            )
            total = cur.fetchone()[0]
        return body, n, total

    @staticmethod
    def _read_response(
        req: _Request, body: str, n: int, total: int | None, offset: int
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        if req.singular():
            if n != 1:
                raise PostgRESTError(
                    406, "PGRST116", "Cannot coerce the result to a single JSON object", f"The result contains {n} rows"
                )
            body = json.dumps(json.loads(body)[0])
        status, content_range = _range(offset, n, total)
        return status, [("Content-Type", _content_type(req)), ("Content-Range", content_range)], body.encode()

    def _read_table(self, req: _Request, auth: _Auth, name: str) -> tuple[int, list[tuple[str, str]], bytes]:
        schema = self._schema(req)
        read = self._parse_read(req, None, skip=set())

        def work(cur: psycopg.Cursor) -> tuple[str, int, int | None]:
            self._impersonate(cur, req, auth, schema, read_only=True)
            # PostgREST's schema cache lists relations whatever the grants; privileges
            # are left to the database (42501 → 401/403).
            cur.execute(
                "SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s "
                "AND c.relkind IN ('r', 'v', 'm', 'f', 'p')",
                (schema, name),
            )
            if cur.fetchone() is None:
                raise PostgRESTError(404, "PGRST205", f"Could not find the table '{schema}.{name}' in the schema cache")
            source = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))
            return self._run_read(cur, source, (), read, _wants_count(req))

        body, n, total = self._transaction(auth, work)
        return self._read_response(req, body, n, total, read.offset)

    # -- RPC --------------------------------------------------------------------------------

    def _rpc(self, req: _Request, auth: _Auth, name: str) -> tuple[int, list[tuple[str, str]], bytes]:
        schema = self._schema(req)
        is_post = req.method == "POST"
        body: Any = {}
        if is_post and req.body.strip():
            try:
                body = json.loads(req.body)
            except ValueError as exc:
                raise PostgRESTError(400, "PGRST102", f"Invalid body: {exc}") from None
        if is_post:
            keys = list(body) if isinstance(body, dict) else []
        else:
            keys = list(dict.fromkeys(k for k, _ in req.query if k not in _RESERVED_KEYS and k not in _LOGIC_KEYS))
        single_object = "params=single-object" in req.prefer()

        def work(cur: psycopg.Cursor) -> tuple[int, list[tuple[str, str]], bytes]:
            # The catalog lookup stands in for PostgREST's schema cache; it runs before
            # the role switch, as the server's own role.
            routines = self._find_routines(cur, schema, name)
            routine, mode = self._choose(routines, schema, name, keys, body, is_post, single_object)
            arg_keys = keys if is_post else [k for k in keys if k in {p.name for p in routine.params}]
            source, source_params = self._call_source(routine, mode, arg_keys, body, req)
            # PostgREST: GET/HEAD always read-only; POST read-only unless VOLATILE.
            self._impersonate(cur, req, auth, schema, read_only=not is_post or not routine.volatile)
            return self._run_call(cur, req, routine, source, source_params, skip=set() if is_post else set(arg_keys))

        return self._transaction(auth, work)

    @staticmethod
    def _find_routines(cur: psycopg.Cursor, schema: str, name: str) -> list[_Routine]:
        # format_type() schema-qualifies every type outside pg_catalog when that is the
        # whole search_path, so the names stay valid under the request's search_path.
        cur.execute("SELECT pg_catalog.set_config('search_path', 'pg_catalog', true)")
        cur.execute(
            """
            SELECT p.proretset,
                   p.prorettype = 'void'::regtype,
                   p.prorettype = 'record'::regtype OR t.typtype = 'c'
                     OR (t.typtype = 'd' AND bt.typtype = 'c'),
                   p.provolatile = 'v',
                   p.pronargdefaults,
                   coalesce(p.proargnames, '{}'::text[]),
                   coalesce(p.proargmodes::text[], '{}'::text[]),
                   array(SELECT format_type(a.t, NULL)
                           FROM unnest(coalesce(p.proallargtypes, p.proargtypes::oid[]))
                                WITH ORDINALITY a(t, i)
                          ORDER BY a.i)
              FROM pg_proc p
              JOIN pg_namespace n ON n.oid = p.pronamespace
              JOIN pg_type t ON t.oid = p.prorettype
              LEFT JOIN pg_type bt ON bt.oid = t.typbasetype
             WHERE n.nspname = %s AND p.proname = %s AND p.prokind = 'f'
            """,
            (schema, name),
        )
        routines = []
        for retset, is_void, composite, volatile, ndefaults, names, modes, types in cur.fetchall():
            params = [
                _Param(names[i] if i < len(names) else "", typ, False)
                for i, typ in enumerate(types)
                if not modes or modes[i] in ("i", "b", "v")
            ]
            # Defaults belong to the trailing input parameters.
            for p in params[len(params) - ndefaults :] if ndefaults else ():
                p.has_default = True
            routines.append(_Routine(schema, name, params, retset, is_void, composite, volatile))
        return routines

    @staticmethod
    def _choose(
        routines: list[_Routine], schema: str, name: str, keys: list[str], body: Any, is_post: bool, single_object: bool
    ) -> tuple[_Routine, str]:
        """PostgREST's overload resolution by argument names."""
        named: list[_Routine] = []
        single: list[_Routine] = []
        keyset = set(keys)
        for r in routines:
            ps = r.params
            if is_post and len(ps) == 1 and ps[0].type in ("json", "jsonb") and (not ps[0].name or single_object):
                # The whole body goes to the one json/jsonb parameter.
                single.append(r)
                continue
            if any(not p.name for p in ps):
                continue
            names = {p.name for p in ps}
            required = {p.name for p in ps if not p.has_default}
            if is_post:
                if isinstance(body, dict) and keyset <= names and required <= keyset:
                    named.append(r)
            elif required <= keyset:
                named.append(r)
        if not is_post and len(named) > 1:
            # On GET, keys that are not arguments are result filters: prefer the
            # candidate that uses the most of them.
            best = max(len(keyset & {p.name for p in r.params}) for r in named)
            named = [r for r in named if len(keyset & {p.name for p in r.params}) == best]
        if len(named) + len(single) == 1:
            return (named[0], "named") if named else (single[0], "single")
        if not named and not single:
            if is_post and not isinstance(body, dict):
                raise PostgRESTError(400, "PGRST102", "Invalid body: a JSON object was expected")
            shown = f"({', '.join(keys)})" if keys else " without parameters"
            searched = (
                f" with parameter{'s' if len(keys) > 1 else ''} {', '.join(keys)}" if keys else " without parameters"
            )
            if is_post:
                searched += " or with a single unnamed json/jsonb parameter"
            raise PostgRESTError(
                404,
                "PGRST202",
                f"Could not find the function {schema}.{name}{shown} in the schema cache",
                f"Searched for the function {schema}.{name}{searched}, but no matches were found in the schema cache.",
                "If a new function was created in the database with this name and parameters, "
                "try reloading the schema cache.",
            )
        raise PostgRESTError(
            300,
            "PGRST203",
            "Could not choose the best candidate function between: "
            + ", ".join(
                f"{schema}.{name}(" + ", ".join(f"{p.name} => {p.type}" for p in r.params) + ")" for r in named + single
            ),
            None,
            "Try renaming the parameters or the function itself in the database so function "
            "overloading can be resolved",
        )

    @staticmethod
    def _call_source(
        routine: _Routine, mode: str, keys: list[str], body: Any, req: _Request
    ) -> tuple[sql.Composable, list[Any]]:
        """The call as a FROM item named ``pgrst_call``; every argument a bound parameter.

        A scalar result is the single column ``pgrst_call.pgrst_v``; a composite result
        keeps its own columns, so filters, order and select apply to them.
        """
        fn = sql.SQL("{}.{}").format(sql.Identifier(routine.schema), sql.Identifier(routine.name))
        alias = sql.SQL("pgrst_call") if routine.is_composite else sql.SQL("pgrst_call(pgrst_v)")
        by_name = {p.name: p for p in routine.params}
        if mode == "single":
            return sql.SQL("{}({}::{}) AS {}").format(fn, sql.Placeholder(), sql.SQL(routine.params[0].type), alias), [
                json.dumps(body)
            ]
        if not keys:
            return sql.SQL("{}() AS {}").format(fn, alias), []
        if req.method == "POST":
            # json_to_record converts each JSON value with the parameter's declared type,
            # as PostgREST does: an object into jsonb, a string into uuid or text, a number
            # into numeric or int, an array into an array.
            coldefs = sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(k), sql.SQL(by_name[k].type)) for k in keys
            )
            args = sql.SQL(", ").join(
                sql.SQL("{} => pgrst_args.{}").format(sql.Identifier(k), sql.Identifier(k)) for k in keys
            )
            return sql.SQL(
                "pg_catalog.json_to_record({}::json) AS pgrst_args({}) CROSS JOIN LATERAL {}({}) AS {}"
            ).format(sql.Placeholder(), coldefs, fn, args, alias), [json.dumps({k: body[k] for k in keys})]
        # GET/HEAD: arguments arrive as text and go through the types' input functions.
        values = dict(req.query)
        args = sql.SQL(", ").join(
            sql.SQL("{} => {}::{}").format(sql.Identifier(k), sql.Placeholder(), sql.SQL(by_name[k].type)) for k in keys
        )
        return sql.SQL("{}({}) AS {}").format(fn, args, alias), [values[k] for k in keys]

    def _run_call(
        self,
        cur: psycopg.Cursor,
        req: _Request,
        routine: _Routine,
        source: sql.Composable,
        source_params: list[Any],
        skip: set[str],
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        if routine.is_void:
            cur.execute(sql.SQL("SELECT 1 FROM {}").format(source), source_params)
            # PostgREST >= 10 answers a void function with 204 and no body.
            return 204, [], b""
        if not routine.is_composite:
            read = self._parse_read(req, "pgrst_call", skip=skip | {"select"})
            if read.where or read.order.as_string(cur):
                raise _not_implemented("Filters and order on a scalar function result")
            read.select = sql.SQL("pgrst_call.pgrst_v")
            body, n, total = self._run_read(cur, source, source_params, read, _wants_count(req))
            values = [row["pgrst_v"] for row in json.loads(body)]
            if not routine.returns_set:
                # A scalar result is the JSON value itself (json/jsonb included).
                value = values[0] if values else None
                return (
                    200,
                    [("Content-Type", _content_type(req)), ("Content-Range", "0-0/*")],
                    json.dumps(value).encode(),
                )
            body = json.dumps(values)
        else:
            read = self._parse_read(req, "pgrst_call", skip=skip)
            body, n, total = self._run_read(cur, source, source_params, read, _wants_count(req))
            if not routine.returns_set and not req.singular():
                # A composite (non-SETOF) result is one object, not an array.
                rows = json.loads(body)
                return (
                    200,
                    [("Content-Type", _content_type(req)), ("Content-Range", "0-0/*")],
                    json.dumps(rows[0] if rows else None).encode(),
                )
        # Raising inside the transaction rolls the call back, as PostgREST does when the
        # singular (vnd.pgrst.object) contract fails.
        return self._read_response(req, body, n, total, read.offset)


# ------------------------------------------------------------------------------- helpers


def _wants_count(req: _Request) -> bool:
    # planned/estimated need the planner's row estimates; an exact count is always right.
    return any(p in req.prefer() for p in ("count=exact", "count=planned", "count=estimated"))


def _content_type(req: _Request) -> str:
    media = _SINGULAR_MEDIA + "+json" if req.singular() else "application/json"
    return media + "; charset=utf-8"


def _range(offset: int, n: int, total: int | None) -> tuple[int, str]:
    """PostgREST's Content-Range header, and the status it implies for reads."""
    upper = offset + n - 1
    total_s = "*" if total is None else str(total)
    content_range = f"{offset}-{upper}/{total_s}" if n > 0 else f"*/{total_s}"
    if total is None:
        return 200, content_range
    if offset > total:
        return 416, content_range
    if n < total:
        return 206, content_range
    return 200, content_range


def _split_top(value: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes and parentheses."""
    out: list[str] = []
    cur: list[str] = []
    depth, quoted, escaped = 0, False, False
    for ch in value:
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
        elif not quoted and depth == 0 and ch == sep:
            out.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    out.append("".join(cur))
    return out


def _unquote(value: str) -> str:
    """A name or value as postgrest-py quotes it: ``"a,b"`` with backslash escapes."""
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value
