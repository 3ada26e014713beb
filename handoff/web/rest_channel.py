"""Rasa's REST channel, ``POST /webhooks/rest/webhook``, with validated input.

Same request and response shapes as Rasa's own ``RestInput``, so Rasa's clients work; unlike
it, a malformed body gets HTTP 400 with ``{"error": {"code", "message"}}`` instead of a 500
(the body is decoded once, by :func:`handoff.core.protocol.parse_rest_body`).
During a handoff the answer holds the handoff notices (with ``custom.handoff``) instead of bot
messages; agent replies reach REST users only through the websocket channel.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from sanic import Blueprint, Request, response
from sanic.response import HTTPResponse

from handoff.assistant.interface import AssistantNotReadyError
from handoff.core.protocol import parse_rest_body
from handoff.core.safe_json import ProtocolError
from handoff.web.context import request_context
from handoff.web.http_errors import error_response, json_error

__all__ = ["blueprint"]

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5

blueprint = Blueprint("rest_channel")


@blueprint.route("/webhooks/rest", methods=["GET", "HEAD"])
async def rest_health(request: Request) -> HTTPResponse:
    """Rasa's channel health check."""
    return response.json({"status": "ok"})


@blueprint.post("/webhooks/rest/webhook")
async def rest_webhook(request: Request) -> HTTPResponse:
    """Answer one message: ``{"sender", "message"}`` in, a list of bot messages out.

    An optional ``message_id`` makes a retried request idempotent (answered with ``[]``)."""
    ctx = request_context(request)
    settings, holder, service, store = ctx.settings, ctx.assistant, ctx.service, ctx.store
    try:
        message = parse_rest_body(request.body, max_text_chars=settings.max_message_chars)
    except ProtocolError as error:
        return error_response(error)
    sender = message.sender
    client_id = message.client_id or uuid.uuid4().hex
    try:
        await holder.get(timeout=0)
    except AssistantNotReadyError as error:
        reply = json_error("not_ready", f"{error}; retry in a few seconds")
        reply.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return reply
    before = await store.last_event_id()
    try:
        await service.user_message(sender, client_id, message.text, "rest")
    except Exception:
        logger.exception("Could not process REST message of %s", sender)
        return json_error("internal", "the server could not process this message; retry it")
    answers: list[dict[str, Any]] = []
    for event in await store.user_events_after(sender, before):
        if event.type == "bot" and event.payload.get("in_reply_to") == client_id:
            answers.append(
                {k: v for k, v in event.payload.items() if k not in ("in_reply_to", "message_id")}
            )
        elif event.type == "handoff":
            answers.append(
                {"text": event.payload["text"], "custom": {"handoff": event.payload["status"]}}
            )
    return response.json([{"recipient_id": sender, **answer} for answer in answers])
