"""The inline SQLite engine, the Rasa thread and where Rasa's trackers live (no server)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from handoff.assistant.rasa_thread import RasaWorker
from handoff.assistant.tracker_store import tracker_database_url
from handoff.storage.inline_sqlite import Checkpointer, inline_sqlite_engine

TABLE = sa.Table(
    "items",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String, nullable=False, unique=True),
)


@pytest.fixture
async def engine(tmp_path: Path):  # type: ignore[no-untyped-def]
    engine = inline_sqlite_engine(f"sqlite:///{tmp_path / 'items.db'}", busy_timeout_s=1.0)
    TABLE.metadata.create_all(engine.sync_engine)
    yield engine
    await engine.dispose()


async def test_results_stay_readable_after_the_connection_is_returned(engine) -> None:  # type: ignore[no-untyped-def]
    async with engine.begin() as db:
        first = await db.execute(TABLE.insert(), {"name": "a"})
        await db.execute(TABLE.insert(), {"name": "b"})
    assert first.inserted_primary_key[0] == 1
    async with engine.connect() as db:
        rows = await db.execute(sa.select(TABLE.c.name).order_by(TABLE.c.id))
    assert [row.name for row in rows] == ["a", "b"]  # read after the connection went back


async def test_a_failed_transaction_writes_nothing(engine) -> None:  # type: ignore[no-untyped-def]
    async def insert_twice() -> None:
        async with engine.begin() as db:
            await db.execute(TABLE.insert(), {"name": "a"})
            await db.execute(TABLE.insert(), {"name": "a"})

    with pytest.raises(sa.exc.IntegrityError):
        await insert_twice()
    async with engine.connect() as db:
        count = (await db.execute(sa.select(sa.func.count()).select_from(TABLE))).scalar()
    assert count == 0


async def test_a_nested_transaction_fails_at_once_instead_of_deadlocking(engine) -> None:  # type: ignore[no-untyped-def]
    async def nested() -> None:
        async with engine.begin():
            pass

    async with engine.begin():
        with pytest.raises(sa.exc.TimeoutError):
            await nested()


async def test_reads_see_what_other_connections_wrote_since(engine) -> None:  # type: ignore[no-untyped-def]
    async with engine.connect() as db:
        assert (await db.execute(sa.select(sa.func.count()).select_from(TABLE))).scalar() == 0
        assert db.sync_connection.in_transaction()
    assert not engine._connection.in_transaction(), "a read leaves no snapshot open"
    other = sa.create_engine(engine.sync_engine.url)
    with other.begin() as connection:  # e.g. `handoff agents` in another process
        connection.execute(TABLE.insert(), {"name": "from elsewhere"})
    other.dispose()
    async with engine.connect() as db:
        names = (await db.execute(sa.select(TABLE.c.name))).scalars().all()
    assert names == ["from elsewhere"]


async def test_the_wal_is_checkpointed_off_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    engine = inline_sqlite_engine(f"sqlite:///{path}", busy_timeout_s=1.0)
    assert engine.checkpointer is not None
    engine.checkpointer.stop()  # the default interval is 1 s; use a fast one
    engine.checkpointer = Checkpointer(str(path), interval_s=0.02)
    TABLE.metadata.create_all(engine.sync_engine)
    try:
        async with engine.connect() as db:
            pragma = await db.execute(sa.text("PRAGMA wal_autocheckpoint"))
            assert pragma.scalar() == 0, "no checkpoint inside a commit on the loop"
        for i in range(50):
            async with engine.begin() as db:
                await db.execute(TABLE.insert(), {"name": f"n{i}"})
        # The database file itself (read ignoring the WAL) gets the rows from the thread.
        for _ in range(100):
            with sqlite3.connect(f"file:{path}?immutable=1", uri=True) as raw:
                tables = raw.execute("SELECT name FROM sqlite_master").fetchall()
                count = raw.execute("SELECT count(*) FROM items").fetchone()[0] if tables else 0
            if count == 50:
                break
            await asyncio.sleep(0.02)
        assert count == 50
    finally:
        await engine.dispose()


def test_rasa_trackers_get_their_own_sqlite_file() -> None:
    assert tracker_database_url("sqlite:////srv/var/handoff.db") == (
        "sqlite:////srv/var/handoff-rasa.db"
    )
    assert tracker_database_url("sqlite://") == "sqlite://"
    url = "postgresql://handoff@db/handoff"
    assert tracker_database_url(url) == url


async def test_rasa_worker_runs_coroutines_on_its_own_thread() -> None:
    worker = RasaWorker(name="test-rasa")
    try:

        async def where() -> str:
            await asyncio.sleep(0)
            return threading.current_thread().name

        assert await worker.run(where()) == "test-rasa"

        async def fail() -> None:
            raise ValueError("from the worker")

        with pytest.raises(ValueError, match="from the worker"):
            await worker.run(fail())

        started = threading.Event()
        cancelled = threading.Event()

        async def slow() -> None:
            started.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        task = asyncio.create_task(worker.run(slow()))
        await asyncio.to_thread(started.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.to_thread(cancelled.wait, 5)
    finally:
        worker.stop()
