"""Decoding a client's JSON object safely: bounded size, nesting depth and integers, finite
numbers, text without NUL or lone surrogates, checked so that no input raises anything but
:class:`ProtocolError` (the error of every parser of client input, see :mod:`.protocol`)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from handoff.core.errors import HandoffError

__all__ = [
    "CLIENT_ID_PATTERN",
    "MAX_FRAME_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_JSON_INTEGER",
    "ProtocolError",
    "decode_json_object",
    "peek_client_id",
    "readable_client_id",
    "shown",
]

MAX_FRAME_BYTES = 16 * 1024
"""Largest client frame we parse; larger ones get a ``too_large`` error (connection stays up)."""

MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays and objects we decode, checked before decoding (deeper input gets
``invalid_json``). Our own frames nest two levels; the rest is room for REST ``metadata``."""

MAX_JSON_INTEGER = 2**63 - 1
"""Largest magnitude of any integer in a frame or body (a signed 64-bit integer): larger ones
get ``invalid_field``, and are never converted (Python refuses over 4,300 digits anyway)."""

CLIENT_ID_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
"""A client-generated frame id (used with ``fullmatch``)."""

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
        f"{shown(literal)}, beyond the floating-point range; numbers must be finite"
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
    return f"field {shown(path)}" if path else "the object"


def shown(value: str) -> str:
    """``value`` quoted for an error message, cut to a readable length."""
    if len(value) <= _SHOWN_CHARS:
        return repr(value)
    return repr(value[:_SHOWN_CHARS]) + "…"
