"""FastAPI dependencies as Annotated aliases: who is calling, which account they act for,
and the ledger."""

from __future__ import annotations

import logging
import threading
from typing import Annotated

from fastapi import Depends, Header, Request

from functions.core.auth import Caller, authenticate, client_ip
from functions.core.errors import Forbidden, InvalidRequest, Unauthenticated
from functions.core.ledger import Ledger, build_ledger
from functions.core.settings import Settings

_ledger_lock = threading.Lock()
_told_no_address = threading.Event()
logger = logging.getLogger("creditgate.auth")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_ledger(request: Request) -> Ledger:
    state = request.app.state
    if state.ledger is None:
        with _ledger_lock:
            if state.ledger is None:
                state.ledger = build_ledger(state.settings)
    return state.ledger


SettingsDep = Annotated[Settings, Depends(get_settings)]
LedgerDep = Annotated[Ledger, Depends(get_ledger)]


def get_optional_caller(
    request: Request,
    settings: SettingsDep,
    authorization: Annotated[str | None, Header()] = None,
    x_session_id: Annotated[str | None, Header()] = None,
) -> Caller | None:
    peer = request.client.host if request.client else None
    ip = client_ip(peer, ",".join(request.headers.getlist("x-forwarded-for")), settings)
    caller = authenticate(authorization, x_session_id, ip, settings)
    if caller is not None and caller.kind == "guest" and ip is None and not _told_no_address.is_set():
        _told_no_address.set()
        logger.warning(
            "a guest came without a usable client address (peer %r, %d proxy hops trusted): guests' per-IP "
            "limits do not apply to such calls; check CREDITGATE_TRUSTED_PROXY_HOPS",
            peer,
            settings.trusted_proxy_hops,
        )
    return caller


OptionalCallerDep = Annotated[Caller | None, Depends(get_optional_caller)]


def get_caller(caller: OptionalCallerDep) -> Caller:
    if caller is None:
        raise Unauthenticated("Send a service key, a user's token, or X-Session-Id for a guest")
    return caller


def get_signed_in_caller(caller: OptionalCallerDep) -> Caller:
    if caller is None:
        raise Unauthenticated("Send a service key or a user's token")
    if caller.kind == "guest":
        raise Forbidden("Guests cannot do this; sign in")
    return caller


def get_service_caller(caller: OptionalCallerDep) -> Caller:
    if caller is None:
        raise Unauthenticated("Send the service key")
    if caller.kind != "service":
        raise Forbidden("Only the app's backend (service key) may do this")
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]
SignedInDep = Annotated[Caller, Depends(get_signed_in_caller)]
ServiceDep = Annotated[Caller, Depends(get_service_caller)]
AccountHeader = Annotated[str | None, Header(alias="X-Account-Id", max_length=128)]

# Users whose account this warm instance has already made sure of (bounded, per process).
_known_users: set[str] = set()


def ensure_user_account(caller: Caller, ledger: Ledger) -> None:
    """Accounts are created on first use of a valid user JWT."""
    if caller.user_id in _known_users:
        return
    ledger.ensure_account({"account_id": caller.user_id, "owner": "user", "email": caller.email, "plan": "free"})
    if len(_known_users) > 10_000:
        _known_users.clear()
    _known_users.add(caller.user_id)


def resolve_account(
    caller: Caller, ledger: Ledger, account_id: str | None, header_account: str | None = None, where: str = "body"
) -> str:
    """The account a call acts for. The backend names any account; a user acts for their
    own, or for an org account they are a member of (X-Account-Id)."""
    if caller.kind == "service":
        target = account_id or header_account
        if not target:
            raise InvalidRequest(
                "account_id is required with a service key",
                errors=[{"loc": [where, "account_id"], "msg": "Field required", "type": "missing"}],
            )
        return target
    if caller.kind == "user":
        target = header_account or account_id or caller.user_id
        if target == caller.user_id:
            ensure_user_account(caller, ledger)
            return target
        if ledger.is_member(target, caller.user_id):
            return target
        raise Forbidden("You are not a member of that account", code="forbidden")
    raise Forbidden("Guests have no account")
