"""End users' websocket channel, ``/ws/user``: JSON frames as documented in docs/protocol.md."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable
from typing import Any

from sanic import Blueprint, Request
from sanic.server.websockets.impl import WebsocketImplProtocol

from handoff.assistant.interface import AssistantNotReadyError
from handoff.core.errors import HandoffError
from handoff.core.protocol import (
    UserFrame,
    error_frame,
    parse_cursor,
    parse_user_frame,
    ready_frame,
    validate_conversation_id,
)
from handoff.core.routing import HandoffReason, State
from handoff.core.safe_json import ProtocolError
from handoff.storage.records import Event
from handoff.web.context import request_context
from handoff.web.live import LiveConnection, RateLimiter, resume_from, serve_frames

__all__ = ["blueprint"]

logger = logging.getLogger(__name__)

MODEL_WAIT_SECONDS = 300.0
"""How long a new connection waits for the model to finish loading before giving up."""

CLOSE_POLICY_VIOLATION = 1008
CLOSE_TRY_AGAIN_LATER = 1013

blueprint = Blueprint("user_channel")


async def _refuse(ws: WebsocketImplProtocol, error: HandoffError, close_code: int) -> None:
    await ws.send(json.dumps(error_frame(error)))
    await ws.close(close_code, error.code)


@blueprint.websocket("/ws/user")
async def user_socket(request: Request, ws: WebsocketImplProtocol) -> None:
    """One end user's chat. ``?conversation_id=`` resumes a conversation (else a new one);
    ``&last_event_id=`` replays what the client missed since that event."""
    ctx = request_context(request)
    settings, holder, service, store = ctx.settings, ctx.assistant, ctx.service, ctx.store
    try:
        conversation_id = validate_conversation_id(
            request.args.get("conversation_id") or uuid.uuid4().hex
        )
        cursor = parse_cursor(request.args.get("last_event_id"))
    except ProtocolError as error:
        await _refuse(ws, error, CLOSE_POLICY_VIOLATION)
        return
    try:
        assistant = await holder.get(timeout=MODEL_WAIT_SECONDS)
    except AssistantNotReadyError as error:
        await _refuse(ws, error, CLOSE_TRY_AGAIN_LATER)
        return

    def fetch(after: int) -> Awaitable[list[Event]]:
        return store.user_events_after(conversation_id, after)

    live = LiveConnection(
        ws,
        ctx.hub,
        [f"user:{conversation_id}"],
        fetch if store.concurrent_writers else None,
    )
    latest = await resume_from(live, store, cursor, fetch)
    stored = await store.conversation(conversation_id)
    await live.send_now(
        {
            **ready_frame(conversation_id, assistant.info.name),
            "state": stored.conversation.state.value,
            "last_event_id": latest,
        }
    )
    if stored.conversation.state is State.QUEUED:
        position = await service.queue_position(conversation_id)
        if position is not None:
            await live.send_now({"type": "queue_position", **position})

    async def handle(frame: UserFrame) -> dict[str, Any] | None:
        if frame.kind == "typing":
            await service.user_typing(conversation_id, frame.typing)
            return None
        if frame.kind == "request_human":
            await service.request_handoff(conversation_id, HandoffReason.UNHELPFUL_ANSWER)
            return {"type": "ack", "id": frame.client_id}
        if frame.kind == "feedback":
            assert frame.in_reply_to is not None
            queued = await service.feedback(conversation_id, frame.in_reply_to)
            return {"type": "ack", "id": frame.client_id, "queued": queued}
        assert frame.client_id is not None
        result = await service.user_message(
            conversation_id, frame.client_id, frame.text, "websocket"
        )
        return (
            {"type": "ack", "id": frame.client_id, "duplicate": True} if result.duplicate else None
        )

    await serve_frames(
        live,
        store,
        RateLimiter(settings.user_rate_per_second, settings.user_rate_burst),
        lambda raw: parse_user_frame(raw, max_text_chars=settings.max_message_chars),
        handle,
        f"user {conversation_id}",
    )
