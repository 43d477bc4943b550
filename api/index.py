"""Vercel entry point: every creditgate function mounted as one ASGI app.

vercel.json rewrites /v1/*, /openapi.json and /docs here; the app sees the
original path. Locally the same app runs with `make dev`.
"""

from functions.local import app

__all__ = ["app"]
