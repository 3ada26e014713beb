"""Websocket I/O in bursts: sanic 21.12 (the version Rasa 3.6.21 pins) moves one message at a
time each way, and under load that per-message cost is a large part of the server's.

Reading: sanic's frame assembler holds one message at a time: the protocol's ``put`` waits
until the handler has fetched the message before it takes the next frame, and each ``recv``
costs a future, a task and an ``asyncio.wait``. A connection thus reads at most one message per
loop iteration: an agent socket carrying fifty conversations falls behind first when the loop
is busy. :class:`QueuedMessages` replaces the assembler (:func:`install`, before the server
starts): whole messages go into a queue of up to :data:`MAX_QUEUED` without waiting, reading
pauses at that many (TCP back-pressure, as before), and :func:`take_queued` hands the handler
what arrived after its ``recv``. ``recv``, ``recv_burst`` and ``recv_streaming`` keep working
(a message is one chunk), and so do close and cancellation, which sanic handles outside the
assembler.

Writing: :func:`send_texts` frames several messages, already encoded as UTF-8 (our frames
are encoded to bytes once, :mod:`handoff.core.json_codec`), and writes them to the socket at
once (one system call instead of one per message), under the connection's send lock as
sanic's ``send``.
"""

from __future__ import annotations

import asyncio
import codecs
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import sanic.server.websockets.impl as sanic_websockets
from sanic.exceptions import WebsocketClosed
from websockets.connection import OPEN
from websockets.frames import Frame, Opcode
from websockets.typing import Data

__all__ = ["MAX_QUEUED", "QueuedMessages", "install", "send_texts", "take_queued"]

MAX_QUEUED = 64
"""Complete messages a connection holds before it stops reading from its socket."""

_utf8_decoder = codecs.getincrementaldecoder("utf-8")


class QueuedMessages:
    """The assembler's interface (``put``, ``get``, ``get_iter``) over a queue of whole
    messages. ``protocol`` is sanic's ``WebsocketImplProtocol`` (for pausing reads)."""

    def __init__(self, protocol: Any, limit: int = MAX_QUEUED) -> None:
        self.protocol = protocol
        self.limit = limit
        self.messages: deque[Data] = deque()
        self._waiters: deque[asyncio.Future[Data | None]] = deque()
        self._chunks: list[Data] = []
        self._decoder: codecs.IncrementalDecoder | None = None
        self._paused = False

    async def put(self, frame: Frame) -> None:
        """Add a data frame; a final frame completes a message. Never waits."""
        if frame.opcode is Opcode.TEXT:
            self._decoder = _utf8_decoder(errors="strict")
        elif frame.opcode is Opcode.BINARY:
            self._decoder = None
        elif frame.opcode is not Opcode.CONT:
            return  # control frames are the protocol's business
        decoder = self._decoder
        data: Data = frame.data if decoder is None else decoder.decode(frame.data, frame.fin)
        self._chunks.append(data)
        if not frame.fin:
            return
        joiner: Data = b"" if self._decoder is None else ""
        self.messages.append(joiner.join(self._chunks))  # type: ignore[arg-type]
        self._chunks = []
        self._decoder = None
        while self._waiters and self.messages:
            waiter = self._waiters.popleft()
            if not waiter.done():  # else given up (recv cancelled, timed out)
                waiter.set_result(self._pop())
        if len(self.messages) >= self.limit and not self._paused:
            self._paused = bool(self.protocol.pause_frames())

    def get(self, timeout: float | None = None) -> asyncio.Future[Data | None]:
        """The next message; None if ``timeout`` (s) passes first (0: only if one is here).

        A future, not a coroutine: sanic's ``recv`` waits for it together with its own
        cancellation, and when the server stops while it waits, a coroutine would have been
        wrapped in a task that is destroyed pending (an error in the log at every shutdown);
        a bare future is dropped quietly."""
        loop = asyncio.get_running_loop()
        result: asyncio.Future[Data | None] = loop.create_future()
        if self.messages:
            result.set_result(self._pop())
        elif timeout is not None and timeout <= 0:
            result.set_result(None)
        else:
            while self._waiters and self._waiters[0].done():
                self._waiters.popleft()  # given up before a message came
            self._waiters.append(result)
            if timeout is not None:
                expiry = loop.call_later(timeout, _resolve, result, None)
                result.add_done_callback(lambda _: expiry.cancel())
        return result

    async def get_iter(self) -> AsyncIterator[Data]:
        message = await self.get()
        if message is not None:
            yield message

    def take(self) -> list[Data]:
        """Every message queued now, oldest first."""
        taken = list(self.messages)
        self.messages.clear()
        self._resume()
        return taken

    def _pop(self) -> Data:
        message = self.messages.popleft()
        self._resume()
        return message

    def _resume(self) -> None:
        if self._paused and len(self.messages) < self.limit:
            self._paused = False
            self.protocol.resume_frames()


def _resolve(future: asyncio.Future[Data | None], value: Data | None) -> None:
    if not future.done():
        future.set_result(value)


def install() -> None:
    """Make every websocket connection opened from now on queue its messages (sanic 21.12
    builds its assembler by this module-level name)."""
    sanic_websockets.WebsocketFrameAssembler = QueuedMessages  # type: ignore[attr-defined,assignment]


def take_queued(ws: Any) -> list[Data]:
    """Messages that arrived on ``ws`` after the last ``recv`` (none without :func:`install`)."""
    assembler = ws.assembler
    return assembler.take() if isinstance(assembler, QueuedMessages) else []


async def send_texts(ws: Any, texts: list[bytes]) -> None:
    """Send ``texts`` (each a UTF-8 encoded text message) in order, with one write. On a
    closed connection it raises as sanic's ``send`` does."""
    if not texts:
        return
    async with ws.conn_mutex:
        if ws.connection.state is not OPEN:
            raise WebsocketClosed("Cannot write to websocket interface after it is closed.")
        for text in texts:
            ws.connection.send_text(text)
        await ws.io_proto.send(b"".join(ws.connection.data_to_send()))
