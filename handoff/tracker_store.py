"""Rasa's SQL tracker store, made safe to use from the server's event loop.

Rasa's ``SQLTrackerStore`` declares ``async`` methods but runs blocking database calls inside
them, and Rasa wraps every tracker store in ``FailSafeTrackerStore``, which silently falls back
to memory on a database error (conversations lost). :class:`ThreadedSQLTrackerStore` runs the
database work in a worker thread, and :func:`unwrap_fail_safe` removes the silent fallback so
that storage errors surface to the caller.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from rasa.core.tracker_store import FailSafeTrackerStore, SQLTrackerStore, TrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.shared.nlu.constants import INTENT_NAME_KEY
from sqlalchemy.engine import Engine, make_url

from handoff.migrate import MIGRATION_LOCK

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 10_000
"""How long a SQLite writer waits for another one before failing ("database is locked")."""


def tracker_database_url(database_url: str) -> str:
    """Where Rasa's trackers live, given our database's URL.

    PostgreSQL: the same database. SQLite: a file of its own beside ours (``handoff.db`` ->
    ``handoff-rasa.db``), because our store runs inline on the event loop (see
    :mod:`handoff.inline_sqlite`) and must never wait in SQLite's busy handler for Rasa's
    writes, which come from other threads. In-memory SQLite stays as it is.
    """
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return database_url
    path = Path(url.database)
    return str(url.set(database=str(path.with_name(f"{path.stem}-rasa{path.suffix}"))))


def create_engine(database_url: str) -> Engine:
    """Create a synchronous engine; for SQLite: the folder, WAL mode and a busy timeout."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True)

    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    # One connection shared in turn by the worker threads: see handoff.store for why.
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


class ThreadedSQLTrackerStore(SQLTrackerStore):
    """``SQLTrackerStore`` whose database calls run in a worker thread.

    Same table (``events``) and format as Rasa's, so Rasa's tools read it unchanged.
    """

    def __init__(self, database_url: str, domain: Domain | None = None) -> None:
        # Deliberately not calling SQLTrackerStore.__init__: it retries a failing database
        # forever and builds its URL from parts; we take one URL and fail fast.
        self.engine = create_engine(database_url)
        with self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # Processes starting together create Rasa's table one after the other.
                connection.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK)))
            self.Base.metadata.create_all(connection)
        self.sessionmaker = sa.orm.sessionmaker(bind=self.engine)
        TrackerStore.__init__(self, domain, None)

    async def save(self, tracker: DialogueStateTracker) -> None:
        await asyncio.to_thread(self._save_blocking, tracker)

    async def keys(self) -> Iterable[str]:
        return await asyncio.to_thread(self._keys_blocking)

    async def _retrieve(
        self, sender_id: str, fetch_events_from_all_sessions: bool
    ) -> DialogueStateTracker | None:
        events = await asyncio.to_thread(
            self._events_blocking, sender_id, fetch_events_from_all_sessions
        )
        if not events or self.domain is None:
            return None
        return DialogueStateTracker.from_dict(sender_id, events, self.domain.slots)

    def _save_blocking(self, tracker: DialogueStateTracker) -> None:
        with self.session_scope() as session:
            for event in self._additional_events(session, tracker):
                data = event.as_dict()
                session.add(
                    self.SQLEvent(
                        sender_id=tracker.sender_id,
                        type_name=event.type_name,
                        timestamp=data.get("timestamp"),
                        intent_name=data.get("parse_data", {})
                        .get("intent", {})
                        .get(INTENT_NAME_KEY),
                        action_name=data.get("name"),
                        data=json.dumps(data),
                    )
                )
            session.commit()

    def _keys_blocking(self) -> list[str]:
        with self.session_scope() as session:
            rows = session.query(self.SQLEvent.sender_id).distinct().all()
            return [sender_id for (sender_id,) in rows]

    def _events_blocking(
        self, sender_id: str, fetch_events_from_all_sessions: bool
    ) -> list[dict[str, Any]]:
        with self.session_scope() as session:
            rows = self._event_query(session, sender_id, fetch_events_from_all_sessions).all()
            return [json.loads(row.data) for row in rows]


def unwrap_fail_safe(store: TrackerStore) -> TrackerStore:
    """Return the store inside Rasa's ``FailSafeTrackerStore`` (which hides database errors)."""
    if isinstance(store, FailSafeTrackerStore):
        return store._tracker_store
    return store
