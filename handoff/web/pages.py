"""Pages and probes: the end-user chat page, the agent console files, ``GET /health``."""

from __future__ import annotations

from pathlib import Path

from sanic import Blueprint, Request, response
from sanic.response import HTTPResponse

from handoff.settings import PROJECT_ROOT
from handoff.web.context import request_context

__all__ = ["blueprint"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
AGENT_CONSOLE_DIR = PROJECT_ROOT / "agent_console"

# Every route that answers GET answers HEAD too (sanic then sends the headers only).
blueprint = Blueprint("web")
blueprint.static("/static", str(STATIC_DIR), name="chat_static")
blueprint.static("/console", str(AGENT_CONSOLE_DIR), name="console_static")


@blueprint.route("/", methods=["GET", "HEAD"])
async def root(request: Request) -> HTTPResponse:
    return response.redirect("/chat")


@blueprint.route("/chat", methods=["GET", "HEAD"])
async def chat_page(request: Request) -> HTTPResponse:
    """The end users' web chat page (talks to ``/ws/user``)."""
    return await response.file(STATIC_DIR / "chat.html")


@blueprint.route("/console", methods=["GET", "HEAD"])
async def console_page(request: Request) -> HTTPResponse:
    """The agents' console."""
    return await response.file(AGENT_CONSOLE_DIR / "index.html")


@blueprint.route("/health", methods=["GET", "HEAD"])
async def health(request: Request) -> HTTPResponse:
    """200 with the model's name, the assistant's processes and the action server this
    process runs (``actions``, None if none) once the model answers; 503 while loading or
    failed."""
    ctx = request_context(request)
    holder = ctx.assistant
    assistant = holder.current
    if assistant is None:
        status = "failed" if holder.load_error else "loading"
        body = (
            {"status": status, "error": holder.load_error}
            if holder.load_error
            else {"status": status}
        )
        return response.json(body, status=503)
    return response.json(
        {
            "status": "ok",
            "model": assistant.info.name,
            "fallback_threshold": assistant.info.fallback_threshold,
            "assistant": ctx.runtime.health(),
            "actions": ctx.action_server.health() if ctx.action_server else None,
        }
    )
