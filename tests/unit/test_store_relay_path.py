"""The relay path's statements on the inline SQLite connection (SQL text on the driver's
cursor) read and write exactly what the SQLAlchemy statements of the other paths do."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from handoff.core.routing import AgentClaimed, HandoffReason, HandoffRequested, transition
from handoff.storage import schema
from handoff.storage.migrate import upgrade
from handoff.storage.records import Message, NewEvent
from handoff.storage.store import Store

RANKING = [{"name": "café_opening_hours", "confidence": 0.61}, {"name": "greet", "confidence": 0.2}]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    url = f"sqlite:///{tmp_path / 'handoff.db'}"
    upgrade(url)
    opened = await Store.open(url)
    yield opened
    await opened.close()


async def _assigned(store: Store, conversation_id: str) -> int:
    """An agent, and ``conversation_id`` handed off and claimed by them; the handoff id."""
    agent = await store.add_agent("dana", "Dana", "hash", "agent")
    before = await store.conversation(conversation_id)
    queued, _ = transition(before.conversation, HandoffRequested(HandoffReason.USER_ASKED))
    stored, _ = await store.save_conversation(before, queued, new_handoff=True)
    claimed, _ = transition(stored.conversation, AgentClaimed(agent.id))
    stored, _ = await store.save_conversation(stored, claimed, assignment=(agent.id, None))
    assert stored.handoff_id is not None
    return stored.handoff_id


async def test_a_message_and_its_events_are_written_together(store: Store) -> None:
    seen: list[Message] = []

    def relay(message: Message) -> list[NewEvent]:
        seen.append(message)
        return [NewEvent("agents", "user_message", {"text": message.text}, "c1", 7)]

    message, created, events = await store.add_message(
        "c1",
        "user",
        "Wann öffnet ihr?",
        client_message_id="m1",
        events=[NewEvent("user", "ack", {"id": "m1"}, "c1")],
        events_for=relay,
    )
    assert created and seen == [message]
    assert [(e.type, e.payload) for e in events] == [
        ("ack", {"id": "m1", "message_id": message.id}),
        ("user_message", {"text": "Wann öffnet ihr?"}),
    ]
    assert events[0].id < events[1].id
    # Read back through SQLAlchemy (JSON decoded by its type): the same rows.
    assert await store.user_events_after("c1", 0) == [events[0]]
    assert await store.agent_events_after(7, 0) == [events[1]]
    assert await store.message(message.id) == message


async def test_a_duplicate_client_id_returns_the_stored_message_and_writes_nothing(
    store: Store,
) -> None:
    first, _, _ = await store.add_message("c1", "user", "hi", client_message_id="m1")
    await store.set_intent_ranking(first.id, RANKING)
    called: list[Message] = []

    def record(message: Message) -> list[NewEvent]:
        called.append(message)
        return []

    again, created, events = await store.add_message(
        "c1",
        "user",
        "hi",
        client_message_id="m1",
        events=[NewEvent("user", "ack", {"id": "m1"}, "c1")],
        events_for=record,
    )
    assert (created, events, called) == (False, [], [])
    assert again == await store.message(first.id)
    assert again.intent_ranking == RANKING
    assert await store.user_events_after("c1", 0) == []


async def test_one_client_id_in_one_batch_is_stored_once_and_only_per_conversation_and_sender(
    store: Store,
) -> None:
    results = await asyncio.gather(
        store.add_message("c1", "user", "hi", client_message_id="m1"),
        store.add_message("c1", "user", "hi again", client_message_id="m1"),
        store.add_message("c1", "agent", "hello", client_message_id="m1"),
        store.add_message("c2", "user", "hi", client_message_id="m1"),
        store.add_message("c1", "bot", "one", client_message_id=None),
        store.add_message("c1", "bot", "two", client_message_id=None),
    )
    assert [created for _, created, _ in results] == [True, False, True, True, True, True]
    assert results[1][0] == results[0][0]  # the resend gets the first message, text and all
    assert len({message.id for message, _, _ in results}) == 5


async def test_a_message_without_a_ranking_reads_back_as_none(store: Store) -> None:
    message, _, _ = await store.add_message("c1", "bot", "Hello!", client_message_id=None)
    stored = await store.message(message.id)
    assert stored is not None and stored.intent_ranking is None
    async with store.engine.connect() as db:
        raw = (
            await db.execute(
                sa.text("SELECT intent_ranking FROM messages WHERE id = :id"), {"id": message.id}
            )
        ).scalar()
    assert raw == "null"  # as SQLAlchemy's JSON type writes None


async def test_the_first_agent_reply_of_a_handoff_is_recorded_once(store: Store) -> None:
    handoff_id = await _assigned(store, "c1")
    first, _, _ = await store.add_message(
        "c1", "agent", "Hi, Dana here", handoff_id=handoff_id, first_reply_of=handoff_id
    )
    await store.add_message(
        "c1", "agent", "How can I help?", handoff_id=handoff_id, first_reply_of=handoff_id
    )
    async with store.engine.connect() as db:
        at = (
            await db.execute(
                sa.select(schema.handoffs.c.first_agent_reply_at).where(
                    schema.handoffs.c.id == handoff_id
                )
            )
        ).scalar()
    assert at == first.created_at


async def test_the_conversation_read_matches_the_one_written(store: Store) -> None:
    await _assigned(store, "c1")
    stored = await store.conversation("c1")
    (listed,) = await store.assigned_conversations(stored.conversation.agent_id or 0)
    assert stored == listed
    assert (await store.conversation("nobody")).version == 0
