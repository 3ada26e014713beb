"""The hub and agent presence shared by several server processes through Redis.

Events are stored in the database before they are published, so Redis pub/sub only has to
wake connections up: a process that misses a message (Redis restarting, a slow subscriber)
delays delivery until the next event or reconnect, it loses nothing (clients and live
connections read stored events from the database by id, see :mod:`handoff.web.live`).
Presence: each process writes its own agents to a key with a time-to-live and reads the
others' every few seconds, so a killed process's agents disappear after the TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from handoff.realtime.hub import Hub
from handoff.realtime.presence import AgentPresence, Presence
from handoff.storage.records import Event

__all__ = ["RedisHub", "RedisPresence", "connect"]

logger = logging.getLogger(__name__)

RETRY_DELAY_S = 1.0
PRESENCE_TTL_S = 15
PRESENCE_REFRESH_S = 2.0


def connect(url: str) -> Any:
    """An asyncio Redis client (strings in, strings out)."""
    import redis.asyncio

    return redis.asyncio.from_url(url, decode_responses=True)


class RedisHub(Hub):
    """Local fan-out plus Redis pub/sub to the other processes. :meth:`start` in the running
    loop, :meth:`close` at shutdown."""

    def __init__(self, redis: Any, namespace: str) -> None:
        super().__init__()
        self.redis = redis
        self.channel = f"{namespace}:events"
        self.origin = uuid.uuid4().hex
        self._outbox: asyncio.Queue[str] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        subscribed = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._publish_loop()),
            asyncio.create_task(self._listen_loop(subscribed)),
        ]
        await asyncio.wait_for(subscribed.wait(), timeout=10)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def publish(self, events: Iterable[Event]) -> None:
        batch = list(events)
        super().publish(batch)
        if batch:
            message = {"origin": self.origin, "events": [asdict(event) for event in batch]}
            self._outbox.put_nowait(json.dumps(message, ensure_ascii=False))

    async def _publish_loop(self) -> None:
        while True:
            message = await self._outbox.get()
            while True:
                try:
                    await self.redis.publish(self.channel, message)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception:
                    logger.exception("Could not publish to Redis; retrying")
                    await asyncio.sleep(RETRY_DELAY_S)

    async def _listen_loop(self, subscribed: asyncio.Event) -> None:
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                subscribed.set()
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self._receive(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("Lost the Redis subscription; resubscribing")
                await asyncio.sleep(RETRY_DELAY_S)
            finally:
                await pubsub.close()

    def _receive(self, data: str | bytes) -> None:
        try:
            message = json.loads(data)
            if message["origin"] == self.origin:
                return
            events = [Event(**event) for event in message["events"]]
        except (ValueError, KeyError, TypeError):
            logger.warning("Ignored a malformed hub message from Redis")
            return
        super().publish(events)


class RedisPresence(Presence):
    """This process's agents, plus the other processes' as last read from Redis."""

    def __init__(self, redis: Any, namespace: str) -> None:
        super().__init__()
        self.redis = redis
        self.prefix = f"{namespace}:presence:"
        self.key = f"{self.prefix}{uuid.uuid4().hex}"
        self._remote: list[AgentPresence] = []
        self._changed = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._sync()
        self._task = asyncio.create_task(self._loop())

    async def close(self) -> None:
        if self._task is not None:
            # Let a sync in flight finish (cancelling mid-command strands its connection).
            self._stopping = True
            self._changed.set()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._task, timeout=5)
        try:
            await self.redis.delete(self.key)
        except Exception:
            logger.warning("Could not remove this process's presence from Redis")

    def connected(self, agent_id: int, display_name: str) -> None:
        super().connected(agent_id, display_name)
        self._changed.set()

    def disconnected(self, agent_id: int) -> None:
        super().disconnected(agent_id)
        self._changed.set()

    def set_status(self, agent_id: int, status: str) -> None:
        super().set_status(agent_id, status)
        self._changed.set()

    def online_count(self) -> int:
        return sum(1 for agent in self.snapshot() if agent.status == "online")

    def snapshot(self) -> list[AgentPresence]:
        merged: dict[int, AgentPresence] = {}
        for agent in [*super().snapshot(), *self._remote]:
            known = merged.get(agent.agent_id)
            if known is None:
                merged[agent.agent_id] = agent
            else:
                status = "online" if "online" in (known.status, agent.status) else agent.status
                merged[agent.agent_id] = AgentPresence(
                    agent.agent_id,
                    agent.display_name,
                    status,
                    known.connections + agent.connections,
                )
        return [merged[agent_id] for agent_id in sorted(merged)]

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=PRESENCE_REFRESH_S)
            if self._stopping:
                return
            self._changed.clear()
            try:
                await self._sync()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("Could not share presence through Redis")

    async def _sync(self) -> None:
        """Write ours (with a TTL), read the others'."""
        mine = [asdict(agent) for agent in super().snapshot()]
        await self.redis.set(
            self.key, json.dumps({"at": time.time(), "agents": mine}), ex=PRESENCE_TTL_S
        )
        keys = [key async for key in self.redis.scan_iter(match=f"{self.prefix}*")]
        others = [
            key for key in keys if (key.decode() if isinstance(key, bytes) else key) != self.key
        ]
        remote: list[AgentPresence] = []
        for raw in await self.redis.mget(others) if others else []:
            if raw:
                remote += [AgentPresence(**agent) for agent in json.loads(raw)["agents"]]
        self._remote = remote
