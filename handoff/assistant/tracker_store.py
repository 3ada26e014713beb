"""Rasa's SQL tracker store, made safe to use from the server's event loop.

Rasa's ``SQLTrackerStore`` declares ``async`` methods but runs blocking database calls inside
them, and Rasa wraps every tracker store in ``FailSafeTrackerStore``, which silently falls back
to memory on a database error (conversations lost). :class:`ThreadedSQLTrackerStore` runs the
database work in a worker thread, and :func:`unwrap_fail_safe` removes the silent fallback so
that storage errors surface to the caller.

Loading and saving a tracker is most of Rasa's work for a relayed message, so both are made
cheaper than Rasa's own: prebuilt SQL statements (Rasa builds its ORM queries anew on each
call, and SQLAlchemy then computes their cache keys every time);
:func:`cache_event_types`, which memoises Rasa's lookup of an event class by its type name
(Rasa walks all subclasses of ``Event`` for every event it reads); and :func:`decode_event`,
which reads a stored event with orjson instead of ``json``.

Above all, a tracker is not read back for each message: Rasa reads every event of the
conversation's session, decodes and replays them, for every message, so a long handoff costs
its worker more with each message (3 ms at 300 events). :class:`TrackerCache` keeps the
trackers this process saved, and the next message of the conversation takes its tracker from
there when the database holds nothing newer for it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import orjson
import sqlalchemy as sa
from rasa.core.brokers.broker import EventBroker
from rasa.core.tracker_store import FailSafeTrackerStore, SQLTrackerStore, TrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import Event, SessionStarted
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.shared.nlu.constants import INTENT_NAME_KEY
from sqlalchemy.engine import Engine, make_url

from handoff.assistant.tracker_database import tracker_database_url
from handoff.storage.migrate import MIGRATION_LOCK

__all__ = [
    "TRACKER_CACHE_EVENTS",
    "TRACKER_IDLE_S",
    "ThreadedSQLTrackerStore",
    "TrackerCache",
    "cache_event_types",
    "create_engine",
    "decode_event",
    "tracker_database_url",
    "unwrap_fail_safe",
]

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 10_000
"""How long a SQLite writer waits for another one before failing ("database is locked")."""


def create_engine(database_url: str) -> Engine:
    """Create a synchronous engine; for SQLite: the folder, WAL mode and a busy timeout."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True)

    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    # One connection shared in turn by the worker threads: see handoff.storage.store for why.
    engine = sa.create_engine(
        url,
        connect_args={"check_same_thread": False},
        poolclass=sa.pool.QueuePool,
        pool_size=1,
        max_overflow=0,
    )

    @sa.event.listens_for(engine, "connect")
    def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")  # as our store: shorter write locks
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    return engine


_DIGITS_AS_ZEROS = bytes(48 if 48 <= byte <= 57 else 32 for byte in range(256))
"""A ``bytes.translate`` table: every digit to ``0``, every other byte to a space."""
_NINETEEN_DIGITS = b"0" * 19


def decode_event(data: str) -> dict[str, Any]:
    """A stored event (a row's ``data``) as ``json.loads`` reads it, about twice as fast.

    orjson decodes it unless it holds a run of 19 digits: orjson reads an integer beyond 64
    bits (a custom action's slot may hold one) as a float, where ``json`` keeps it exact. What
    orjson refuses and ``json`` reads (``NaN``, ``Infinity``, an escaped lone surrogate, all of
    which Rasa's ``json.dumps`` may write) goes to ``json`` too."""
    raw = data.encode("utf-8", "surrogatepass")
    if _NINETEEN_DIGITS in raw.translate(_DIGITS_AS_ZEROS):
        return cast(dict[str, Any], json.loads(data))
    try:
        return cast(dict[str, Any], orjson.loads(raw))
    except orjson.JSONDecodeError:
        return cast(dict[str, Any], json.loads(data))


TRACKER_CACHE_EVENTS = 50_000
"""How many events the trackers a worker keeps between messages may hold in all (about 2.7 KiB
of memory each as Python objects: 130 MiB at most; 500 conversations of 100 events)."""

TRACKER_IDLE_S = 60.0
"""A kept tracker saved longer ago than this may make room for another one."""


@dataclass
class _Kept:
    tracker: DialogueStateTracker
    events: int
    """``len(tracker.events)`` when saved: the events of its latest session, all stored."""
    last_id: int
    """The largest id among the conversation's stored events, right after the save."""
    saved_at: float
    """``time.monotonic()`` of the save."""


class TrackerCache:
    """The trackers saved last, each kept until its conversation's next retrieve, within
    ``max_events`` events in all.

    :meth:`take` hands a tracker out and forgets it: whoever retrieved it may change it
    without saving (a preview, a failed turn), so it comes back only through :meth:`keep`,
    when saved. When a tracker would not fit, those saved more than ``idle_s`` ago go, oldest
    first; if that is not enough, the new one is not kept. (Evicting the oldest regardless
    would keep nothing useful when more conversations are active than fit: each would be
    dropped just before its next message.) Thread-safe: with the model in the server process,
    Rasa's HTTP API reaches the tracker store from the server's loop, the rest from Rasa's."""

    def __init__(
        self,
        max_events: int = TRACKER_CACHE_EVENTS,
        idle_s: float = TRACKER_IDLE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_events = max_events
        self.idle_s = idle_s
        self.clock = clock
        self._kept: OrderedDict[str, _Kept] = OrderedDict()
        self._events = 0
        self._lock = threading.Lock()

    def keep(self, tracker: DialogueStateTracker, last_id: int) -> None:
        """Keep ``tracker``, just saved whole (every event of its latest session stored, the
        largest of their ids ``last_id``), for its conversation's next retrieve, if it fits."""
        now = self.clock()
        kept = _Kept(tracker, len(tracker.events), last_id, now)
        with self._lock:
            self._drop(tracker.sender_id)
            while self._events + kept.events > self.max_events:
                oldest = next(iter(self._kept.values()), None)
                if oldest is None or now - oldest.saved_at < self.idle_s:
                    return  # full of conversations still going on (or too big alone)
                self._drop(oldest.tracker.sender_id)
            self._kept[tracker.sender_id] = kept
            self._events += kept.events

    def take(self, sender_id: str) -> _Kept | None:
        """The tracker kept for ``sender_id``, if any, no longer kept."""
        with self._lock:
            return self._drop(sender_id)

    def _drop(self, sender_id: str) -> _Kept | None:
        kept = self._kept.pop(sender_id, None)
        if kept is not None:
            self._events -= kept.events
        return kept

    def forget(self, sender_id: str) -> None:
        self.take(sender_id)

    def __len__(self) -> int:
        return len(self._kept)


_EVENT_TYPES: dict[str, type[Event]] = {}
_resolve_event_type: Callable[..., type[Event] | None] | None = None


def cache_event_types() -> None:
    """Memoise ``Event.resolve_by_type`` (idempotent). Rasa's version walks every subclass of
    ``Event`` for each event read back from a tracker store: about a third of the Rasa thread's
    time for a relayed message. Only found classes are cached; unknown names still fall back
    (or fail) as in Rasa, and a type imported later is found on its first lookup."""
    global _resolve_event_type
    if _resolve_event_type is not None:
        return
    uncached = Event.resolve_by_type
    _resolve_event_type = uncached

    def resolve_by_type(type_name: str, default: type[Event] | None = None) -> type[Event] | None:
        found = _EVENT_TYPES.get(type_name)
        if found is None:
            found = uncached(type_name, default)
            if found is not None and found.type_name == type_name:
                _EVENT_TYPES[type_name] = found
        return found

    Event.resolve_by_type = staticmethod(resolve_by_type)


class ThreadedSQLTrackerStore(SQLTrackerStore):
    """``SQLTrackerStore`` whose database calls run in a worker thread.

    Same table (``events``), format and queries as Rasa's, so Rasa's tools read it unchanged.
    """

    def __init__(
        self,
        database_url: str,
        domain: Domain | None = None,
        event_broker: EventBroker | None = None,
        cache: TrackerCache | None = None,
    ) -> None:
        """``event_broker``: Rasa's event broker (``event_broker`` of endpoints.yml); every
        event saved is published to it after its transaction commits, as Rasa publishes them:
        ``{"sender_id": ..., **event.as_dict()}``, in order. ``cache``: where saved trackers
        are kept for the next message (default: a :class:`TrackerCache` of
        :data:`TRACKER_CACHE_EVENTS`)."""
        self.cache = cache if cache is not None else TrackerCache()
        # Deliberately not calling SQLTrackerStore.__init__: it retries a failing database
        # forever and builds its URL from parts; we take one URL and fail fast.
        self.engine = create_engine(database_url)
        try:
            self._create_table()
        except sa.exc.OperationalError as error:
            # SQLite: another worker process created it between our check and our CREATE.
            if "already exists" not in str(error):
                raise
            self._create_table()
        self.sessionmaker = sa.orm.sessionmaker(bind=self.engine)
        TrackerStore.__init__(self, domain, event_broker)
        self._prepare_statements()

    def _create_table(self) -> None:
        with self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # Processes starting together create Rasa's table one after the other.
                connection.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK)))
            self.Base.metadata.create_all(connection)

    def _prepare_statements(self) -> None:
        # Rasa's queries (SQLTrackerStore._event_query), built once.
        events = self.SQLEvent.__table__
        sender_id = sa.bindparam("sender_id")
        session_start = (
            sa.select(sa.func.max(events.c.timestamp))
            .where(events.c.sender_id == sender_id)
            .where(events.c.type_name == SessionStarted.type_name)
            .scalar_subquery()
        )
        in_latest_session = sa.and_(
            events.c.sender_id == sender_id,
            sa.or_(events.c.timestamp >= session_start, session_start.is_(None)),
        )
        self._select_all_sessions = (
            sa.select(events.c.data).where(events.c.sender_id == sender_id).order_by(events.c.id)
        )
        self._select_latest_session = (
            sa.select(events.c.data).where(in_latest_session).order_by(events.c.id)
        )
        self._count_latest_session = sa.select(sa.func.count()).where(in_latest_session)
        self._last_id = sa.select(sa.func.max(events.c.id)).where(events.c.sender_id == sender_id)
        self._insert_event = events.insert()

    async def save(self, tracker: DialogueStateTracker) -> None:
        """Append the events of ``tracker`` not stored yet (as Rasa's ``SQLTrackerStore``),
        then keep the tracker for the conversation's next message if it now matches what is
        stored (not when this save starts a new session: its next retrieve holds only that
        session, as in Rasa)."""
        self.cache.forget(tracker.sender_id)
        saved, stored, last_id = await asyncio.to_thread(self._save_blocking, tracker)
        starts_session = any(data.get("event") == SessionStarted.type_name for data in saved)
        if stored == len(tracker.events) and not starts_session:
            self.cache.keep(tracker, last_id)
        if self.event_broker is not None:
            # On the caller's loop, after the commit: brokers such as Rasa's RabbitMQ one
            # publish through the loop they were created on.
            for data in saved:
                self.event_broker.publish({"sender_id": tracker.sender_id, **data})

    async def keys(self) -> Iterable[str]:
        return await asyncio.to_thread(self._keys_blocking)

    async def _retrieve(
        self, sender_id: str, fetch_events_from_all_sessions: bool
    ) -> DialogueStateTracker | None:
        if not fetch_events_from_all_sessions and (kept := self.cache.take(sender_id)):
            # Still what is stored (nothing appended elsewhere since: another server's worker,
            # a Rasa tool), and not changed since its save?
            last_id = await asyncio.to_thread(self._last_id_blocking, sender_id)
            if last_id == kept.last_id and len(kept.tracker.events) == kept.events:
                return kept.tracker
        events = await asyncio.to_thread(
            self._events_blocking, sender_id, fetch_events_from_all_sessions
        )
        if not events or self.domain is None:
            return None
        return DialogueStateTracker.from_dict(sender_id, events, self.domain.slots)

    def _last_id_blocking(self, sender_id: str) -> int:
        with self.engine.connect() as connection:
            return int(connection.execute(self._last_id, {"sender_id": sender_id}).scalar() or 0)

    def _save_blocking(
        self, tracker: DialogueStateTracker
    ) -> tuple[list[dict[str, Any]], int, int]:
        """Append the tracker's events that are not stored yet (as Rasa: those after the
        number already stored for the latest session), in one transaction. Returns them (as
        ``Event.as_dict()``), how many events the latest session stored has then, and the
        conversation's largest event id."""
        with self.engine.begin() as connection:
            stored = connection.execute(
                self._count_latest_session, {"sender_id": tracker.sender_id}
            ).scalar_one()
            rows = []
            saved = []
            for event in itertools.islice(tracker.events, stored, len(tracker.events)):
                data = event.as_dict()
                saved.append(data)
                rows.append(
                    {
                        "sender_id": tracker.sender_id,
                        "type_name": event.type_name,
                        "timestamp": data.get("timestamp"),
                        "intent_name": data.get("parse_data", {})
                        .get("intent", {})
                        .get(INTENT_NAME_KEY),
                        "action_name": data.get("name"),
                        "data": json.dumps(data),
                    }
                )
            if rows:
                connection.execute(self._insert_event, rows)
            last_id = connection.execute(self._last_id, {"sender_id": tracker.sender_id}).scalar()
        return saved, stored + len(rows), int(last_id or 0)

    def _keys_blocking(self) -> list[str]:
        with self.session_scope() as session:
            rows = session.query(self.SQLEvent.sender_id).distinct().all()
            return [sender_id for (sender_id,) in rows]

    def _events_blocking(
        self, sender_id: str, fetch_events_from_all_sessions: bool
    ) -> list[dict[str, Any]]:
        query = (
            self._select_all_sessions
            if fetch_events_from_all_sessions
            else self._select_latest_session
        )
        with self.engine.connect() as connection:
            rows = connection.execute(query, {"sender_id": sender_id}).scalars().all()
        return [decode_event(data) for data in rows]


def unwrap_fail_safe(store: TrackerStore) -> TrackerStore:
    """Return the store inside Rasa's ``FailSafeTrackerStore`` (which hides database errors)."""
    if isinstance(store, FailSafeTrackerStore):
        return store._tracker_store
    return store
