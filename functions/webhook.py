"""Cloud function `webhook`: POST /v1/webhooks/stripe, Stripe's signed events."""

from functions.core.lambda_init import init_phase

with init_phase():
    from functions.core.app import create_app, lambda_handler
    from functions.core.payments.endpoints import webhook_router

    app = create_app("webhook", webhook_router)
    handler = lambda_handler(app)
