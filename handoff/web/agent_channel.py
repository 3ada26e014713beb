"""Agents' side: sign-in API, account management for maintainers, and the ``/ws/agent`` socket.

The socket refuses the upgrade (HTTP 403/401, nothing sent) unless the ``Origin`` header is
in the allow list and the request carries a valid session (cookie ``handoff_session`` or
``Authorization: Bearer <token>``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable
from typing import Any

from sanic import Blueprint, Request, response
from sanic.response import HTTPResponse
from sanic.server.websockets.impl import WebsocketImplProtocol

from handoff.conversations.account_changes import apply_account_change
from handoff.conversations.service import ActionError
from handoff.core.protocol import (
    AgentFrame,
    error_frame,
    parse_agent_frame,
    parse_cursor,
)
from handoff.core.safe_json import ProtocolError
from handoff.realtime.hub import ephemeral_event
from handoff.realtime.presence import Presence
from handoff.storage.records import Agent, Event
from handoff.web import auth
from handoff.web.context import request_context
from handoff.web.http_errors import error_response, json_error
from handoff.web.live import LiveConnection, RateLimiter, resume_from, serve_frames
from handoff.web.requests import SESSION_COOKIE, json_body, session_token, signed_in_agent
from handoff.web.sign_in_throttle import SignInLimits, SignInThrottle

__all__ = ["blueprint", "guard_agent_routes"]

logger = logging.getLogger(__name__)

MAX_LOGIN_BODY_BYTES = 4096

blueprint = Blueprint("agent_channel")


def _origin_allowed(request: Request) -> bool:
    return request.headers.get("origin") in request_context(request).settings.origins()


def _agent_view(agent: Agent) -> dict[str, Any]:
    return {
        "id": agent.id,
        "username": agent.username,
        "display_name": agent.display_name,
        "role": agent.role,
        "disabled": agent.disabled,
    }


@blueprint.on_request
async def guard_agent_routes(request: Request) -> HTTPResponse | None:
    """Origin check for the agent socket and every state-changing agent API call."""
    path = request.path
    changes_state = request.method not in ("GET", "HEAD")
    needs_origin = path == "/ws/agent" or (path.startswith("/api/") and changes_state)
    if needs_origin and not _origin_allowed(request):
        return json_error("origin_not_allowed", "this Origin may not use the agent console")
    if path == "/ws/agent":
        agent = await signed_in_agent(request)
        if agent is None:
            return json_error("unauthenticated", "sign in first (POST /api/login)")
        request.ctx.agent = agent
    return None


@blueprint.post("/api/login")
async def login(request: Request) -> HTTPResponse:
    try:
        body = json_body(request)
    except ProtocolError as error:
        return error_response(error)
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not isinstance(password, str):
        return json_error("invalid_field", "username and password must be strings")
    ctx = request_context(request)
    store = ctx.store
    limits = SignInLimits.from_settings(ctx.settings)
    address = request.remote_addr or request.ip  # remote_addr: set by a configured proxy
    try:
        token, agent = await auth.sign_in(
            store, SignInThrottle(store.engine, limits), username, password, address
        )
    except auth.SignInRefused as refused:
        return error_response(refused)
    reply = response.json({"agent": _agent_view(agent), "token": token})
    reply.cookies[SESSION_COOKIE] = token
    cookie = reply.cookies[SESSION_COOKIE]
    cookie["httponly"] = True
    cookie["samesite"] = "Strict"
    cookie["path"] = "/"
    cookie["max-age"] = auth.SESSION_SECONDS
    return reply


@blueprint.post("/api/logout")
async def logout(request: Request) -> HTTPResponse:
    token = session_token(request)
    if token:
        await auth.sign_out(request_context(request).store, token)
    reply = response.json({"ok": True})
    del reply.cookies[SESSION_COOKIE]
    return reply


@blueprint.route("/api/me", methods=["GET", "HEAD"])
async def me(request: Request) -> HTTPResponse:
    agent = await signed_in_agent(request)
    if agent is None:
        return json_error("unauthenticated", "sign in first")
    return response.json({"agent": _agent_view(agent)})


async def _maintainer(request: Request) -> Agent | HTTPResponse:
    agent = await signed_in_agent(request)
    if agent is None:
        return json_error("unauthenticated", "sign in first")
    if not agent.is_maintainer:
        return json_error("forbidden", "only maintainers manage agent accounts")
    return agent


@blueprint.route("/api/agents", methods=["GET", "HEAD"])
async def list_agents(request: Request) -> HTTPResponse:
    checked = await _maintainer(request)
    if isinstance(checked, HTTPResponse):
        return checked
    ctx = request_context(request)
    store, presence = ctx.store, ctx.presence
    status = {p.agent_id: p.status for p in presence.snapshot()}
    agents = [
        {**_agent_view(a), "presence": status.get(a.id, "offline")}
        for a in await store.list_agents()
    ]
    return response.json({"agents": agents})


@blueprint.post("/api/agents")
async def add_agent(request: Request) -> HTTPResponse:
    checked = await _maintainer(request)
    if isinstance(checked, HTTPResponse):
        return checked
    try:
        body = json_body(request)
        agent = await auth.create_agent(
            request_context(request).store,
            str(body.get("username", "")),
            str(body.get("display_name", "")),
            str(body.get("password", "")),
            str(body.get("role", "agent")),
        )
    except (ProtocolError, auth.AccountError) as error:
        return error_response(error)
    return response.json({"agent": _agent_view(agent)}, status=201)


@blueprint.patch("/api/agents/<username>")
async def change_agent(request: Request, username: str) -> HTTPResponse:
    checked = await _maintainer(request)
    if isinstance(checked, HTTPResponse):
        return checked
    ctx = request_context(request)
    store = ctx.store
    target = await store.agent_by_username(username)
    if target is None:
        return json_error("unknown_agent", f"no agent {username!r}")
    try:
        body = json_body(request)
    except ProtocolError as error:
        return error_response(error)
    values: dict[str, Any] = {}
    if "disabled" in body:
        if not isinstance(body["disabled"], bool):
            return json_error("invalid_field", "disabled must be true or false")
        values["disabled"] = body["disabled"]
    if "role" in body:
        if body["role"] not in auth.ROLES:
            return json_error("invalid_field", f"role must be one of {', '.join(auth.ROLES)}")
        values["role"] = body["role"]
    if "password" in body:
        password = body["password"]
        if not isinstance(password, str) or len(password) < auth.MIN_PASSWORD_CHARS:
            return json_error(
                "invalid_field", f"password needs {auth.MIN_PASSWORD_CHARS}+ characters"
            )
        values["password_hash"] = await auth.hash_password(password)
    if not values:
        return json_error("invalid_field", "nothing to change: give disabled, role or password")
    await store.update_agent(target.id, **values)
    changed = await store.agent_by_id(target.id)
    assert changed is not None
    await apply_account_change(
        target,
        changed,
        ctx.agent_connections,
        ctx.hub,
        ctx.service,
    )
    return response.json({"agent": _agent_view(changed)})


def _presence_frame(presence: Presence) -> dict[str, Any]:
    return {
        "type": "presence",
        "agents": [
            {"id": p.agent_id, "display_name": p.display_name, "status": p.status}
            for p in presence.snapshot()
        ],
    }


@blueprint.websocket("/ws/agent")
async def agent_socket(request: Request, ws: WebsocketImplProtocol) -> None:
    """An agent's console connection (see docs/protocol.md, "Agent websocket")."""
    agent: Agent = request.ctx.agent
    ctx = request_context(request)
    settings, store, service, presence = ctx.settings, ctx.store, ctx.service, ctx.presence
    holder = ctx.assistant
    try:
        cursor = parse_cursor(request.args.get("last_event_id"))
    except ProtocolError as error:
        await ws.send(json.dumps(error_frame(error)))
        await ws.close(1008, error.code)
        return
    assistant = await holder.get(timeout=300)

    def fetch(after: int) -> Awaitable[list[Event]]:
        return store.agent_events_after(agent.id, after)

    live = LiveConnection(
        ws,
        ctx.hub,
        [f"agent:{agent.id}", "agents"],
        fetch if store.concurrent_writers else None,
    )
    latest = await resume_from(live, store, cursor, fetch)
    connections = ctx.agent_connections
    connection = connections.add(agent, auth.token_hash(session_token(request) or ""), ws)
    presence.connected(agent.id, agent.display_name)
    try:
        await live.send_now(
            {
                "type": "hello",
                "agent": _agent_view(agent),
                "model": assistant.info.name,
                "intents": sorted(assistant.intent_names()),
                "responses": assistant.responses(),
                "queue": await service.queue_snapshot(),
                "assigned": [
                    c.conversation.id for c in await store.assigned_conversations(agent.id)
                ],
                "approvals": await service.held_answers(agent),
                "last_event_id": latest,
            }
        )
        _broadcast_presence(request)
        await serve_frames(
            live,
            store,
            RateLimiter(settings.agent_rate_per_second, settings.agent_rate_burst),
            lambda raw: parse_agent_frame(raw, max_text_chars=settings.max_message_chars),
            lambda frame: _handle(frame, agent, request),
            f"agent {agent.username}",
        )
    finally:
        connections.remove(connection)
        presence.disconnected(agent.id)
        _broadcast_presence(request)


def _broadcast_presence(request: Request) -> None:
    ctx = request_context(request)
    frame = _presence_frame(ctx.presence)
    ctx.hub.publish([ephemeral_event("agents", "presence", None, None, agents=frame["agents"])])


async def _handle(frame: AgentFrame, agent: Agent, request: Request) -> dict[str, Any] | None:
    ctx = request_context(request)
    service, store = ctx.service, ctx.store
    ack = {"type": "ack", "id": frame.client_id}
    if frame.kind == "claim":
        await service.claim(agent, frame.conversation_id)
        return {**ack, "transcript": await service.transcript(agent, frame.conversation_id)}
    if frame.kind == "open":
        return {**ack, "transcript": await service.transcript(agent, frame.conversation_id)}
    if frame.kind == "reply":
        assert frame.client_id is not None  # parse_agent_frame requires it for replies
        sent = await service.reply(
            agent, frame.conversation_id, frame.client_id, frame.text, frame.response_name
        )
        return ack if sent else {**ack, "duplicate": True}
    if frame.kind == "label":
        is_new = await service.label(agent, frame.message_id, frame.intent)
        return {**ack, "new_intent": is_new}
    if frame.kind == "typing":
        await service.agent_typing(agent, frame.conversation_id, frame.typing)
        return None
    if frame.kind == "transfer":
        target = None
        if frame.to is not None:
            target = await store.agent_by_username(frame.to)
            if target is None:
                raise ActionError("unknown_agent", f"no agent {frame.to!r}")
        await service.transfer(agent, frame.conversation_id, target)
        return ack
    if frame.kind == "hand_back":
        await service.hand_back(agent, frame.conversation_id)
        return ack
    if frame.kind == "close":
        await service.close(agent, frame.conversation_id)
        return ack
    if frame.kind == "presence":
        ctx.presence.set_status(agent.id, frame.status)
        _broadcast_presence(request)
        return None
    if frame.kind == "suggest":
        suggestion = await service.suggest(agent, frame.message_id, frame.intent or None)
        return {**ack, "message_id": frame.message_id, **suggestion}
    if frame.kind in ("approve", "correct", "replace"):
        await service.decide(
            agent, frame.approval_id, frame.kind, frame.intent or None, frame.text or None
        )
        return ack
    raise ActionError("unknown_type", f"unhandled frame {frame.kind}")
