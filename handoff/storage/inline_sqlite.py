"""SQLite for the stores, run inline on the event loop instead of through aiosqlite's thread.

A transaction of ours on a local SQLite file (WAL, ``synchronous=NORMAL``) takes a few hundred
microseconds. Through aiosqlite, every statement is several hand-offs between the loop and the
driver's thread, each of which waits for the loop and the GIL: under load (Rasa's thread busy
with TensorFlow) a transaction cost milliseconds, and with one connection every store call
queued behind the others (relay latency in seconds at 60 messages per second). Run inline,
a transaction is one uninterrupted piece of loop time.

:class:`InlineEngine` offers the part of ``AsyncEngine`` the stores use (``begin()``,
``connect()``, ``dispose()``, ``dialect``, ``sync_engine``); its connections' ``execute``
runs the statement at once and returns a buffered result. Callers must not await anything
but ``execute`` inside a transaction: the single connection would be needed twice, which
raises at once (pool timeout 0) instead of deadlocking the loop.

:meth:`InlineEngine.batched` runs a write in a transaction shared with the other writes
submitted in the same loop iteration (a group commit: one commit, a savepoint each when there
are several); the relay's writes use it.

SQLite's automatic WAL checkpoint would run inside the commit that crosses 1,000 pages, with
its fsync, stalling the loop for milliseconds; it is off on the inline connection, and a
:class:`Checkpointer` thread copies the WAL back into the database every
:data:`CHECKPOINT_INTERVAL_S` on a connection of its own (PASSIVE: it never waits for or
blocks a writer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, Result

__all__ = [
    "CHECKPOINT_INTERVAL_S",
    "Checkpointer",
    "InlineConnection",
    "InlineEngine",
    "SuspendedInBatchError",
    "inline_sqlite_engine",
]

T = TypeVar("T")
Batched = Coroutine[Any, Any, T]
"""A batched write: a coroutine that awaits only the inline connection's ``execute``."""

CHECKPOINT_INTERVAL_S = 1.0
"""How often the WAL is copied back into the database file, off the loop."""

logger = logging.getLogger(__name__)


class Checkpointer:
    """A daemon thread running ``PRAGMA wal_checkpoint(PASSIVE)`` on the file ``path``."""

    def __init__(self, path: str, interval_s: float = CHECKPOINT_INTERVAL_S) -> None:
        self.path = path
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        connection = sqlite3.connect(self.path, timeout=1.0, check_same_thread=False)
        try:
            while not self._stop.wait(self.interval_s):
                try:
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as error:  # e.g. the file was removed; try again later
                    logger.warning("WAL checkpoint of %s failed: %s", self.path, error)
        finally:
            connection.close()

    def stop(self) -> None:
        """Stop and wait for the thread (after a last checkpoint round, if one is running)."""
        self._stop.set()
        self._thread.join(timeout=5)


class InlineConnection:
    """A connection whose ``execute`` is synchronous behind an ``async`` signature.

    :meth:`run` skips SQLAlchemy for the few statements the relay runs per message."""

    def __init__(self, connection: Connection) -> None:
        self.sync_connection = connection
        self.dialect = connection.dialect

    def run(self, sql: str, parameters: Sequence[Any] = ()) -> sqlite3.Cursor:
        """Run SQLite SQL with ``?`` parameters on the driver's connection, in this
        transaction. Values go in and come out as the driver has them (JSON as text)."""
        dbapi = self.sync_connection.connection.driver_connection
        return cast(sqlite3.Connection, dbapi).execute(sql, parameters)

    async def execute(self, statement: Any, parameters: Any = None) -> Result:
        result = self.sync_connection.execute(statement, parameters)
        if result.returns_rows:
            # Buffered, as AsyncConnection's: rows stay readable after the connection is back.
            return result.freeze()()
        return result


class SuspendedInBatchError(RuntimeError):
    """A batched write awaited something other than ``execute``: it would hold the shared
    transaction open across loop iterations. A programming error; nothing of it is kept."""


def _run_to_completion(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that must finish without suspending (statements on the inline
    connection never do), here and now."""
    try:
        coroutine.send(None)
    except StopIteration as finished:
        return cast(T, finished.value)
    coroutine.close()
    raise SuspendedInBatchError("a batched write awaited something other than execute()")


@dataclass
class _Pending:
    write: Callable[[InlineConnection], Batched[Any]]
    then: Callable[[Any], None] | None
    done: asyncio.Future[Any]


def _roll_back(connection: Connection) -> None:
    """End whatever transaction ``connection`` and its driver connection still hold."""
    with contextlib.suppress(Exception):
        connection.rollback()
    with contextlib.suppress(Exception):
        connection.connection.driver_connection.rollback()


class InlineEngine:
    """Stand-in for ``AsyncEngine`` over a synchronous SQLite engine (see the module doc).

    Its one connection stays checked out between transactions: taking it from the pool and
    giving it back (with the pool's reset) cost more than a typical transaction of ours."""

    def __init__(self, engine: Engine, checkpointer: Checkpointer | None = None) -> None:
        self.sync_engine = engine
        self.dialect = engine.dialect
        self.checkpointer = checkpointer
        self._connection: Connection | None = None
        self._in_use = False
        self._batch: list[_Pending] = []
        """Writes submitted in this loop iteration, run and committed by _commit_batch."""

    @contextmanager
    def _use(self) -> Iterator[Connection]:
        if self._in_use:
            # As a pool of one connection with no wait would: never deadlock the loop.
            raise sa.exc.TimeoutError(
                "the inline SQLite connection is already in use: a store call awaited "
                "something other than execute() inside a transaction"
            )
        if self._connection is None or self._connection.closed:
            self._connection = self.sync_engine.connect()
        self._in_use = True
        try:
            yield self._connection
        finally:
            self._in_use = False

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[InlineConnection]:
        with self._use() as connection:
            try:
                with connection.begin():
                    yield InlineConnection(connection)
            except BaseException:
                _roll_back(connection)  # a failed COMMIT leaves SQLite's transaction open
                raise

    async def batched(
        self,
        write: Callable[[InlineConnection], Batched[T]],
        then: Callable[[T], None] | None = None,
    ) -> T:
        """Run ``write(db)`` in a transaction shared with the writes submitted in this loop
        iteration, and return its result once that transaction is committed.

        Writes run in submission order, each in a savepoint: one that raises is rolled back
        alone and its caller gets the error; if the commit fails, every caller gets that
        error and nothing is stored. ``then(result)`` runs right after the commit, in
        submission order, before any caller resumes: publish events there, so that they go
        out in commit (event id) order. ``write`` must await only ``execute`` (else
        :class:`SuspendedInBatchError`). A caller cancelled while waiting still gets its
        result (the write is committed anyway); the cancellation is raised at its next await
        instead."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()
        if not self._batch:
            loop.call_soon(self._commit_batch)
        self._batch.append(_Pending(write, then, done))
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            while not done.done():  # the batch runs among this iteration's callbacks
                try:
                    await asyncio.shield(done)
                except asyncio.CancelledError:
                    continue
            task = asyncio.current_task()
            if task is not None:
                task.cancel()  # delivered at the caller's next await
            return done.result()

    def _commit_batch(self) -> None:
        batch, self._batch = self._batch, []
        outcomes: list[tuple[_Pending, Any, Exception | None]] = []
        try:
            with self._use() as connection:
                try:
                    self._run_batch(connection, batch, outcomes)
                except Exception:
                    _roll_back(connection)  # a failed COMMIT leaves SQLite's transaction open
                    raise
        except Exception as error:  # the commit failed: nothing of the batch is stored
            logger.error("A batch of %d writes failed to commit: %s", len(batch), error)
            for pending in batch:
                if not pending.done.done():
                    pending.done.set_exception(error)
            return
        for pending, value, failure in outcomes:
            if failure is None and pending.then is not None:
                try:
                    pending.then(value)
                except Exception:
                    logger.exception("After a batched write")
        for pending, value, failure in outcomes:
            if pending.done.done():
                continue
            if failure is None:
                pending.done.set_result(value)
            else:
                pending.done.set_exception(failure)

    @staticmethod
    def _run_batch(
        connection: Connection,
        batch: list[_Pending],
        outcomes: list[tuple[_Pending, Any, Exception | None]],
    ) -> None:
        with connection.begin() as transaction:
            dbapi = cast(sqlite3.Connection, connection.connection.driver_connection)
            dbapi.execute("BEGIN")  # else the first savepoint would commit on release
            db = InlineConnection(connection)
            if len(batch) == 1:  # the transaction is the write's own: no savepoint needed
                (pending,) = batch
                try:
                    outcomes.append((pending, _run_to_completion(pending.write(db)), None))
                except Exception as error:
                    transaction.rollback()
                    outcomes.append((pending, None, error))
                return
            for pending in batch:
                dbapi.execute("SAVEPOINT batched_write")
                try:
                    value = _run_to_completion(pending.write(db))
                except Exception as error:
                    dbapi.execute("ROLLBACK TO batched_write")
                    dbapi.execute("RELEASE batched_write")
                    outcomes.append((pending, None, error))
                else:
                    dbapi.execute("RELEASE batched_write")
                    outcomes.append((pending, value, None))

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[InlineConnection]:
        with self._use() as connection:
            try:
                yield InlineConnection(connection)
            finally:
                if connection.in_transaction():  # a read's implicit transaction: end it
                    connection.rollback()

    async def dispose(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.stop()
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        self.sync_engine.dispose()


def inline_sqlite_engine(database_url: str, busy_timeout_s: float) -> InlineEngine:
    """One SQLite connection (WAL, ``synchronous=NORMAL``, foreign keys, busy timeout) used
    inline on the caller's thread."""
    database = sa.engine.make_url(database_url).database
    file = database if database and database != ":memory:" else None
    engine = sa.create_engine(
        database_url,
        connect_args={"timeout": busy_timeout_s, "check_same_thread": False},
        poolclass=sa.pool.QueuePool,
        pool_size=1,
        max_overflow=0,
        pool_timeout=0,
        future=True,  # 2.0-style, as the async engine's
    )

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        if file:
            cursor.execute("PRAGMA wal_autocheckpoint=0")  # the Checkpointer's job
        cursor.close()

    return InlineEngine(engine, Checkpointer(file) if file else None)
