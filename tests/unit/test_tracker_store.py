"""Our tracker store against Rasa's own: same table, same rows, same sessions (no server)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
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


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()  # beyond 64 bits too
    | st.floats()  # NaN and the infinities too: json.dumps writes them
    | st.text(),  # lone surrogates too
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


@given(value=JSON_VALUES)
@settings(max_examples=300, deadline=None)
def test_a_stored_event_reads_back_as_json_loads_reads_it(value: object) -> None:
    data = json.dumps({"event": "slot", "value": value})
    # Compared as json.dumps writes them: NaN != NaN, and 1 == 1.0 == True in Python.
    expected = json.loads(data)
    decoded = tracker_store.decode_event(data)
    assert json.dumps(decoded) == json.dumps(expected)
    assert _types(decoded) == _types(expected)


def _types(value: object) -> object:
    if isinstance(value, dict):
        return {key: _types(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_types(item) for item in value]
    return type(value).__name__


@pytest.mark.parametrize(
    "value",
    [
        2**64,  # orjson would read it as a float
        -(2**63) - 1,
        10**30,
        float("nan"),
        float("inf"),
        "\ud800",
        "order 12345678901234567890 in a string",  # 19 digits in a string: json, same result
    ],
)
def test_what_orjson_reads_otherwise_reads_as_json_does(value: object) -> None:
    data = json.dumps({"value": value})
    assert json.dumps(tracker_store.decode_event(data)) == json.dumps(json.loads(data))
    assert type(tracker_store.decode_event(data)["value"]) is type(value)


# The trackers a worker keeps between messages -------------------------------------------------


def a_handoff(sender_id: str) -> DialogueStateTracker:
    return DialogueStateTracker.from_events(
        sender_id,
        [
            ActionExecuted("action_session_start", timestamp=1),
            SessionStarted(timestamp=2),
            UserUttered("a person please", {"name": "human", "confidence": 0.8}, timestamp=3),
            ConversationPaused(timestamp=4),
        ],
    )


async def kept_handoff(store: ThreadedSQLTrackerStore, sender_id: str) -> DialogueStateTracker:
    """A handoff whose session is stored, read back, answered once and saved: kept."""
    await store.save(a_handoff(sender_id))  # starts a session: not kept (see below)
    tracker = await store.retrieve(sender_id)
    assert tracker is not None
    tracker.update(BotUttered("an agent's answer", timestamp=5))
    await store.save(tracker)
    return tracker


async def test_the_next_message_takes_the_tracker_saved_last(
    ours: ThreadedSQLTrackerStore,
) -> None:
    saved = await kept_handoff(ours, "c3")
    assert await ours.retrieve("c3") is saved  # not read back
    again = await ours.retrieve("c3")  # handed out once, not saved since: read back
    assert again is not None and again is not saved
    assert list(again.events) == list(saved.events)
    again.update(BotUttered("another answer", timestamp=6))
    await ours.save(again)
    assert await ours.retrieve("c3") is again


async def test_events_stored_by_someone_else_are_read_back(
    ours: ThreadedSQLTrackerStore, tmp_path: Path
) -> None:
    await kept_handoff(ours, "c4")
    elsewhere = rasa_store(tmp_path / "trackers.db")  # e.g. another server's worker
    theirs = await elsewhere.retrieve("c4")
    assert theirs is not None
    theirs.update(BotUttered("answered elsewhere", timestamp=6))
    await elsewhere.save(theirs)
    mine = await ours.retrieve("c4")
    assert event_types(mine) == ["session_started", "user", "pause", "bot", "bot"]


async def test_a_tracker_changed_without_saving_is_read_back(
    ours: ThreadedSQLTrackerStore,
) -> None:
    saved = await kept_handoff(ours, "c5")
    saved.update(BotUttered("a preview, never saved", timestamp=6))
    again = await ours.retrieve("c5")
    assert again is not saved
    assert event_types(again) == ["session_started", "user", "pause", "bot"]


async def test_a_save_that_starts_a_session_is_not_kept(ours: ThreadedSQLTrackerStore) -> None:
    tracker = await kept_handoff(ours, "c6")
    assert await ours.retrieve("c6") is tracker
    tracker.update(ActionExecuted("action_session_start", timestamp=100))
    tracker.update(SessionStarted(timestamp=101))
    await ours.save(tracker)
    again = await ours.retrieve("c6")
    assert again is not tracker
    assert event_types(again) == ["session_started"]  # only the new session, as Rasa reads it


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_trackers_kept_stay_within_their_event_budget(tmp_path: Path) -> None:
    clock = Clock()
    cache = tracker_store.TrackerCache(max_events=10, idle_s=60, clock=clock)
    store = ThreadedSQLTrackerStore(f"sqlite:///{tmp_path / 't.db'}", DOMAIN, cache=cache)
    try:
        a, b = await kept_handoff(store, "a"), await kept_handoff(store, "b")  # 4 events each
        clock.now = 30
        c = await kept_handoff(store, "c")  # does not fit beside a and b, both still going on
        assert len(cache) == 2
        assert await store.retrieve("c") is not c
        clock.now = 61  # a and b idle for more than a minute: the oldest, a, makes room
        c = await kept_handoff(store, "c2")
        assert len(cache) == 2
        assert await store.retrieve("a") is not a
        assert await store.retrieve("b") is b
        assert await store.retrieve("c2") is c
        assert len(cache) == 0
        tracker = await store.retrieve("b")
        assert tracker is not None
        for turn in range(7):  # 11 events: more than all may hold, never kept
            tracker.update(BotUttered(f"answer {turn}", timestamp=10 + turn))
        await store.save(tracker)
        assert len(cache) == 0
    finally:
        store.engine.dispose()


def test_more_conversations_than_fit_keep_those_kept_first() -> None:
    """Round robin over more conversations than fit (each message of each conversation in
    turn): the first ones stay kept and are taken every time; the others never are."""
    cache = tracker_store.TrackerCache(max_events=12, idle_s=60, clock=Clock())
    trackers = [a_handoff(f"r{number}") for number in range(5)]  # 4 events each: 3 fit
    taken = []
    for _ in range(4):
        for tracker in trackers:
            taken.append(cache.take(tracker.sender_id) is not None)
            cache.keep(tracker, last_id=1)
    assert taken[5:] == [True, True, True, False, False] * 3


async def converse(store: ThreadedSQLTrackerStore) -> tuple[list[list[dict[str, object]]], int]:
    """Six messages, each after a retrieve, one of them starting a new session: every tracker
    retrieved, as dicts, and how many retrieves gave the tracker saved before."""
    seen = []
    reused = 0
    tracker = a_handoff("e")
    await store.save(tracker)
    for turn in range(6):
        previous, tracker = tracker, await store.retrieve("e")
        assert tracker is not None
        reused += tracker is previous
        seen.append([event.as_dict() for event in tracker.events])
        tracker.update(UserUttered(f"message {turn}", timestamp=10 + 2 * turn))
        if turn == 3:
            tracker.update(SessionStarted(timestamp=11 + 2 * turn))
        else:
            tracker.update(BotUttered(f"answer {turn}", timestamp=11 + 2 * turn))
        await store.save(tracker)
    final = await store.retrieve("e")
    assert final is not None
    reused += final is tracker
    return [*seen, [event.as_dict() for event in final.events]], reused


async def test_a_conversation_reads_and_writes_the_same_with_trackers_kept_or_not(
    tmp_path: Path,
) -> None:
    """Rasa's way (every tracker read back) and ours give the same trackers and rows."""
    results = []
    for name, cache in [("read-back", tracker_store.TrackerCache(0)), ("kept", None)]:
        path = tmp_path / f"{name}.db"
        store = ThreadedSQLTrackerStore(f"sqlite:///{path}", DOMAIN, cache=cache)
        try:
            seen, reused = await converse(store)
            results.append((seen, rows(path)))
            # Kept: every save but the first and the one starting a session (read back after).
            assert reused == (0 if name == "read-back" else 5)
        finally:
            store.engine.dispose()
    (read_back, read_back_rows), (kept, kept_rows) = results
    assert kept == read_back
    assert kept_rows == read_back_rows
    # The last session: started in the fourth turn, then two messages and answers.
    assert [event["event"] for event in kept[-1]] == [
        "session_started",
        "user",
        "bot",
        "user",
        "bot",
    ]
