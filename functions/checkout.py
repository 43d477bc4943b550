"""Cloud function `checkout`: POST /v1/checkout (Stripe Checkout for packs and plans), and
the pages of the offline payment mode."""

from functions.core.lambda_init import init_phase

with init_phase():
    from functions.core.app import create_app, lambda_handler
    from functions.core.payments.endpoints import checkout_router

    app = create_app("checkout", checkout_router)
    handler = lambda_handler(app)
