"""Rasa's own HTTP API (``/status``, ``/conversations/...``, ``/model/parse``, ...), opt-in.

Off unless ``HANDOFF_RASA_API_TOKEN`` is set; then every route needs ``?token=<token>`` (except
``/version``). Routes that load, unload or train models are never mounted: remote model loading
was the way in for CVE-2024-49375, and models change only through ``handoff train``.
"""

from __future__ import annotations

import multiprocessing
from typing import Any

from sanic import Sanic

__all__ = ["mount_rasa_http_api", "set_rasa_api_agent"]

EXCLUDED_ROUTES = frozenset(
    {
        ("GET", ""),  # Rasa's hello page; our / redirects to the chat page
        ("POST", "model/train"),
        ("PUT", "model"),
        ("DELETE", "model"),
    }
)


def mount_rasa_http_api(app: Sanic, token: str) -> list[str]:
    """Add Rasa's HTTP API routes to ``app``, guarded by ``token``; return the mounted paths.

    Rasa's handlers read the agent from ``app.ctx.agent`` and from their own (hidden) Rasa
    app's ``ctx.agent``: call :func:`set_rasa_api_agent` whenever the live agent changes
    (until then they answer 409). These attributes of ``app.ctx`` are Rasa's; the server's own
    state is the one attribute ``app.ctx.handoff`` (see ``handoff.web.context``).
    """
    from rasa.server import ErrorResponse
    from rasa.server import create_app as create_rasa_app

    rasa_app = create_rasa_app(auth_token=token, cors_origins=None)
    app.ctx.agent = None
    app.ctx.rasa_app = rasa_app
    app.ctx.active_training_processes = multiprocessing.Value("I", 0)

    @app.exception(ErrorResponse)
    async def rasa_error(request, exception):  # type: ignore[no-untyped-def]
        from sanic import response

        return response.json(exception.error_info, status=exception.status)

    mounted: list[str] = []
    for route in rasa_app.router.routes:
        methods = sorted(route.methods)
        if any((method, route.path) in EXCLUDED_ROUTES for method in methods):
            continue
        uri = "/" + route.path
        app.add_route(route.handler, uri, methods=methods, name=f"rasa_{route.name.split('.')[-1]}")
        mounted.extend(f"{method} {uri}" for method in methods)
    return mounted


def set_rasa_api_agent(app: Sanic, agent: Any) -> None:
    """Point Rasa's mounted handlers at ``agent`` (no-op when the API is not mounted)."""
    app.ctx.agent = agent
    rasa_app = getattr(app.ctx, "rasa_app", None)
    if rasa_app is not None:
        rasa_app.ctx.agent = agent
