"""What the user and agent websockets share: one writer per connection that sends direct
frames and hub events in order, catch-up by event id, and a per-connection rate limit."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sanic.server.websockets.impl import WebsocketImplProtocol
from websockets.connection import OPEN
from websockets.exceptions import ConnectionClosed

from handoff.conversations.service import ActionError
from handoff.core import json_codec
from handoff.core.errors import HandoffError, InternalError
from handoff.core.protocol import error_frame
from handoff.core.safe_json import ProtocolError, peek_client_id
from handoff.realtime.hub import Hub
from handoff.storage.records import Event
from handoff.storage.store import Store
from handoff.web.websocket_io import send_texts, take_queued

__all__ = ["LiveConnection", "RateLimiter", "event_frame", "resume_from", "serve_frames"]

logger = logging.getLogger(__name__)

FrameT = TypeVar("FrameT")


def event_frame(event: Event) -> dict[str, Any]:
    """A stored event as a frame (``event_id`` is absent for ephemeral events)."""
    frame: dict[str, Any] = {"type": event.type, **event.payload}
    if event.id:
        frame["event_id"] = event.id
    return frame


class RateLimiter:
    """Token bucket: ``rate`` frames per second on average, bursts of ``burst``."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def refusal(self, client_id: str | None) -> ProtocolError:
        """The ``rate_limited`` error for a refused frame (``client_id``: its id, if read)."""
        return ProtocolError(
            "rate_limited",
            f"more than {self.rate:g} frames per second (bursts of {self.burst}); "
            "slow down, then send this frame again",
            client_id,
        )


class LiveConnection:
    """Sends everything for one websocket from a single task, in order, without duplicates.

    Subscribe first, then :meth:`catch_up` from the client's cursor, then :meth:`run`:
    events that arrive live and were already sent during the catch-up are skipped by id.
    """

    def __init__(
        self,
        ws: WebsocketImplProtocol,
        hub: Hub,
        topics: list[str],
        fetch: Callable[[int], Awaitable[list[Event]]] | None = None,
    ) -> None:
        """``fetch(after_id)`` reads this connection's stored events after an id. When given,
        stored events are always read from the database in id order (the hub only says that
        there are new ones): needed when transactions commit concurrently (PostgreSQL, several
        processes), where the hub may bring event 10 before event 9."""
        self.ws = ws
        self.subscription = hub.subscribe(topics)
        self.last_sent_event_id = 0
        self.fetch = fetch
        self._direct: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._wake = asyncio.Event()
        """Set when a frame or an event is queued: the writer's one wake-up source."""
        self.subscription.wake = self._wake

    def add_topic(self, topic: str) -> None:
        self.subscription.add_topic(topic)

    def send(self, frame: dict[str, Any]) -> None:
        """Queue a frame that is not an event (ack, error, snapshot)."""
        self._direct.put_nowait(frame)
        self._wake.set()

    async def send_now(self, frame: dict[str, Any]) -> None:
        """Send ``frame`` at once (before the writer runs), e.g. the first frame."""
        await send_texts(self.ws, [json_codec.dumps(frame)])

    async def catch_up(
        self, last_event_id: int, fetch: Callable[[int], Awaitable[list[Event]]]
    ) -> None:
        texts = [self._event_text(event) for event in await fetch(last_event_id)]
        await send_texts(self.ws, [text for text in texts if text is not None])
        self.last_sent_event_id = max(self.last_sent_event_id, last_event_id)

    def _event_text(self, event: Event) -> bytes | None:
        """The event's frame, encoded, None if it was sent already; counts it as sent."""
        if event.id and event.id <= self.last_sent_event_id:
            return None
        if event.id:
            self.last_sent_event_id = event.id
        return json_codec.dumps(event_frame(event))

    async def _event_texts(self, event: Event) -> list[bytes]:
        if self.fetch is None or not event.id:
            text = self._event_text(event)
            return [] if text is None else [text]
        texts = [self._event_text(queued) for queued in self.subscription.drain() if not queued.id]
        # One database read for a burst; the hub only said that there is something new.
        texts.extend(
            self._event_text(stored) for stored in await self.fetch(self.last_sent_event_id)
        )
        return [text for text in texts if text is not None]

    async def run(self, on_overflow: Callable[[], Awaitable[None]]) -> None:
        """Send until the connection closes. Each wake-up sends everything queued by then, so
        a busy connection costs one loop round per burst, not per frame."""
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()  # what is queued from here on sets it again
                texts: list[bytes] = []
                while not self._direct.empty():
                    texts.append(json_codec.dumps(self._direct.get_nowait()))
                while not self.subscription.queue.empty():
                    texts.extend(await self._event_texts(self.subscription.queue.get_nowait()))
                await send_texts(self.ws, texts)  # one write for the burst
                if self.subscription.overflowed:
                    self.subscription.overflowed = False
                    await on_overflow()
        except ConnectionClosed:
            pass
        finally:
            self.subscription.close()


async def resume_from(
    live: LiveConnection,
    store: Store,
    cursor: int | None,
    fetch: Callable[[int], Awaitable[list[Event]]],
) -> int:
    """Replay what the client missed since ``cursor`` (or tell it to resync when the server
    cannot); return the newest event id, for the client's first cursor."""
    latest = await store.last_event_id()
    if cursor is not None and (cursor > latest or cursor < await store.oldest_event_id() - 1):
        await live.send_now({"type": "resync", "last_event_id": latest})
        cursor = None
    if cursor is not None:
        await live.catch_up(cursor, fetch)
    elif live.fetch is not None:
        live.last_sent_event_id = latest  # new client: its snapshot covers what came before
    return max(latest, live.last_sent_event_id)


async def serve_frames(
    live: LiveConnection,
    store: Store,
    limiter: RateLimiter,
    parse: Callable[[str | bytes], FrameT],
    handle: Callable[[FrameT], Awaitable[dict[str, Any] | None]],
    who: str,
) -> None:
    """Read frames until the socket closes: rate-limit, validate, handle, answer.

    Invalid frames, refused actions and failures each get an ``error`` frame; the connection
    stays usable. ``handle`` returns a frame to send back (e.g. an ``ack``) or None. Answers
    go out in the order the frames came in. Frames that arrived together are handled one
    conversation at a time, in order, and different conversations' at once (a frame's
    ``conversation_id``; frames without one in order on their own): an agent's replies to
    many conversations share one store commit instead of each waiting for the previous one's.
    """

    async def resync() -> None:
        await live.send_now({"type": "resync", "last_event_id": await store.last_event_id()})

    async def in_order(frames: list[tuple[int, FrameT]], answers: _AnswersInOrder) -> None:
        for position, frame in frames:
            if live.ws.connection.state is not OPEN:
                return  # ended meanwhile (e.g. its account was disabled): handle no more
            answers.settle(position, await _serve_frame(frame, handle, who))

    writer = asyncio.create_task(live.run(resync))
    try:
        while True:
            first = await live.ws.recv()
            answers = _AnswersInOrder(live)
            by_conversation: dict[str, list[tuple[int, FrameT]]] = {}
            for raw in [first, *take_queued(live.ws)]:  # what arrived meanwhile, in order
                if raw is None:
                    continue
                frame, refusal = _admit(limiter, parse, raw, who)
                position = answers.expect()
                if frame is None:
                    answers.settle(position, refusal)
                    continue
                key = str(getattr(frame, "conversation_id", "") or "")
                by_conversation.setdefault(key, []).append((position, frame))
            if len(by_conversation) == 1:
                (frames,) = by_conversation.values()
                await in_order(frames, answers)
            elif by_conversation:
                await asyncio.gather(*(in_order(f, answers) for f in by_conversation.values()))
    except ConnectionClosed:
        logger.debug("Websocket of %s closed", who)
    finally:
        writer.cancel()
        live.subscription.close()


class _AnswersInOrder:
    """The answers to one burst of frames, sent in the frames' order as they become known."""

    _PENDING: Any = object()

    def __init__(self, live: LiveConnection) -> None:
        self.live = live
        self._answers: list[Any] = []
        self._sent = 0

    def expect(self) -> int:
        """Reserve the next position; returns it."""
        self._answers.append(self._PENDING)
        return len(self._answers) - 1

    def settle(self, position: int, answer: dict[str, Any] | None) -> None:
        """The answer at ``position`` (None: nothing to send); sends every answer now known
        in order."""
        self._answers[position] = answer
        while self._sent < len(self._answers) and self._answers[self._sent] is not self._PENDING:
            if self._answers[self._sent] is not None:
                self.live.send(self._answers[self._sent])
            self._sent += 1


def _admit(
    limiter: RateLimiter,
    parse: Callable[[str | bytes], FrameT],
    raw: str | bytes,
    who: str,
) -> tuple[FrameT | None, dict[str, Any] | None]:
    """``(frame, None)``, or ``(None, error frame)`` for a refused or invalid one."""
    if not limiter.allow():
        return None, error_frame(limiter.refusal(peek_client_id(raw)))
    try:
        return parse(raw), None
    except HandoffError as error:  # an invalid frame (with its id, if readable)
        return None, error_frame(error)
    except Exception:
        logger.exception("A frame of %s could not be read", who)
        return None, error_frame(InternalError("the server failed on this frame; send it again"))


async def _serve_frame(
    frame: FrameT,
    handle: Callable[[FrameT], Awaitable[dict[str, Any] | None]],
    who: str,
) -> dict[str, Any] | None:
    """The answer to a valid frame: ``handle``'s, or the error it raised."""
    client_id: str | None = getattr(frame, "client_id", None)
    try:
        return await handle(frame)
    except HandoffError as error:  # a refusal
        if not isinstance(error, (ProtocolError, ActionError)):
            logger.warning("A frame of %s was refused: %r", who, error, exc_info=error)
        return error_frame(error, client_id)
    except Exception:
        logger.exception("A frame of %s failed", who)
        failed = InternalError("the server failed on this frame; send it again")
        return error_frame(failed, client_id)
