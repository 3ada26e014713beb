"""Encoding our own JSON (frames to clients, frames to the assistant workers, stored payloads)
with orjson: several times cheaper than the standard library's ``json``, and it writes UTF-8
bytes directly, which is what a socket wants. The relay encodes a few of these per message.

Client input is not read here: :mod:`.safe_json` decodes it with its limits.

Output is compact UTF-8 JSON (no spaces, non-ASCII characters as themselves): standard JSON
that any reader, ``json.loads`` included, reads back. Non-string dict keys are written as
strings, and subclasses of ``float`` and ``int`` (a NumPy number, an ``IntEnum``) as their
value, as ``json.dumps`` does. Like ``json.dumps`` it raises :class:`TypeError` for anything
else that is not JSON; unlike it, NaN and infinities become ``null``. A value holding an
integer beyond 64 bits (a custom action's slot may) is written by ``json.dumps`` instead.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["dumps", "dumps_text", "loads"]

_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def _plain(value: Any) -> Any:
    """What ``json.dumps`` writes for a value orjson does not know."""
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _encoded(value: Any) -> bytes:
    """orjson's encoding of ``value`` (the standard library's beyond 64-bit integers, which
    orjson refuses). orjson's result holds a buffer of at least 4 KiB whatever its length."""
    try:
        return orjson.dumps(value, default=_plain, option=_OPTIONS)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def dumps(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON bytes, copied to their own size so that keeping them
    (the last burst a connection sent, a queued frame) costs their length, not 4 KiB."""
    return bytes(memoryview(_encoded(value)))


def dumps_text(value: Any) -> str:
    """``value`` as compact JSON text (for a text column)."""
    return _encoded(value).decode("utf-8")


def loads(data: bytes | str) -> Any:
    """The value of JSON we wrote (or any valid JSON); :class:`ValueError` if it is not."""
    return orjson.loads(data)
