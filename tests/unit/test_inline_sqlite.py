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
from handoff.storage.inline_sqlite import Checkpointer, SuspendedInBatchError, inline_sqlite_engine

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


# Batched writes (a group commit) -------------------------------------------------------------


async def _count(engine) -> int:  # type: ignore[no-untyped-def]
    async with engine.connect() as db:
        return int((await db.execute(sa.select(sa.func.count()).select_from(TABLE))).scalar())


def _insert(name: str):  # type: ignore[no-untyped-def]
    async def write(db) -> int:  # type: ignore[no-untyped-def]
        result = await db.execute(TABLE.insert(), {"name": name})
        return int(result.inserted_primary_key[0])

    return write


async def test_writes_of_one_iteration_share_a_transaction_and_run_in_order(engine) -> None:  # type: ignore[no-untyped-def]
    order: list[str] = []

    async def caller(name: str) -> int:
        row_id = await engine.batched(_insert(name), lambda _: order.append(f"then {name}"))
        order.append(f"resumed {name}")
        return int(row_id)

    ids = await asyncio.gather(*(caller(name) for name in "abc"))
    assert ids == [1, 2, 3]
    # Every write's follow-up (publishing) ran before any caller resumed, in write order.
    assert order == ["then a", "then b", "then c", "resumed a", "resumed b", "resumed c"]
    assert await _count(engine) == 3


async def test_a_failing_write_is_rolled_back_alone(engine) -> None:  # type: ignore[no-untyped-def]
    async def twice(db) -> None:  # type: ignore[no-untyped-def]
        await db.execute(TABLE.insert(), {"name": "z"})
        await db.execute(TABLE.insert(), {"name": "z"})

    results = await asyncio.gather(
        engine.batched(_insert("a")),
        engine.batched(twice),
        engine.batched(_insert("b")),
        return_exceptions=True,
    )
    assert results[0] == 1 and isinstance(results[1], sa.exc.IntegrityError)
    async with engine.connect() as db:
        names = [row.name for row in await db.execute(sa.select(TABLE.c.name))]
    assert sorted(names) == ["a", "b"]  # nothing of the failed write, all of the others


async def test_a_write_that_suspends_is_refused_and_kept_out(engine) -> None:  # type: ignore[no-untyped-def]
    async def sleeps(db) -> None:  # type: ignore[no-untyped-def]
        await db.execute(TABLE.insert(), {"name": "half"})
        await asyncio.sleep(0)

    results = await asyncio.gather(
        engine.batched(sleeps), engine.batched(_insert("b")), return_exceptions=True
    )
    assert isinstance(results[0], SuspendedInBatchError) and results[1] == 1
    assert await _count(engine) == 1


async def test_a_failed_commit_fails_every_write_of_the_batch(tmp_path: Path) -> None:
    engine = inline_sqlite_engine(f"sqlite:///{tmp_path / 'fk.db'}", busy_timeout_s=1.0)
    with engine.sync_engine.begin() as db:
        db.exec_driver_sql("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        db.exec_driver_sql(
            "CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER"
            " REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
        )

    def child(parent_id: int):  # type: ignore[no-untyped-def]
        async def write(db) -> None:  # type: ignore[no-untyped-def]
            await db.execute(sa.text("INSERT INTO child (parent_id) VALUES (:p)"), {"p": parent_id})

        return write

    published: list[int] = []
    try:
        # The dangling reference is only checked at the commit: both writes fail with it.
        results = await asyncio.gather(
            engine.batched(child(1), published.append),
            engine.batched(child(7), published.append),
            return_exceptions=True,
        )
        assert all(isinstance(result, sa.exc.IntegrityError) for result in results), results
        assert published == []  # nothing is published for writes that were not stored
        async with engine.connect() as db:
            count = (await db.execute(sa.text("SELECT COUNT(*) FROM child"))).scalar()
        assert count == 0
        assert await engine.batched(_parentless_ok()) == "ok"  # the engine is usable again
        with pytest.raises(sa.exc.IntegrityError):  # the same for a transaction of its own
            async with engine.begin() as db:
                await child(9)(db)
        async with engine.connect() as db:
            count = (await db.execute(sa.text("SELECT COUNT(*) FROM child"))).scalar()
        assert count == 0
    finally:
        await engine.dispose()


def _parentless_ok():  # type: ignore[no-untyped-def]
    async def write(db) -> str:  # type: ignore[no-untyped-def]
        await db.execute(sa.text("INSERT INTO parent (id) VALUES (1)"))
        return "ok"

    return write


async def test_a_cancelled_caller_gets_its_committed_result_then_the_cancellation(engine) -> None:  # type: ignore[no-untyped-def]
    seen: list[int] = []

    async def caller() -> None:
        seen.append(await engine.batched(_insert("a")))
        await asyncio.sleep(1)  # the cancellation arrives here

    task = asyncio.create_task(caller())
    await asyncio.sleep(0)  # the write is submitted; the batch runs in the next callbacks
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == [1]
    assert await _count(engine) == 1


async def test_a_failing_write_alone_in_its_batch_is_rolled_back_and_raises(engine) -> None:  # type: ignore[no-untyped-def]
    async def twice(db) -> None:  # type: ignore[no-untyped-def]
        await db.execute(TABLE.insert(), {"name": "z"})
        await db.execute(TABLE.insert(), {"name": "z"})

    published: list[object] = []
    with pytest.raises(sa.exc.IntegrityError):
        await engine.batched(twice, published.append)
    assert published == [] and await _count(engine) == 0  # not even its first row
    assert await engine.batched(_insert("a")) == 1  # the connection is usable again
    assert await _count(engine) == 1
