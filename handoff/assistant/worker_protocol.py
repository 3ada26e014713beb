"""The wire between the server process and an assistant worker process. No Rasa in it.

Transport: one Unix socket pair per worker, made by the server before it starts the worker
and handed to it as an inherited file descriptor (``--fd``). A socket pair rather than the
worker's stdin/stdout, because Rasa, TensorFlow and their dependencies write to stdout and
stderr; rather than a named socket, because nothing else can connect to it, nothing is left
on disk, and the worker sees end-of-file the moment the server process dies, for any reason.

Framing: each frame is a 4-byte big-endian length, then that many bytes of a UTF-8 JSON
object (at most :data:`MAX_FRAME_BYTES`). Both sides may have many requests in flight; the
worker answers each as soon as it is done, so answers may come out of order.

Frames, server to worker::

    {"id": 7, "op": "parse", "args": {"text": "hi"}}

``op`` is one of :data:`OPS`; ``args`` are the keyword arguments of the
:class:`~handoff.assistant.interface.AssistantApi` call of the same name, with tracker changes
encoded by :func:`encode_changes`. ``shutdown`` (no args) makes the worker stop reading,
finish what it holds, answer ``{"id": N, "result": null}`` and exit with status 0.

Worker to server::

    {"id": 0, "ready": {"name", "path", "fallback_threshold", "load_seconds", "intents",
                        "responses"}}      # once, when the model is loaded (or "failed": text)
    {"id": 7, "result": ...}                 # the call's return value (``respond``: a
                                             # BotTurn as a dict, see BotTurn.as_dict)
    {"id": 7, "error": {"type": "ValueError", "message": "..."}}

A worker that cannot load its model sends ``{"id": 0, "failed": "why"}`` and exits with
status 3. An ``error`` answer is the worker's exception; the worker stays up.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Sequence
from typing import Any

from handoff.assistant.tracker_changes import (
    AgentSaid,
    BotPaused,
    BotResumed,
    TrackerChange,
    TurnReverted,
)
from handoff.core import json_codec
from handoff.core.errors import HandoffError

__all__ = [
    "MAX_FRAME_BYTES",
    "OPS",
    "FrameError",
    "decode_changes",
    "decode_frame_body",
    "encode_changes",
    "encode_frame",
    "read_frame",
    "write_frame",
]

MAX_FRAME_BYTES = 16 * 1024 * 1024
"""Largest frame either side sends or accepts. A parse result is a few KiB; a ready frame with
every response of a large domain stays far below this."""

OPS = frozenset(
    {
        "parse",
        "respond",
        "preview",
        "log_without_answer",
        "append_to_tracker",
        "is_paused",
        "shutdown",
    }
)
"""The requests a worker answers."""

_LENGTH = struct.Struct(">I")


class FrameError(HandoffError, ValueError):
    """A frame that breaks the wire format (too large, not a JSON object): the peer is not a
    worker of this version, and the connection is dropped."""

    code = "internal"


def encode_frame(message: dict[str, Any]) -> bytes:
    """``message`` as one frame: length prefix and compact JSON."""
    body = json_codec.dumps(message)
    if len(body) > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {len(body)} bytes is over the {MAX_FRAME_BYTES}-byte limit")
    return _LENGTH.pack(len(body)) + body


def decode_frame_body(body: bytes) -> dict[str, Any]:
    """The JSON object in a frame's body; :class:`FrameError` if it is not one."""
    try:
        message = json_codec.loads(body)
    except ValueError as error:  # orjson's error is one, invalid UTF-8 included
        raise FrameError(f"frame is not UTF-8 JSON: {error}") from None
    if not isinstance(message, dict):
        raise FrameError(f"frame is a JSON {type(message).__name__}, not an object")
    return message


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """The next frame's object, or None at a clean end of stream (the peer closed between
    frames). A stream cut inside a frame raises ``asyncio.IncompleteReadError``."""
    try:
        head = await reader.readexactly(_LENGTH.size)
    except asyncio.IncompleteReadError as error:
        if not error.partial:
            return None
        raise
    (length,) = _LENGTH.unpack(head)
    if length > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {length} bytes announced; the limit is {MAX_FRAME_BYTES}")
    return decode_frame_body(await reader.readexactly(length))


def write_frame(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    """Queue ``message`` on ``writer`` (the caller drains when it wants back-pressure)."""
    writer.write(encode_frame(message))


def encode_changes(changes: Sequence[TrackerChange]) -> list[dict[str, Any]]:
    """Tracker changes as JSON: ``{"kind": "paused", "reason"}``, ``{"kind": "resumed",
    "outcome"}``, ``{"kind": "agent_said", "text", "metadata"}`` or ``{"kind":
    "turn_reverted"}``."""
    encoded: list[dict[str, Any]] = []
    for change in changes:
        if isinstance(change, BotPaused):
            encoded.append({"kind": "paused", "reason": change.reason})
        elif isinstance(change, BotResumed):
            encoded.append({"kind": "resumed", "outcome": change.outcome})
        elif isinstance(change, AgentSaid):
            encoded.append({"kind": "agent_said", "text": change.text, "metadata": change.metadata})
        elif isinstance(change, TurnReverted):
            encoded.append({"kind": "turn_reverted"})
        else:
            raise TypeError(f"not a tracker change: {change!r}")
    return encoded


def decode_changes(encoded: Sequence[dict[str, Any]]) -> list[TrackerChange]:
    """The inverse of :func:`encode_changes`; :class:`FrameError` on an unknown kind."""
    changes: list[TrackerChange] = []
    for item in encoded:
        kind = item.get("kind")
        if kind == "paused":
            changes.append(BotPaused(str(item.get("reason") or "")))
        elif kind == "resumed":
            changes.append(BotResumed(str(item.get("outcome") or "handed_back")))
        elif kind == "agent_said":
            changes.append(AgentSaid(str(item["text"]), dict(item.get("metadata") or {})))
        elif kind == "turn_reverted":
            changes.append(TurnReverted())
        else:
            raise FrameError(f"unknown tracker change kind {kind!r}")
    return changes
