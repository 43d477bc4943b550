"""Cloud function `usage`: POST /v1/usage and POST /v1/usage/batch."""

from functions.core.lambda_init import init_phase

with init_phase():
    from functions.core.app import create_app, lambda_handler
    from functions.core.metering.endpoints import router

    app = create_app("usage", router)
    handler = lambda_handler(app)
