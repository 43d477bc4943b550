"""Cloud function `admin`: accounts, members, plan changes, grants and metrics (service key)."""

from functions.core.lambda_init import init_phase

with init_phase():
    from functions.core.accounts.endpoints import router
    from functions.core.analytics.endpoints import router as analytics_router
    from functions.core.app import create_app, lambda_handler

    app = create_app("admin", router, analytics_router)
    handler = lambda_handler(app)
