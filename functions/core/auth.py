"""Who is calling: the app's backend (service key), a signed-in user (Supabase JWT), or a
guest (X-Session-Id + client IP). Functions verify JWTs themselves and then call RPCs
with explicit arguments; no user's token is ever set on a shared client."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

from functions.core.errors import Unauthenticated
from functions.core.schemas import GUEST_SESSION_ID, is_account_id
from functions.core.settings import Settings

ASYMMETRIC = {"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "EdDSA"}


@dataclass(frozen=True)
class Caller:
    kind: Literal["service", "user", "guest"]
    user_id: str | None = None
    email: str | None = None
    session_id: str | None = None
    client_ip: str | None = None
    claims: dict[str, Any] = field(default_factory=dict)


def is_service_key(token: str, settings: Settings) -> bool:
    digest = hashlib.sha256(token.encode()).digest()
    # Compare against every key so the time taken does not tell which one nearly matched.
    matched = False
    for known in settings.service_key_digests:
        matched |= hmac.compare_digest(digest, known)
    return matched


_jwks_clients: dict[str, Any] = {}
_jwks_lock = threading.Lock()


def _jwks_client(url: str):
    from jwt import PyJWKClient

    with _jwks_lock:
        if url not in _jwks_clients:
            _jwks_clients[url] = PyJWKClient(url, cache_keys=True, lifespan=600, timeout=5)
        return _jwks_clients[url]


def verify_user_jwt(token: str, settings: Settings) -> dict[str, Any]:
    """Supabase's access token: HS256 with the legacy secret, or an asymmetric key from
    the project's JWKS. Signature, exp and aud are all checked."""
    import jwt  # PyJWT is loaded only when a JWT actually arrives

    try:
        header = jwt.get_unverified_header(token)
        algorithm = header.get("alg")
        if algorithm == "HS256" and settings.supabase_jwt_secret:
            key: Any = settings.supabase_jwt_secret
        elif algorithm in ASYMMETRIC and settings.resolved_jwks_url:
            key = _jwks_client(settings.resolved_jwks_url).get_signing_key_from_jwt(token).key
        else:
            raise Unauthenticated(f"Tokens signed with {algorithm!r} are not accepted here")
        claims = jwt.decode(
            token, key, algorithms=[algorithm], audience=settings.jwt_audience, options={"require": ["exp", "sub"]}
        )
    except jwt.ExpiredSignatureError:
        raise Unauthenticated("The token has expired") from None
    except jwt.PyJWKClientError:
        raise Unauthenticated("The token's signing key could not be found") from None
    except jwt.InvalidTokenError as error:
        raise Unauthenticated(f"Invalid token: {error}") from None
    if claims.get("role") not in (None, "authenticated"):
        raise Unauthenticated("Only signed-in users' tokens are accepted")
    # The subject becomes the user's account id, so it must be one (Supabase's are UUIDs).
    if not isinstance(claims["sub"], str) or not is_account_id(claims["sub"]):
        raise Unauthenticated("The token's subject is not a usable user id")
    return claims


def _email(value: Any) -> str | None:
    """The token's email, kept only when it is plain text the account row can hold."""
    if isinstance(value, str) and 0 < len(value) <= 320 and "\x00" not in value:
        return value
    return None


NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _host(hop: str) -> str:
    """The address of a proxy's hop, without the port some proxies add ("203.0.113.7:4711",
    "[2001:db8::1]:4711")."""
    if hop.startswith("["):
        return hop[1 : hop.find("]")] if "]" in hop else hop
    if hop.count(":") == 1:
        return hop.partition(":")[0]
    return hop


def client_ip(peer: str | None, forwarded_for: str | None, settings: Settings) -> str | None:
    """The client address guests are limited by: the socket peer, or the hop our N trusted
    proxies vouch for (counted from the right; what the client wrote on the left is never
    trusted). `forwarded_for` joins every X-Forwarded-For line, since a proxy may add its
    own line after the client's. An IPv6 client is its /64 network; one that carries an
    IPv4 address (mapped, NAT64, 6to4) is that address."""
    candidate = peer
    if settings.trusted_proxy_hops and forwarded_for:
        hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
        if len(hops) >= settings.trusted_proxy_hops:
            candidate = _host(hops[-settings.trusted_proxy_hops])
    try:
        address = ipaddress.ip_address(candidate) if candidate else None
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return str(embedded)
        # One IPv6 subscriber holds at least a /64 and can draw a fresh address for every
        # call, so guests' per-IP limits count the /64.
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address) if address else None


def authenticate(
    authorization: str | None, session_id: str | None, ip: str | None, settings: Settings
) -> Caller | None:
    """The caller, or None when nothing identifies one."""
    if authorization:
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("Use Authorization: Bearer <token>")
        if is_service_key(token, settings):
            return Caller(kind="service")
        if token.count(".") == 2:
            claims = verify_user_jwt(token, settings)
            return Caller(kind="user", user_id=claims["sub"], email=_email(claims.get("email")), claims=claims)
        raise Unauthenticated("Unknown service key")
    if session_id is not None:
        if not GUEST_SESSION_ID.fullmatch(session_id):
            raise Unauthenticated("X-Session-Id must be 8-128 characters of letters, digits and ._:-")
        return Caller(kind="guest", session_id=session_id, client_ip=ip)
    return None
