"""The end-user wire protocol: validating what clients send and building what the server sends.

Pure functions, no I/O; ``docs/protocol.md`` is the reference for clients and must stay in step.
This is the one input boundary: every parser turns *any* input (bytes, text, JSON of any shape)
into a validated frame or a :class:`ProtocolError`, never another exception. A ``ProtocolError``
has a stable ``code`` (clients may branch on it), a ``message`` that says what was wrong and how
to fix it, and the frame's ``id`` whenever that could be read.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from handoff.core.errors import HandoffError

MAX_FRAME_BYTES = 16 * 1024
"""Largest client frame we parse; larger ones get a ``too_large`` error (connection stays up)."""

WEBSOCKET_MAX_SIZE = 64 * 1024
"""Hard limit of the websocket layer: a frame above this closes the connection (code 1009)."""

MAX_REST_BODY_BYTES = 64 * 1024
"""Largest HTTP request body; larger ones get HTTP 413 (see :mod:`handoff.web.http_errors`)."""

MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays and objects we decode, checked before decoding (deeper input gets
``invalid_json``). Our own frames nest two levels; the rest is room for REST ``metadata``."""

MAX_JSON_INTEGER = 2**63 - 1
"""Largest magnitude of any integer in a frame or body (a signed 64-bit integer): larger ones
get ``invalid_field``, and are never converted (Python refuses over 4,300 digits anyway)."""

MAX_MESSAGE_ID = 2**31 - 1
"""Largest ``message_id``: message ids are a PostgreSQL ``integer`` column."""

MAX_NAME_CHARS = 64
"""Longest intent name (``label``) and agent username (``transfer`` ``to``)."""

MAX_RESPONSE_NAME_CHARS = 128
"""Longest ``response_name`` of an agent reply (its database column)."""

CLIENT_ID_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
CONVERSATION_ID_PATTERN = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")
"""Both are used with ``fullmatch`` (``$`` would also accept a trailing newline)."""

CURSOR_PATTERN = re.compile(r"[0-9]{1,18}")
"""ASCII digits only: ``str.isdigit`` also accepts e.g. Arabic-Indic digits and superscripts."""

MAX_SENDER_CHARS = 255
"""Rasa's tracker store keeps sender ids in a 255-character column."""

_UNACCEPTABLE_CHAR = re.compile("[\x00\ud800-\udfff]")
"""NUL (PostgreSQL text refuses it) and lone surrogates (not Unicode text, not encodable as
UTF-8: a JSON ``\\ud83d\\ude00`` pair decodes to one character and is fine)."""

_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[{]|[\]}]', re.DOTALL)
"""A JSON string (possibly unterminated: matched in linear time) or a bracket."""

_MAX_INTEGER_CHARS = len(str(-MAX_JSON_INTEGER))
_SHOWN_CHARS = 40


class ProtocolError(HandoffError, ValueError):
    """A client sent something we cannot accept. Nothing of it was stored."""

    code = "invalid_field"

    def __init__(self, code: str, message: str, client_id: str | None = None) -> None:
        super().__init__(message, code=code)
        self.client_id = client_id


@dataclass(frozen=True)
class _Unacceptable:
    """Stands in for a JSON number we refuse to convert, so that decoding can finish, the
    frame's ``id`` can be read, and the error can name the field."""

    description: str


def _parse_int(digits: str) -> int | _Unacceptable:
    if len(digits) <= _MAX_INTEGER_CHARS:
        value = int(digits)
        if abs(value) <= MAX_JSON_INTEGER:
            return value
    return _Unacceptable(
        f"an integer of {len(digits.lstrip('-'))} digits; integers must be within "
        f"±{MAX_JSON_INTEGER}"
    )


def _parse_float(literal: str) -> float | _Unacceptable:
    value = float(literal)
    if math.isfinite(value):
        return value
    return _Unacceptable(
        f"{_shown(literal)}, beyond the floating-point range; numbers must be finite"
    )


def _parse_constant(name: str) -> _Unacceptable:
    return _Unacceptable(f"{name}, which is not JSON; numbers must be finite")


def decode_json_object(raw: str | bytes, max_bytes: int = MAX_FRAME_BYTES) -> dict[str, Any]:
    """Decode a client's JSON object: at most ``max_bytes`` of UTF-8, nested at most
    :data:`MAX_JSON_DEPTH` levels, every string (keys too) valid text without NUL, every number
    finite and every integer within :data:`MAX_JSON_INTEGER`. Anything else raises
    ``ProtocolError`` (``too_large``, ``invalid_json`` or ``invalid_field``, the last with the
    object's ``id`` when it is a valid client id)."""
    text = _utf8_text(raw, max_bytes)
    if _nesting_exceeds(text, MAX_JSON_DEPTH):
        raise ProtocolError(
            "invalid_json",
            f"arrays and objects are nested more than {MAX_JSON_DEPTH} levels deep; "
            "send a flatter JSON object",
        )
    try:
        payload = json.loads(
            text,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_parse_constant,
        )
    except json.JSONDecodeError as error:
        raise ProtocolError("invalid_json", f"not valid JSON: {error}") from None
    except (ValueError, RecursionError):  # a safety net: the checks above should prevent it
        raise ProtocolError("invalid_json", "not valid JSON") from None
    if not isinstance(payload, dict):
        raise ProtocolError("invalid_json", "must be a JSON object ({...})")
    client_id = readable_client_id(payload)
    problem = _find_unacceptable(payload, "")
    if problem is not None:
        raise ProtocolError("invalid_field", problem, client_id)
    return payload


def readable_client_id(payload: dict[str, Any]) -> str | None:
    """The object's ``id`` if it is a valid client id (for error frames), else None."""
    value = payload.get("id")
    return value if isinstance(value, str) and CLIENT_ID_PATTERN.fullmatch(value) else None


def peek_client_id(raw: str | bytes) -> str | None:
    """The ``id`` of a frame that will not be processed (e.g. ``rate_limited``), if readable."""
    try:
        return readable_client_id(decode_json_object(raw))
    except ProtocolError as error:
        return error.client_id


def _utf8_text(raw: str | bytes, max_bytes: int) -> str:
    if isinstance(raw, bytes):
        _check_size(len(raw), max_bytes)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ProtocolError("invalid_json", f"not UTF-8 text: {error}") from None
    # Surrogates a str may hold are counted here, and refused after decoding naming the field.
    _check_size(len(raw.encode("utf-8", "surrogatepass")), max_bytes)
    return raw


def _check_size(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise ProtocolError(
            "too_large",
            f"{size} bytes is over the limit of {max_bytes} bytes; send less at once",
        )


def _nesting_exceeds(text: str, limit: int) -> bool:
    """Whether brackets outside strings nest deeper than ``limit`` (never less deep than what
    ``json.loads`` would reach: it stops at the first error, as this count continues)."""
    depth = 0
    for token in _JSON_TOKEN.finditer(text):
        bracket = token.group()
        if bracket in ("[", "{"):
            depth += 1
            if depth > limit:
                return True
        elif bracket in ("]", "}"):
            depth = max(depth - 1, 0)
    return False


def _find_unacceptable(value: Any, path: str) -> str | None:
    """What is wrong with the first refused string or number in ``value``, naming its field."""
    if isinstance(value, str):
        problem = _text_problem(value)
    elif isinstance(value, _Unacceptable):
        problem = f"holds {value.description}"
    elif isinstance(value, dict):
        for key, item in value.items():
            key_problem = _text_problem(key)
            if key_problem is not None:
                return f"a key of {_field(path)} {key_problem}"
            found = _find_unacceptable(item, f"{path}.{key}" if path else key)
            if found is not None:
                return found
        return None
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _find_unacceptable(item, f"{path}[{index}]")
            if found is not None:
                return found
        return None
    else:
        return None
    return None if problem is None else f"{_field(path)} {problem}"


def _text_problem(value: str) -> str | None:
    found = _UNACCEPTABLE_CHAR.search(value)
    if found is None:
        return None
    if found.group() == "\x00":
        return "contains NUL (U+0000), which text may not hold; remove it"
    return (
        f"contains a lone surrogate (U+{ord(found.group()):04X}), which is not Unicode text; "
        "send valid UTF-8 (a character outside the BMP as one character, or as a pair)"
    )


def _field(path: str) -> str:
    return f"field {_shown(path)}" if path else "the object"


def _shown(value: str) -> str:
    """``value`` quoted for an error message, cut to a readable length."""
    if len(value) <= _SHOWN_CHARS:
        return repr(value)
    return repr(value[:_SHOWN_CHARS]) + "…"


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
            f"unknown frame type {_shown(kind)}; frame types are {listed}",
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
}
"""Each agent frame type and its required fields (``reply`` may add ``response_name``)."""

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
        message_id = payload["message_id"]
        if (
            not isinstance(message_id, int)
            or isinstance(message_id, bool)
            or not 1 <= message_id <= MAX_MESSAGE_ID
        ):
            raise ProtocolError(
                "invalid_field",
                f"field 'message_id' must be an integer from 1 to {MAX_MESSAGE_ID} "
                "(the message_id of a user message)",
                error_id,
            )
        values["message_id"] = message_id
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
