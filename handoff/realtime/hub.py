"""In-process fan-out of stored events to live connections.

Events are written to the database first (they carry their id from there); the hub only
wakes up the connections that should see them. A connection that misses a wake-up (e.g. it
was reconnecting) catches up from the database by event id, so the hub may drop nothing
that matters. A Redis-backed hub with the same interface lets several processes share it.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from handoff.storage.records import Event

__all__ = ["CONTROL_AUDIENCE", "Hub", "Subscription", "ephemeral_event", "topics_of"]

SUBSCRIBER_QUEUE_LIMIT = 10_000
"""Events buffered for one slow connection before it is told to resync."""
CONTROL_AUDIENCE = "control"
"""Audience and topic of ephemeral events for the server processes themselves, not for
clients (e.g. close an agent's sockets: :mod:`handoff.realtime.agent_connections`)."""


def ephemeral_event(
    audience: str,
    type_: str,
    agent_id: int | None,
    conversation_id: str | None,
    **payload: Any,
) -> Event:
    """An event delivered live but never stored (id 0: no cursor, no replay), e.g. typing."""
    if conversation_id is not None:
        payload["conversation_id"] = conversation_id
    return Event(0, audience, conversation_id, agent_id, type_, payload, time.time())


def topics_of(event: Event) -> list[str]:
    """Who should see ``event``: ``user:<conversation>``, ``agent:<id>``, ``agents`` or
    ``control``."""
    if event.audience == "user":
        return [f"user:{event.conversation_id}"]
    if event.audience == CONTROL_AUDIENCE:
        return [CONTROL_AUDIENCE]
    if event.agent_id is not None:
        return [f"agent:{event.agent_id}"]
    return ["agents"]


class Subscription:
    """Events for a set of topics, in publication order. ``overflowed`` means some were
    dropped because the consumer fell behind: it must catch up from the database."""

    def __init__(self, hub: Hub, topics: Iterable[str]) -> None:
        self.hub = hub
        self.topics = frozenset(topics)
        self.queue: asyncio.Queue[Event] = asyncio.Queue(SUBSCRIBER_QUEUE_LIMIT)
        self.overflowed = False
        self.wake: asyncio.Event | None = None
        """Set on every offer, if given: a consumer that waits on several sources at once
        waits on this one event instead of on each queue."""

    def offer(self, event: Event) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True
        if self.wake is not None:
            self.wake.set()

    async def get(self) -> Event:
        return await self.queue.get()

    def drain(self) -> list[Event]:
        """The events queued right now, without waiting."""
        events = []
        while not self.queue.empty():
            events.append(self.queue.get_nowait())
        return events

    def close(self) -> None:
        self.hub.unsubscribe(self)

    def add_topic(self, topic: str) -> None:
        self.hub.unsubscribe(self)
        self.topics = self.topics | {topic}
        self.hub.resubscribe(self)


class Hub:
    def __init__(self) -> None:
        self._subscribers: dict[str, set[Subscription]] = defaultdict(set)

    def subscribe(self, topics: Iterable[str]) -> Subscription:
        subscription = Subscription(self, topics)
        self.resubscribe(subscription)
        return subscription

    def resubscribe(self, subscription: Subscription) -> None:
        for topic in subscription.topics:
            self._subscribers[topic].add(subscription)

    def unsubscribe(self, subscription: Subscription) -> None:
        for topic in subscription.topics:
            self._subscribers[topic].discard(subscription)
            if not self._subscribers[topic]:
                del self._subscribers[topic]

    def publish(self, events: Iterable[Event]) -> None:
        for event in events:
            delivered: set[int] = set()
            for topic in topics_of(event):
                for subscription in self._subscribers.get(topic, ()):
                    if id(subscription) not in delivered:
                        delivered.add(id(subscription))
                        subscription.offer(event)
