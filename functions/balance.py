"""Cloud function `balance`: balance, transactions, usage summary, orders, catalog, prices, health."""

from functions.core.app import create_app, lambda_handler
from functions.core.reporting.endpoints import router

app = create_app("balance", router)
handler = lambda_handler(app)
