"""Our tracker store against Rasa's own: same table, same rows, same sessions (no server)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from rasa.core.tracker_store import SQLTrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import (
    ActionExecuted,
    BotUttered,
    ConversationPaused,
    Event,
    SessionStarted,
    UserUttered,
)
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.shared.utils.common import all_subclasses

from handoff.assistant import tracker_store
from handoff.assistant.tracker_store import ThreadedSQLTrackerStore, cache_event_types

DOMAIN = Domain.empty()

# Rasa's own SQLTrackerStore (the reference here) uses SQLAlchemy APIs deprecated in 1.4.
pytestmark = pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SADeprecationWarning")


def two_sessions(sender_id: str) -> DialogueStateTracker:
    """A tracker whose latest session starts at its second ``SessionStarted``."""
    return DialogueStateTracker.from_events(
        sender_id,
        [
            ActionExecuted("action_session_start", timestamp=1),
            SessionStarted(timestamp=2),
            UserUttered("hello", {"name": "greet", "confidence": 0.9}, timestamp=3),
            BotUttered("hi", timestamp=4),
            SessionStarted(timestamp=10),
            UserUttered("a person please", {"name": "human", "confidence": 0.8}, timestamp=11),
            ConversationPaused(timestamp=12),
        ],
    )


def rasa_store(path: Path) -> SQLTrackerStore:
    return SQLTrackerStore(DOMAIN, dialect="sqlite", db=str(path))


@pytest.fixture
def ours(tmp_path: Path):  # type: ignore[no-untyped-def]
    store = ThreadedSQLTrackerStore(f"sqlite:///{tmp_path / 'trackers.db'}", DOMAIN)
    yield store
    store.engine.dispose()


def event_types(tracker: DialogueStateTracker | None) -> list[str]:
    assert tracker is not None
    return [event.type_name for event in tracker.events]


async def write_a_conversation(store: SQLTrackerStore) -> None:
    """Two sessions, then an agent's answer appended to the latest one, then a no-op save."""
    await store.save(two_sessions("c1"))
    tracker = await store.retrieve("c1")
    assert tracker is not None
    tracker.update(BotUttered("an agent's answer", timestamp=13))
    await store.save(tracker)
    await store.save(tracker)


def rows(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(
            "SELECT id, sender_id, type_name, timestamp, intent_name, action_name, data "
            "FROM events ORDER BY id"
        ).fetchall()


async def test_we_write_the_rows_rasa_writes(ours: ThreadedSQLTrackerStore, tmp_path: Path) -> None:
    await write_a_conversation(ours)
    await write_a_conversation(rasa_store(tmp_path / "rasa.db"))
    written = rows(tmp_path / "trackers.db")
    assert written == rows(tmp_path / "rasa.db")
    assert [row[2] for row in written] == [
        "action",
        "session_started",
        "user",
        "bot",
        "session_started",
        "user",
        "pause",
        "bot",
    ]
    rasa = rasa_store(tmp_path / "trackers.db")
    assert event_types(await rasa.retrieve("c1")) == ["session_started", "user", "pause", "bot"]


async def test_we_read_what_rasa_writes(ours: ThreadedSQLTrackerStore, tmp_path: Path) -> None:
    rasa = rasa_store(tmp_path / "trackers.db")
    await rasa.save(two_sessions("c2"))
    assert event_types(await ours.retrieve("c2")) == ["session_started", "user", "pause"]
    full = await ours.retrieve_full_tracker("c2")
    assert full is not None and list(full.events) == list(two_sessions("c2").events)
    assert await ours.retrieve("nobody") is None


def test_cached_event_types_resolve_as_rasa_does() -> None:
    cache_event_types()
    cache_event_types()  # idempotent: still one cache, not a cache of a cache
    uncached = tracker_store._resolve_event_type
    assert uncached is not None and uncached is not Event.resolve_by_type
    for cls in all_subclasses(Event):
        assert Event.resolve_by_type(cls.type_name) is uncached(cls.type_name)
        assert Event.resolve_by_type(cls.type_name) is uncached(cls.type_name)  # from cache
    assert Event.resolve_by_type("no_such_event", default=UserUttered) is UserUttered
    assert "no_such_event" not in tracker_store._EVENT_TYPES
    with pytest.raises(ValueError, match="Unknown event name"):
        Event.resolve_by_type("no_such_event")


async def test_saved_events_reach_rasas_event_broker_once_each_in_order(tmp_path: Path) -> None:
    from rasa.core.brokers.sql import SQLEventBroker

    broker = SQLEventBroker(db=str(tmp_path / "events.db"))
    store = ThreadedSQLTrackerStore(
        f"sqlite:///{tmp_path / 'trackers.db'}", DOMAIN, event_broker=broker
    )
    try:
        await write_a_conversation(store)  # three saves, the last one adds nothing
    finally:
        store.engine.dispose()
    with sqlite3.connect(tmp_path / "events.db") as db:
        published = [
            (sender, json.loads(data))
            for sender, data in db.execute("SELECT sender_id, data FROM events ORDER BY id")
        ]
    stored = [json.loads(str(row[6])) for row in rows(tmp_path / "trackers.db")]
    assert [body for _, body in published] == [{"sender_id": "c1", **data} for data in stored]
    assert {sender for sender, _ in published} == {"c1"}
