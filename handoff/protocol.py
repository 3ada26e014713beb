"""The end-user wire protocol: validating what clients send and building what the server sends.

Pure functions, no I/O; ``docs/protocol.md`` is the reference for clients and must stay in step.
Every validation failure raises :class:`ProtocolError`, whose ``code`` is stable (clients may
branch on it) and whose ``message`` says what was wrong and how to fix it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

MAX_FRAME_BYTES = 16 * 1024
"""Largest client frame we parse; larger ones get a ``too_large`` error (connection stays up)."""

WEBSOCKET_MAX_SIZE = 64 * 1024
"""Hard limit of the websocket layer: a frame above this closes the connection (code 1009)."""

MAX_REST_BODY_BYTES = 64 * 1024
"""Largest REST request body; larger ones get HTTP 413."""

CLIENT_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
CONVERSATION_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")
MAX_SENDER_CHARS = 255
"""Rasa's tracker store keeps sender ids in a 255-character column."""


class ProtocolError(ValueError):
    """A client sent something we cannot accept. Nothing of it was stored."""

    def __init__(self, code: str, message: str, client_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.client_id = client_id


@dataclass(frozen=True)
class UserFrame:
    """A validated frame from an end user: ``message`` (``text``), ``typing`` (``typing``) or
    ``request_human`` (the user accepts the offer of a person) or ``feedback`` (the bot's answer
    to the user's message ``in_reply_to`` did not help)."""

    kind: str
    client_id: str | None = None
    text: str = ""
    typing: bool = False
    in_reply_to: str | None = None


USER_FRAME_TYPES = ("message", "typing", "request_human", "feedback")


def parse_user_frame(raw: str | bytes, *, max_text_chars: int) -> UserFrame:
    """Validate one frame from an end user's websocket."""
    payload = _decode_json_object(raw)
    frame_type = payload.get("type")
    if frame_type not in USER_FRAME_TYPES:
        raise ProtocolError(
            "unknown_type",
            f"unknown frame type {frame_type!r}; client frame types are "
            + ", ".join(repr(t) for t in USER_FRAME_TYPES),
        )
    if frame_type == "typing":
        typing = payload.get("typing")
        if not isinstance(typing, bool):
            raise ProtocolError("invalid_field", "field 'typing' must be true or false")
        return UserFrame("typing", typing=typing)
    client_id = validate_client_id(payload.get("id"))
    if frame_type == "request_human":
        return UserFrame("request_human", client_id)
    if frame_type == "feedback":
        if payload.get("helpful") is not False:
            raise ProtocolError(
                "invalid_field", 'feedback frames carry "helpful": false', client_id
            )
        in_reply_to = payload.get("in_reply_to")
        if not isinstance(in_reply_to, str) or not CLIENT_ID_PATTERN.match(in_reply_to):
            raise ProtocolError(
                "invalid_field",
                "field 'in_reply_to' must be the id of the user message the bot answered "
                "(the bot frame's in_reply_to)",
                client_id,
            )
        return UserFrame("feedback", client_id, in_reply_to=in_reply_to)
    text = validate_text(payload.get("text"), "text", max_text_chars, client_id)
    return UserFrame("message", client_id, text=text)


def validate_client_id(value: Any) -> str:
    if not isinstance(value, str) or not CLIENT_ID_PATTERN.match(value):
        raise ProtocolError(
            "invalid_field",
            "field 'id' must be a string of 1 to 64 letters, digits or '_.:-' "
            "(a client-generated message id, e.g. a UUID)",
        )
    return value


def parse_cursor(value: str | None) -> int | None:
    """The ``last_event_id`` a reconnecting client sends (None when absent)."""
    if value is None or value == "":
        return None
    if not value.isdigit() or len(value) > 18:
        raise ProtocolError("invalid_field", "last_event_id must be a non-negative integer")
    return int(value)


def parse_rest_body(raw: bytes, *, max_text_chars: int) -> tuple[str, str, dict[str, Any] | None]:
    """Validate a Rasa REST channel body ``{"sender", "message", "metadata"?}``."""
    payload = _decode_json_object(raw)
    sender = payload.get("sender")
    if not isinstance(sender, str) or not sender.strip() or len(sender) > MAX_SENDER_CHARS:
        raise ProtocolError(
            "invalid_field",
            f"field 'sender' must be a non-empty string of at most {MAX_SENDER_CHARS} "
            "characters (the conversation id)",
        )
    text = validate_text(payload.get("message"), "message", max_text_chars)
    metadata = payload.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise ProtocolError("invalid_field", "field 'metadata' must be a JSON object if given")
    return sender, text, metadata


def validate_conversation_id(value: str) -> str:
    """Check a conversation id chosen by a client (e.g. in the websocket URL)."""
    if not CONVERSATION_ID_PATTERN.match(value):
        raise ProtocolError(
            "invalid_field",
            "conversation_id must be 1 to 128 letters, digits or '_.:@-'",
        )
    return value


def validate_text(value: Any, field: str, max_chars: int, client_id: str | None = None) -> str:
    """Return ``value`` stripped if it is a non-empty string of at most ``max_chars``."""
    if not isinstance(value, str):
        raise ProtocolError("invalid_field", f"field '{field}' must be a string", client_id)
    text = value.strip()
    if not text:
        raise ProtocolError("invalid_field", f"field '{field}' must not be empty", client_id)
    if len(text) > max_chars:
        raise ProtocolError(
            "too_large",
            f"field '{field}' has {len(text)} characters; the limit is {max_chars}",
            client_id,
        )
    return text


def _decode_json_object(raw: str | bytes) -> dict[str, Any]:
    size = len(raw.encode("utf-8")) if isinstance(raw, str) else len(raw)
    if size > MAX_FRAME_BYTES:
        raise ProtocolError(
            "too_large", f"{size} bytes is over the limit of {MAX_FRAME_BYTES} bytes"
        )
    try:
        payload = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ProtocolError("invalid_json", f"not valid JSON: {error}") from None
    if not isinstance(payload, dict):
        raise ProtocolError("invalid_json", "must be a JSON object")
    return payload


def error_frame(error: ProtocolError) -> dict[str, Any]:
    """The frame (or REST body) that reports ``error`` to the client."""
    frame: dict[str, Any] = {"type": "error", "code": error.code, "message": error.message}
    if error.client_id is not None:
        frame["id"] = error.client_id
    return frame


def ready_frame(conversation_id: str, model: str) -> dict[str, Any]:
    """First frame on a user websocket: which conversation this is and which model answers."""
    return {"type": "ready", "conversation_id": conversation_id, "model": model}


AGENT_FRAME_FIELDS: dict[str, tuple[str, ...]] = {
    "claim": ("id", "conversation_id"),
    "open": ("id", "conversation_id"),
    "reply": ("id", "conversation_id", "text"),
    "label": ("id", "message_id", "intent"),
    "typing": ("conversation_id", "typing"),
    "transfer": ("id", "conversation_id", "to"),
    "hand_back": ("id", "conversation_id"),
    "close": ("id", "conversation_id"),
    "presence": ("status",),
}
"""Each agent frame type and its required fields (``reply`` may add ``response_name``)."""


@dataclass(frozen=True)
class AgentFrame:
    """A validated frame from an agent's console."""

    kind: str
    client_id: str | None = None
    conversation_id: str = ""
    text: str = ""
    response_name: str | None = None
    message_id: int = 0
    intent: str = ""
    typing: bool = False
    to: str | None = None
    status: str = ""


def parse_agent_frame(raw: str | bytes, *, max_text_chars: int) -> AgentFrame:
    """Validate one frame from an agent's websocket."""
    payload = _decode_json_object(raw)
    kind = payload.get("type")
    if kind not in AGENT_FRAME_FIELDS:
        raise ProtocolError(
            "unknown_type",
            f"unknown frame type {kind!r}; agent frame types are "
            + ", ".join(sorted(AGENT_FRAME_FIELDS)),
        )
    fields = AGENT_FRAME_FIELDS[kind]
    for name in fields:
        if name not in payload:
            raise ProtocolError("invalid_field", f"{kind} frame needs field {name!r}")
    client_id = validate_client_id(payload["id"]) if "id" in fields else None
    values: dict[str, Any] = {"kind": kind, "client_id": client_id}
    if "conversation_id" in fields:
        conversation_id = payload["conversation_id"]
        if not isinstance(conversation_id, str) or not conversation_id:
            raise ProtocolError(
                "invalid_field", "field 'conversation_id' must be a string", client_id
            )
        values["conversation_id"] = conversation_id
    if kind == "reply":
        values["text"] = validate_text(payload["text"], "text", max_text_chars, client_id)
        response_name = payload.get("response_name")
        if response_name is not None and not isinstance(response_name, str):
            raise ProtocolError(
                "invalid_field", "field 'response_name' must be a string", client_id
            )
        values["response_name"] = response_name
    elif kind == "label":
        message_id = payload["message_id"]
        if not isinstance(message_id, int) or isinstance(message_id, bool) or message_id < 1:
            raise ProtocolError(
                "invalid_field", "field 'message_id' must be a positive integer", client_id
            )
        intent = payload["intent"]
        if not isinstance(intent, str) or not intent.strip():
            raise ProtocolError(
                "invalid_field", "field 'intent' must be a non-empty string", client_id
            )
        values.update(message_id=message_id, intent=intent.strip())
    elif kind == "typing":
        if not isinstance(payload["typing"], bool):
            raise ProtocolError("invalid_field", "field 'typing' must be true or false")
        values["typing"] = payload["typing"]
    elif kind == "transfer":
        to = payload["to"]
        if to is not None and (not isinstance(to, str) or not to):
            raise ProtocolError(
                "invalid_field",
                "field 'to' must be an agent's username, or null for the queue",
                client_id,
            )
        values["to"] = to
    elif kind == "presence":
        if payload["status"] not in ("online", "away"):
            raise ProtocolError("invalid_field", "field 'status' must be 'online' or 'away'")
        values["status"] = payload["status"]
    return AgentFrame(**values)
