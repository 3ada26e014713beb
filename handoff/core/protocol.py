"""The end-user wire protocol: validating what clients send and building what the server sends.

Pure functions, no I/O; ``docs/protocol.md`` is the reference for clients and must stay in step.
This is the one input boundary: every parser turns *any* input (bytes, text, JSON of any shape)
into a validated frame or a :class:`~handoff.core.safe_json.ProtocolError`, never another
exception. A ``ProtocolError`` has a stable ``code`` (clients may branch on it), a ``message``
that says what was wrong and how to fix it, and the frame's ``id`` whenever that could be read.
Decoding the JSON itself (size, depth, numbers, text) is :mod:`handoff.core.safe_json`'s.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from handoff.core.errors import HandoffError
from handoff.core.safe_json import (
    CLIENT_ID_PATTERN,
    ProtocolError,
    decode_json_object,
    readable_client_id,
    shown,
)

__all__ = [
    "AGENT_FRAME_FIELDS",
    "CONVERSATION_ID_PATTERN",
    "CURSOR_PATTERN",
    "MAX_MESSAGE_ID",
    "MAX_NAME_CHARS",
    "MAX_RESPONSE_NAME_CHARS",
    "MAX_REST_BODY_BYTES",
    "MAX_SENDER_CHARS",
    "PRESENCE_STATUSES",
    "USER_FRAME_TYPES",
    "WEBSOCKET_MAX_SIZE",
    "AgentFrame",
    "RestMessage",
    "UserFrame",
    "error_frame",
    "parse_agent_frame",
    "parse_cursor",
    "parse_rest_body",
    "parse_user_frame",
    "ready_frame",
    "validate_client_id",
    "validate_conversation_id",
    "validate_conversation_reference",
    "validate_text",
]

WEBSOCKET_MAX_SIZE = 64 * 1024
"""Hard limit of the websocket layer: a frame above this closes the connection (code 1009)."""

MAX_REST_BODY_BYTES = 64 * 1024
"""Largest HTTP request body; larger ones get HTTP 413 (see :mod:`handoff.web.http_errors`)."""

MAX_MESSAGE_ID = 2**31 - 1
"""Largest ``message_id``: message ids are a PostgreSQL ``integer`` column."""

MAX_NAME_CHARS = 64
"""Longest intent name (``label``) and agent username (``transfer`` ``to``)."""

MAX_RESPONSE_NAME_CHARS = 128
"""Longest ``response_name`` of an agent reply (its database column)."""

CONVERSATION_ID_PATTERN = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")
"""Used with ``fullmatch`` (``$`` would also accept a trailing newline)."""

CURSOR_PATTERN = re.compile(r"[0-9]{1,18}")
"""ASCII digits only: ``str.isdigit`` also accepts e.g. Arabic-Indic digits and superscripts."""

MAX_SENDER_CHARS = 255
"""Rasa's tracker store keeps sender ids in a 255-character column."""


def _frame_type(payload: dict[str, Any], known: Collection[str], client_id: str | None) -> str:
    kind = payload.get("type")
    listed = ", ".join(repr(t) for t in known)
    if not isinstance(kind, str):
        raise ProtocolError(
            "unknown_type", f"field 'type' must be a string, one of {listed}", client_id
        )
    if kind not in known:
        raise ProtocolError(
            "unknown_type",
            f"unknown frame type {shown(kind)}; frame types are {listed}",
            client_id,
        )
    return kind


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
    payload = decode_json_object(raw)
    readable_id = readable_client_id(payload)
    frame_type = _frame_type(payload, USER_FRAME_TYPES, readable_id)
    if frame_type == "typing":
        return UserFrame("typing", typing=_boolean(payload, "typing", readable_id))
    client_id = validate_client_id(payload.get("id"))
    if frame_type == "request_human":
        return UserFrame("request_human", client_id)
    if frame_type == "feedback":
        if payload.get("helpful") is not False:
            raise ProtocolError(
                "invalid_field", 'feedback frames carry "helpful": false', client_id
            )
        in_reply_to = payload.get("in_reply_to")
        if not isinstance(in_reply_to, str) or not CLIENT_ID_PATTERN.fullmatch(in_reply_to):
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
    if not isinstance(value, str) or not CLIENT_ID_PATTERN.fullmatch(value):
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
    if not CURSOR_PATTERN.fullmatch(value):
        raise ProtocolError(
            "invalid_field",
            "last_event_id must be a non-negative integer of at most 18 ASCII digits "
            "(the event_id of the last event you processed)",
        )
    return int(value)


@dataclass(frozen=True)
class RestMessage:
    """A validated Rasa REST channel body. ``client_id`` is the optional ``message_id`` that
    makes a retried request idempotent."""

    sender: str
    text: str
    client_id: str | None = None
    metadata: dict[str, Any] | None = None


def parse_rest_body(raw: bytes, *, max_text_chars: int) -> RestMessage:
    """Validate a Rasa REST channel body ``{"sender", "message", "metadata"?, "message_id"?}``."""
    payload = decode_json_object(raw)
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
    message_id = payload.get("message_id")
    if message_id is not None and (
        not isinstance(message_id, str) or not CLIENT_ID_PATTERN.fullmatch(message_id)
    ):
        raise ProtocolError(
            "invalid_field",
            "field 'message_id' must be a string of 1 to 64 letters, digits or '_.:-' "
            "(a client-generated message id, e.g. a UUID) if given",
        )
    return RestMessage(sender, text, message_id, metadata)


def validate_conversation_id(value: Any, client_id: str | None = None) -> str:
    """Check a conversation id a websocket user chooses (``?conversation_id=``)."""
    if not isinstance(value, str) or not CONVERSATION_ID_PATTERN.fullmatch(value):
        raise ProtocolError(
            "invalid_field",
            "conversation_id must be a string of 1 to 128 letters, digits or '_.:@-'",
            client_id,
        )
    return value


def validate_conversation_reference(value: Any, client_id: str | None = None) -> str:
    """Check the ``conversation_id`` an agent names: any id a conversation can have, i.e. one
    a websocket user chose (:data:`CONVERSATION_ID_PATTERN`) or a REST channel ``sender``
    (Rasa's rule: non-blank text of at most :data:`MAX_SENDER_CHARS` characters)."""
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_SENDER_CHARS:
        raise ProtocolError(
            "invalid_field",
            "field 'conversation_id' must be a conversation's id: a non-empty string of at "
            f"most {MAX_SENDER_CHARS} characters",
            client_id,
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


def _name(value: Any, field: str, meaning: str, max_chars: int, client_id: str | None) -> str:
    """``value`` if it is a non-blank string of at most ``max_chars`` (a name or username)."""
    if not isinstance(value, str) or not value.strip() or len(value) > max_chars:
        raise ProtocolError(
            "invalid_field",
            f"field '{field}' must be {meaning}: a non-empty string of at most {max_chars} "
            "characters",
            client_id,
        )
    return value


def _boolean(payload: dict[str, Any], field: str, client_id: str | None) -> bool:
    value = payload.get(field)
    if not isinstance(value, bool):
        raise ProtocolError("invalid_field", f"field '{field}' must be true or false", client_id)
    return value


def error_frame(error: HandoffError, frame_id: str | None = None) -> dict[str, Any]:
    """The websocket ``error`` frame that reports ``error``: the one place errors become
    frames. ``id`` is ``frame_id`` (the refused frame's id), else a ``ProtocolError``'s own
    ``client_id``; absent when neither is known."""
    frame: dict[str, Any] = {"type": "error", "code": error.code, "message": error.message}
    if frame_id is None and isinstance(error, ProtocolError):
        frame_id = error.client_id
    if frame_id is not None:
        frame["id"] = frame_id
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
    "approve": ("id", "approval_id"),
    "correct": ("id", "approval_id", "intent"),
    "replace": ("id", "approval_id", "text"),
    "suggest": ("id", "message_id"),
}
"""Each agent frame type and its required fields (``reply`` may add ``response_name``,
``replace`` and ``suggest`` an ``intent``)."""

PRESENCE_STATUSES = ("online", "away")


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
    approval_id: int = 0


def _row_id(payload: dict[str, Any], field: str, what: str, error_id: str | None) -> int:
    """A positive integer id (of a stored row) in ``payload[field]``."""
    value = payload[field]
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_MESSAGE_ID:
        raise ProtocolError(
            "invalid_field",
            f"field {field!r} must be an integer from 1 to {MAX_MESSAGE_ID} "
            f"(the {field} of {what})",
            error_id,
        )
    return value


def parse_agent_frame(raw: str | bytes, *, max_text_chars: int) -> AgentFrame:
    """Validate one frame from an agent's websocket."""
    payload = decode_json_object(raw)
    readable_id = readable_client_id(payload)
    kind = _frame_type(payload, sorted(AGENT_FRAME_FIELDS), readable_id)
    fields = AGENT_FRAME_FIELDS[kind]
    for name in fields:
        if name not in payload:
            raise ProtocolError("invalid_field", f"{kind} frame needs field {name!r}", readable_id)
    client_id = validate_client_id(payload["id"]) if "id" in fields else None
    error_id = client_id or readable_id
    values: dict[str, Any] = {"kind": kind, "client_id": client_id}
    if "conversation_id" in fields:
        values["conversation_id"] = validate_conversation_reference(
            payload["conversation_id"], error_id
        )
    if kind == "reply":
        values["text"] = validate_text(payload["text"], "text", max_text_chars, error_id)
        response_name = payload.get("response_name")
        if response_name is not None:
            response_name = _name(
                response_name,
                "response_name",
                "the canned response used (e.g. 'utter_greet')",
                MAX_RESPONSE_NAME_CHARS,
                error_id,
            )
        values["response_name"] = response_name
    elif kind == "label":
        values["message_id"] = _row_id(payload, "message_id", "a user message", error_id)
        intent = _name(payload["intent"], "intent", "an intent name", MAX_NAME_CHARS, error_id)
        values["intent"] = intent.strip()
    elif kind == "suggest":
        values["message_id"] = _row_id(payload, "message_id", "a user message", error_id)
        if payload.get("intent") is not None:
            intent = _name(payload["intent"], "intent", "an intent name", MAX_NAME_CHARS, error_id)
            values["intent"] = intent.strip()
    elif kind in ("approve", "correct", "replace"):
        values["approval_id"] = _row_id(payload, "approval_id", "a held answer", error_id)
        if kind == "replace":
            values["text"] = validate_text(payload["text"], "text", max_text_chars, error_id)
        if kind == "correct" or payload.get("intent") is not None:
            intent = _name(payload["intent"], "intent", "an intent name", MAX_NAME_CHARS, error_id)
            values["intent"] = intent.strip()
    elif kind == "typing":
        values["typing"] = _boolean(payload, "typing", error_id)
    elif kind == "transfer":
        to = payload["to"]
        if to is not None:
            to = _name(
                to, "to", "an agent's username, or null for the queue", MAX_NAME_CHARS, error_id
            )
        values["to"] = to
    elif kind == "presence":
        status = payload["status"]
        if not isinstance(status, str) or status not in PRESENCE_STATUSES:
            raise ProtocolError(
                "invalid_field", "field 'status' must be 'online' or 'away'", error_id
            )
        values["status"] = status
    return AgentFrame(**values)
