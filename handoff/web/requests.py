"""What the agent API handlers read from a request: its JSON body and its signed-in agent."""

from __future__ import annotations

from typing import Any

from sanic import Request

from handoff.core.protocol import MAX_REST_BODY_BYTES
from handoff.core.safe_json import decode_json_object
from handoff.storage.records import Agent
from handoff.web import auth
from handoff.web.context import request_context

__all__ = ["SESSION_COOKIE", "json_body", "session_token", "signed_in_agent"]

SESSION_COOKIE = "handoff_session"
"""The cookie that carries the session token set by ``POST /api/login``."""


def session_token(request: Request) -> str | None:
    """The session token of ``request``: ``Authorization: Bearer <token>``, else the
    :data:`SESSION_COOKIE`; None without either."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return request.cookies.get(SESSION_COOKIE)


async def signed_in_agent(request: Request) -> Agent | None:
    """The agent whose session ``request`` carries, or None when it carries none, or an
    unknown or expired one (see :func:`handoff.web.auth.session_agent`)."""
    return await auth.session_agent(request_context(request).store, session_token(request))


def json_body(request: Request) -> dict[str, Any]:
    """The body's JSON object, through the safe decoder (never sanic's ``request.json``).
    Raises :class:`~handoff.core.safe_json.ProtocolError` when it is not one."""
    return decode_json_object(request.body, MAX_REST_BODY_BYTES)
