"""Cloud function `scheduler`: maintenance on the EventBridge schedule, and
POST /v1/cron/maintenance (Bearer CRON_SECRET) for cron services that call over HTTP."""

from functions.core.lambda_init import init_phase

with init_phase():
    from functions.core.app import create_app, lambda_handler
    from functions.core.maintenance.endpoints import router
    from functions.core.maintenance.scheduled import handle_scheduled, is_http_event

    app = create_app("scheduler", router)
    http_handler = lambda_handler(app)


def handler(event, context):
    if is_http_event(event):
        return http_handler(event, context)
    return handle_scheduled(app, event, context)
