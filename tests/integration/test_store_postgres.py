"""The store and its migrations on PostgreSQL (skipped, with the reason, where there is none)."""

from __future__ import annotations

import asyncio

from handoff.core.routing import AgentClaimed, HandoffReason, HandoffRequested, transition
from handoff.storage.migrate import upgrade
from handoff.storage.records import ConcurrentUpdate, NewEvent
from handoff.storage.store import Store


async def test_store_on_postgresql(postgres_url: str) -> None:
    upgrade(postgres_url)
    upgrade(postgres_url)
    store = await Store.open(postgres_url)
    try:
        agent = await store.add_agent("dana", "Dana", "hash", "agent")
        assert (await store.agent_by_username("dana")) == agent

        before = await store.conversation("c1")
        queued, _ = transition(before.conversation, HandoffRequested(HandoffReason.USER_ASKED))
        stored, events = await store.save_conversation(
            before, queued, new_handoff=True, events=[NewEvent("user", "handoff", {"x": 1}, "c1")]
        )
        assert stored.conversation.state.value == "queued"
        assert events[0].id > 0

        claimed, _ = transition(stored.conversation, AgentClaimed(agent.id))
        results = await asyncio.gather(
            store.save_conversation(stored, claimed, assignment=(agent.id, None)),
            store.save_conversation(stored, claimed, assignment=(agent.id, None)),
            return_exceptions=True,
        )
        assert sorted(type(r).__name__ for r in results) == ["ConcurrentUpdate", "tuple"]
        assert any(isinstance(r, ConcurrentUpdate) for r in results)

        first, created, _ = await store.add_message("c1", "user", "hi", client_message_id="m1")
        again, created_again, _ = await store.add_message(
            "c1", "user", "hi", client_message_id="m1"
        )
        assert (created, created_again) == (True, False)
        assert again.id == first.id
        _, _, relayed = await store.add_message(
            "c1",
            "agent",
            "hello",
            handoff_id=stored.handoff_id,
            events_for=lambda m: [NewEvent("agents", "echo", {"text": m.text}, "c1")],
            first_reply_of=stored.handoff_id,
        )
        assert [e.payload for e in relayed] == [{"text": "hello"}]
        assert [e.type for e in await store.user_events_after("c1", 0)] == ["handoff"]
    finally:
        await store.close()
