"""Cloud function `gate`: POST /v1/gate, GET /v1/entitlements, POST /v1/reservations/{id}/release."""

from functions.core.lambda_init import init_phase

with init_phase():
    from functions.core.app import create_app, lambda_handler
    from functions.core.gating.endpoints import router

    app = create_app("gate", router)
    handler = lambda_handler(app)
