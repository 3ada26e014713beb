"""Metrics for ``/metrics`` computed off the event loop: :class:`MetricsReader` runs
:func:`handoff.learning.metrics.compute_in_database` in a worker thread on a read-only connection
of its own, so that a scrape costs the loop almost nothing however many messages are stored."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, make_url

from handoff.learning.metrics import compute_in_database

__all__ = [
    "METRICS_MAX_AGE_S",
    "READER_BUSY_TIMEOUT_S",
    "MetricsReader",
    "Scrape",
    "read_only_engine",
]

METRICS_MAX_AGE_S = 2.0
"""How long :meth:`MetricsReader.read` serves the last computed metrics before computing anew."""
READER_BUSY_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Scrape:
    values: dict[str, Any]
    """:func:`~handoff.learning.metrics.compute`'s result (all time)."""
    seconds: float
    """How long computing it took (in the worker thread)."""
    started_at: float
    """``time.monotonic()`` when it was started: the age of its data."""


def read_only_engine(database_url: str) -> Engine:
    """A synchronous engine of one read-only connection to the database: SQLite opened with
    ``mode=ro`` (a file database: an in-memory one cannot be shared), PostgreSQL in read-only
    repeatable-read transactions. Connects on first use."""
    url = make_url(database_url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        if url.database in (None, "", ":memory:"):
            raise ValueError("metrics need a SQLite file database, not an in-memory one")
        uri = Path(url.database).resolve().as_uri() + "?mode=ro"

        def connect() -> sqlite3.Connection:
            return sqlite3.connect(
                uri,
                uri=True,
                timeout=READER_BUSY_TIMEOUT_S,
                check_same_thread=False,  # the worker thread changes from one read to the next
                isolation_level=None,  # transactions as SQLAlchemy begins them (below)
            )

        engine = sa.create_engine(
            "sqlite://",
            creator=connect,
            poolclass=sa.pool.QueuePool,
            pool_size=1,
            max_overflow=0,
            future=True,
        )

        @sa.event.listens_for(engine, "begin")
        def _begin(connection: Connection) -> None:
            # pysqlite begins no transaction before a SELECT: without this each statement
            # would see another snapshot (the server writes meanwhile).
            connection.exec_driver_sql("BEGIN")

        return engine
    if backend == "postgresql":
        return sa.create_engine(
            url.set(drivername="postgresql+psycopg2"),
            pool_size=1,
            max_overflow=0,
            pool_pre_ping=True,
            future=True,
        ).execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
    raise ValueError(f"unsupported database {backend!r}; use sqlite or postgresql")


class MetricsReader:
    """Serves ``/metrics``' numbers without holding the event loop: computes them with
    :func:`compute_in_database` in a worker thread on :func:`read_only_engine`'s connection.
    One computation at a time: concurrent reads share it, and for ``max_age_s`` after it
    started its result is served as it is. Create once per process; :meth:`close` at stop."""

    def __init__(self, engine: Engine, max_age_s: float = METRICS_MAX_AGE_S) -> None:
        self.engine = engine
        self.max_age_s = max_age_s
        self._latest: Scrape | None = None
        self._running: asyncio.Task[Scrape] | None = None

    @classmethod
    def open(cls, database_url: str, max_age_s: float = METRICS_MAX_AGE_S) -> MetricsReader:
        return cls(read_only_engine(database_url), max_age_s)

    def compute(self) -> dict[str, Any]:
        """The metrics now (blocking: this is what the worker thread runs)."""
        with self.engine.connect() as db:
            return compute_in_database(db)

    async def read(self) -> Scrape:
        """The latest metrics: computed anew unless the last computation started less than
        ``max_age_s`` ago, or one is running (then its result)."""
        latest = self._latest
        if latest is not None and time.monotonic() - latest.started_at < self.max_age_s:
            return latest
        if self._running is None:
            self._running = asyncio.ensure_future(self._refresh())
        # Shielded: a scrape that goes away does not cancel the others' computation.
        return await asyncio.shield(self._running)

    async def _refresh(self) -> Scrape:
        try:
            started = time.monotonic()
            values = await asyncio.to_thread(self.compute)
            self._latest = Scrape(values, time.monotonic() - started, started)
            return self._latest
        finally:
            self._running = None

    async def close(self) -> None:
        """Wait for a running computation, then close the connection."""
        if self._running is not None:
            await asyncio.gather(self._running, return_exceptions=True)
        await asyncio.to_thread(self.engine.dispose)
