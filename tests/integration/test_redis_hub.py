"""The Redis hub, presence and conversation locks, as two processes would use them (two
instances on one Redis). Skipped, with the reason, where there is no Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from handoff.realtime.hub import ephemeral_event
from handoff.realtime.locks import RedisConversationLocks
from handoff.realtime.redis_hub import RedisHub, RedisPresence, connect
from handoff.storage.records import Event
from tests.services import REDIS_URL, redis_available


@pytest.fixture
def namespace() -> str:
    problem = redis_available()
    if problem:
        pytest.skip(problem)
    return f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def redis_client(namespace: str) -> AsyncIterator[Callable[[], Any]]:
    """Makes Redis clients (one per simulated process); closes them afterwards."""
    clients: list[Any] = []

    def make() -> Any:
        clients.append(connect(REDIS_URL))
        return clients[-1]

    yield make
    for client in clients:
        await client.close(close_connection_pool=True)


async def test_events_published_on_one_hub_reach_subscribers_of_the_other(
    namespace: str, redis_client: Callable[[], Any]
) -> None:
    one, other = RedisHub(redis_client(), namespace), RedisHub(redis_client(), namespace)
    await one.start()
    await other.start()
    try:
        remote = other.subscribe(["user:c1"])
        local = one.subscribe(["user:c1"])
        unrelated = other.subscribe(["user:c2"])
        event = Event(7, "user", "c1", None, "agent", {"text": "hi"}, 1.0)
        one.publish([event, ephemeral_event("user", "typing", None, "c1", typing=True)])
        assert await asyncio.wait_for(local.get(), 1) == event  # local delivery is immediate
        assert await asyncio.wait_for(remote.get(), 5) == event
        typing = await asyncio.wait_for(remote.get(), 5)
        assert (typing.type, typing.id, typing.payload["typing"]) == ("typing", 0, True)
        assert unrelated.drain() == []
        assert local.drain() != []  # the typing event, once: not echoed back through Redis
        await asyncio.sleep(0.2)
        assert local.drain() == []
    finally:
        await one.close()
        await other.close()


async def test_presence_is_merged_across_processes(
    namespace: str, redis_client: Callable[[], Any]
) -> None:
    one, other = RedisPresence(redis_client(), namespace), RedisPresence(redis_client(), namespace)
    await one.start()
    await other.start()
    try:
        one.connected(1, "Ana")
        other.connected(1, "Ana")
        other.connected(2, "Bo")
        other.set_status(2, "away")
        for _ in range(50):
            await asyncio.sleep(0.1)
            if len(one.snapshot()) == 2:
                break
        merged = {p.agent_id: p for p in one.snapshot()}
        assert merged[1].connections == 2 and merged[1].status == "online"
        assert merged[2].status == "away"
        assert one.online_count() == 1
    finally:
        await other.close()  # removes its key: its agents go away for the others
        await asyncio.sleep(0.1)
        await one._sync()
        assert [p.agent_id for p in one.snapshot()] == [1]
        await one.close()


async def test_a_conversation_lock_excludes_other_processes(
    namespace: str, redis_client: Callable[[], Any]
) -> None:
    one = RedisConversationLocks(redis_client(), namespace)
    other = RedisConversationLocks(redis_client(), namespace)
    order: list[str] = []

    async def hold(locks: RedisConversationLocks, name: str) -> None:
        async with locks.hold("c1"):
            order.append(f"{name} in")
            await asyncio.sleep(0.2)
            order.append(f"{name} out")

    await asyncio.gather(hold(one, "one"), hold(other, "other"))
    assert order in (
        ["one in", "one out", "other in", "other out"],
        ["other in", "other out", "one in", "one out"],
    )
