"""Cloud function `balance`: balance, transactions, usage summary, orders, catalog, prices, health.

It also serves /openapi.json and /docs for the whole API: on AWS each function answers
only its own routes, so the document is built from every function's router, on first ask.
"""

from functions.core.lambda_init import init_phase

with init_phase():
    from fastapi.openapi.utils import get_openapi

    from functions.core.app import VERSION, create_app, lambda_handler
    from functions.core.reporting.endpoints import router

    app = create_app("balance", router)
    handler = lambda_handler(app)


def _openapi_of_every_function() -> dict:
    if app.openapi_schema is None:
        from functions.local import ROUTERS

        app.openapi_schema = get_openapi(
            title="creditgate",
            version=VERSION,
            description=app.description,
            routes=[route for r in ROUTERS for route in r.routes],
        )
    return app.openapi_schema


app.openapi = _openapi_of_every_function
