"""/metrics' numbers computed in SQL off the event loop (MetricsReader) on a real SQLite file:
the same as the row-by-row computation, off the loop, one computation for concurrent scrapes."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from handoff.learning.metrics import compute, compute_in_database
from handoff.learning.metrics_reader import MetricsReader, Scrape
from handoff.storage import schema
from handoff.storage.learning_store import LearningStore
from handoff.storage.migrate import upgrade
from handoff.storage.store import Store

FALLBACK = {"name": "nlu_fallback", "confidence": 0.7}


def rank(*names: str) -> list[dict[str, Any]]:
    return [{"name": n, "confidence": round(0.9 - 0.1 * i, 2)} for i, n in enumerate(names)]


def seed(database_url: str) -> None:
    """Rows covering each rule of :func:`compute` (created at 100 + n: ``since=103`` keeps some)."""
    upgrade(database_url)
    engine = sa.create_engine(database_url, future=True)
    user_rankings: list[Any] = [
        rank("fees", "greet"),  # 1: guess fees
        [FALLBACK, *rank("fees")],  # 2: fell back, guess fees
        [FALLBACK, {"name": ""}, *rank("box")],  # 3: fell back, labelled twice (box wins)
        [FALLBACK],  # 4: fell back, no guess: "unknown"
        [],  # 5: no ranking: not counted
        None,  # 6: no ranking (JSON null)
        sa.null(),  # 7: no ranking (SQL NULL)
        [{"confidence": 0.5}, *rank("greet")],  # 8: nameless first entry, guess greet
        rank("greet"),  # 9: labelled "" then "fees"
    ]
    with engine.begin() as db:
        db.execute(
            schema.agents.insert(),
            [{"username": "ana", "display_name": "Ana", "password_hash": "x" * 20,
              "role": "agent", "created_at": 0.0}],
        )  # fmt: skip
        for n, ranking in enumerate(user_rankings, start=1):
            db.execute(
                schema.messages.insert().values(
                    id=n, conversation_id=f"c{n % 4}", sender="user", text=f"m{n}",
                    intent_ranking=ranking, created_at=100.0 + n,
                )
            )  # fmt: skip
        db.execute(
            schema.messages.insert().values(
                id=50, conversation_id="c9", sender="bot", text="hi",
                intent_ranking=rank("greet"), created_at=101.0,
            )
        )  # fmt: skip
        labels = [(3, "overdraft"), (3, "box"), (9, ""), (9, "fees"), (50, "greet"), (1, "fees")]
        db.execute(
            schema.labels.insert(),
            [
                {"message_id": m, "intent": i, "is_new_intent": False, "agent_id": 1,
                 "created_at": 100.0 + k}
                for k, (m, i) in enumerate(labels)
            ],
        )  # fmt: skip
        db.execute(
            schema.handoffs.insert(),
            [
                {"conversation_id": "c1", "reason": "low_confidence", "queued_at": 100.0,
                 "claimed_at": 110.0, "first_agent_reply_at": 130.0, "closed_at": 200.0},
                {"conversation_id": "c2", "reason": "user_asked", "queued_at": 104.0,
                 "claimed_at": 104.5, "first_agent_reply_at": None, "closed_at": None},
                {"conversation_id": "c3", "reason": "user_asked", "queued_at": 105.0,
                 "claimed_at": None, "first_agent_reply_at": None, "closed_at": None},
            ],
        )  # fmt: skip
        db.execute(
            schema.candidates.insert(),
            [
                {"kind": kind, "status": status, "source": "label", "intent": intent,
                 "created_at": 0.0, "updated_at": 0.0}
                for kind, status, intent in [
                    ("example", "approved", "box"), ("example", "exported", "box"),
                    ("example", "pending", "box"), ("example", "rejected", "fees"),
                    ("example", "exported", "fees"), ("response", "approved", "fees"),
                ]
            ],
        )  # fmt: skip
        db.execute(
            schema.model_versions.insert(),
            [
                {"name": "old.tar.gz", "training_hash": "a", "trained_at": 1.0,
                 "status": "retired", "metrics": None},
                {"name": "live.tar.gz", "training_hash": "b", "trained_at": 2.0,
                 "training_seconds": 90.0, "status": "live", "promoted_at": 3.0,
                 "metrics": {"accuracy": 0.9, "macro_f1": 0.8, "fallback_rate": 0.1}},
            ],
        )  # fmt: skip
    engine.dispose()


async def row_by_row(database_url: str, since: float = 0.0) -> dict[str, Any]:
    """What ``/metrics`` computed before: rows through the server's store, then :func:`compute`."""
    store = await Store.open(database_url)
    try:
        learning = LearningStore(store.engine)
        return compute(await learning.metrics_rows(since), await learning.models())
    finally:
        await store.close()


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'handoff.db'}"
    seed(url)
    return url


@pytest.fixture
async def reader(database_url: str) -> AsyncIterator[MetricsReader]:
    reader = MetricsReader.open(database_url)
    yield reader
    await reader.close()


async def test_sql_gives_the_numbers_of_the_row_by_row_computation(
    database_url: str, reader: MetricsReader
) -> None:
    values = (await reader.read()).values
    assert values == await row_by_row(database_url)
    assert values["user_messages"] == 9 and values["conversations"] == 4
    assert values["fallback_by_intent"] == {
        "box": {"messages": 1, "fallbacks": 1, "rate": 1.0},
        "fees": {"messages": 3, "fallbacks": 1, "rate": 0.3333},
        "greet": {"messages": 1, "fallbacks": 0, "rate": 0.0},
        "unknown": {"messages": 1, "fallbacks": 1, "rate": 1.0},
    }
    assert values["labels_by_intent"] == {"box": 1, "fees": 2, "greet": 1}
    assert values["approved_examples_by_intent"] == {"box": 2, "fees": 1}
    assert values["handoffs_by_reason"] == {"low_confidence": 1, "user_asked": 2}
    assert values["queue_wait_seconds"]["median"] == 5.25
    assert [m["accuracy"] for m in values["models"]] == [None, 0.9]

    engine = sa.create_engine(database_url, future=True)
    with engine.connect() as db:
        since = compute_in_database(db, since=103.0)
    engine.dispose()
    assert since == await row_by_row(database_url, since=103.0)
    assert since["user_messages"] == 7 and since["handoffs"] == 2


async def test_the_loop_runs_while_the_metrics_are_computed(reader: MetricsReader) -> None:
    loop_ran = threading.Event()
    threads: list[int] = []
    compute_now = reader.compute

    def slow_compute() -> dict[str, Any]:
        threads.append(threading.get_ident())
        # Computed on the loop, this would wait the whole timeout: nothing could set it.
        assert loop_ran.wait(timeout=5), "the event loop was blocked during the computation"
        return compute_now()

    reader.compute = slow_compute  # type: ignore[method-assign]
    scrape = asyncio.create_task(reader.read())
    await asyncio.sleep(0.01)
    loop_ran.set()
    assert (await scrape).values["user_messages"] == 9
    assert threads and threads[0] != threading.get_ident()


async def test_concurrent_scrapes_share_one_computation_then_the_cache(
    reader: MetricsReader,
) -> None:
    calls = 0
    release = threading.Event()
    compute_now = reader.compute

    def counted() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        release.wait(timeout=5)
        return compute_now()

    reader.compute = counted  # type: ignore[method-assign]
    first = asyncio.create_task(reader.read())
    await asyncio.sleep(0.01)
    first.cancel()  # a scrape that goes away does not end the others' computation
    others = [asyncio.create_task(reader.read()) for _ in range(20)]
    await asyncio.sleep(0.01)
    release.set()
    scrapes: list[Scrape] = await asyncio.gather(*others)
    assert calls == 1 and all(s is scrapes[0] for s in scrapes)
    assert first.cancelled()
    assert await reader.read() is scrapes[0]  # younger than max_age_s: served as it is
    reader.max_age_s = 0.0
    assert await reader.read() is not scrapes[0] and calls == 2


def test_the_reader_cannot_write(database_url: str) -> None:
    engine = MetricsReader.open(database_url).engine
    with engine.connect() as db, pytest.raises(sa.exc.OperationalError, match="readonly"):
        db.execute(schema.labels.delete())
    engine.dispose()
    with pytest.raises(ValueError, match="in-memory"):
        MetricsReader.open("sqlite://")
