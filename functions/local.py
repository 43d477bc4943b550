"""Every function mounted as one ASGI app: `make dev`, Vercel, and the HTTP tests."""

from __future__ import annotations

from functions.core.accounts.endpoints import router as admin_router
from functions.core.analytics.endpoints import router as analytics_router
from functions.core.app import create_app
from functions.core.gating.endpoints import router as gate_router
from functions.core.maintenance.endpoints import router as maintenance_router
from functions.core.metering.endpoints import router as usage_router
from functions.core.payments.endpoints import checkout_router, webhook_router
from functions.core.reporting.endpoints import router as balance_router

ROUTERS = [
    gate_router,
    usage_router,
    balance_router,
    admin_router,
    analytics_router,
    maintenance_router,
    checkout_router,
    webhook_router,
]


def build_app(settings=None, ledger=None):
    return create_app("all functions", *ROUTERS, settings=settings, ledger=ledger)


app = build_app()
