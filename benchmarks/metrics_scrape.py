"""Metrics scrape: how much event-loop time one ``/metrics`` computation costs.

Seeds a SQLite database (the real schema, migrated with Alembic) with ``--messages`` stored
messages (default 100,000: conversations of 5 user messages with 10-entry intent rankings and
5 bot answers, a fifth of them handed off, some labelled), then computes the metrics in turns:

* ``old``: rows read through the server's store (inline on the loop) and
  :func:`handoff.learning.metrics.compute` on the loop, as ``/metrics`` did;
* ``new``: :class:`handoff.learning.metrics_reader.MetricsReader` (SQL in a worker thread on a
  read-only connection), caching off.

For each it measures the loop thread's CPU time during one scrape (``loop_cpu_ms``: what the
scrape takes from every other connection), the scrape's wall time, and in a separate run the
worst lag of a 1 ms ticker coroutine during the scrape (``worst_lag_ms``). Both results are
checked equal. Prints each run, then medians and the old/new ratios.

    .venv/bin/python -m benchmarks.metrics_scrape [--messages 100000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from handoff.learning.metrics import compute, render_prometheus
from handoff.learning.metrics_reader import MetricsReader
from handoff.storage import schema
from handoff.storage.learning_store import LearningStore
from handoff.storage.migrate import upgrade
from handoff.storage.store import Store

INTENTS = [f"intent_{i:02d}" for i in range(32)]
USER_MESSAGES_PER_CONVERSATION = 5
CHUNK = 5_000


def ranking(rng: random.Random) -> list[dict[str, Any]]:
    """A Rasa-like ranking: 10 intents, sometimes nlu_fallback first."""
    names = rng.sample(INTENTS, 10)
    confidences = sorted((rng.random() for _ in names), reverse=True)
    items = [
        {"name": n, "confidence": round(c, 6)} for n, c in zip(names, confidences, strict=True)
    ]
    if rng.random() < 0.15:
        items.insert(0, {"name": "nlu_fallback", "confidence": 0.7})
    return items


def seed(database: Path, messages: int, rng: random.Random) -> None:
    """Bulk-insert about ``messages`` messages (and their conversations, handoffs, labels,
    candidates) into a freshly migrated database."""
    url = f"sqlite:///{database}"
    upgrade(url)
    engine = sa.create_engine(url, future=True)
    per_conversation = 2 * USER_MESSAGES_PER_CONVERSATION
    conversations = max(1, messages // per_conversation)
    now = time.time() - 86_400
    message_id = 0
    with engine.begin() as db:
        db.execute(
            schema.agents.insert(),
            [
                {
                    "username": "ana",
                    "display_name": "Ana",
                    "password_hash": "x" * 20,
                    "role": "maintainer",
                    "created_at": now,
                }
            ],
        )
        db.execute(
            schema.model_versions.insert(),
            [
                {
                    "name": f"m-{i}.tar.gz",
                    "training_hash": f"h{i}",
                    "trained_at": now + i,
                    "training_seconds": 90.0,
                    "metrics": {"accuracy": 0.9, "macro_f1": 0.88, "fallback_rate": 0.05},
                    "status": "live" if i == 2 else "retired",
                    "promoted_at": now + i,
                }
                for i in range(3)
            ],
        )
    for first in range(0, conversations, CHUNK // per_conversation):
        rows: dict[str, list[dict[str, Any]]] = {
            "conversations": [],
            "handoffs": [],
            "messages": [],
            "labels": [],
            "candidates": [],
        }
        for n in range(first, min(conversations, first + CHUNK // per_conversation)):
            cid = f"c{n}"
            at = now + n
            handed_off = n % 5 == 0
            rows["conversations"].append({"id": cid, "state": "bot", "updated_at": at})
            if handed_off:
                rows["handoffs"].append(
                    {
                        "conversation_id": cid,
                        "reason": rng.choice(["low_confidence", "user_asked", "always_human"]),
                        "queued_at": at,
                        "claimed_at": at + rng.uniform(5, 120) if n % 10 else None,
                        "first_agent_reply_at": at + rng.uniform(20, 200) if n % 10 else None,
                        "closed_at": at + rng.uniform(200, 900) if n % 20 else None,
                    }
                )
            for turn in range(USER_MESSAGES_PER_CONVERSATION):
                message_id += 1
                rows["messages"].append(
                    {
                        "id": message_id,
                        "conversation_id": cid,
                        "sender": "user",
                        "text": f"user message {turn}",
                        "intent_ranking": ranking(rng),
                        "created_at": at + turn,
                    }
                )
                if rng.random() < 0.03:
                    intent = rng.choice(INTENTS)
                    rows["labels"].append(
                        {
                            "message_id": message_id,
                            "intent": intent,
                            "is_new_intent": False,
                            "agent_id": 1,
                            "created_at": at + turn,
                        }
                    )
                    rows["candidates"].append(
                        {
                            "kind": "example",
                            "status": rng.choice(["pending", "approved", "exported", "rejected"]),
                            "source": "label",
                            "intent": intent,
                            "text": f"user message {turn}",
                            "message_id": message_id,
                            "created_at": at + turn,
                            "updated_at": at + turn,
                        }
                    )
                message_id += 1
                rows["messages"].append(
                    {
                        "id": message_id,
                        "conversation_id": cid,
                        "sender": "agent" if handed_off and turn >= 3 else "bot",
                        "agent_id": 1 if handed_off and turn >= 3 else None,
                        "text": f"answer {turn}",
                        "intent_ranking": None,
                        "created_at": at + turn + 0.5,
                    }
                )
        with engine.begin() as db:
            for table in ("conversations", "handoffs", "messages", "labels", "candidates"):
                if rows[table]:
                    db.execute(schema.metadata.tables[table].insert(), rows[table])
        print(f"  seeded {message_id:,} messages", end="\r", flush=True)
    print()
    engine.dispose()


async def worst_lag_ms(scrape: Callable[[], Awaitable[Any]]) -> float:
    """The longest a 1 ms ticker coroutine waited past its time while ``scrape`` ran."""
    worst = 0.0
    running = True

    async def tick() -> None:
        nonlocal worst
        while running:
            due = time.perf_counter() + 0.001
            await asyncio.sleep(0.001)
            worst = max(worst, time.perf_counter() - due)

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.01)
    worst = 0.0
    await scrape()
    running = False
    await ticker
    return worst * 1000


async def measure(scrape: Callable[[], Awaitable[Any]]) -> dict[str, float]:
    cpu, wall = time.thread_time(), time.perf_counter()
    await scrape()
    result = {
        "loop_cpu_ms": (time.thread_time() - cpu) * 1000,
        "wall_ms": (time.perf_counter() - wall) * 1000,
    }
    result["worst_lag_ms"] = await worst_lag_ms(scrape)
    return result


async def run(database: Path, rounds: int) -> dict[str, list[dict[str, float]]]:
    url = f"sqlite:///{database}"
    store = await Store.open(url)
    learning = LearningStore(store.engine)
    reader = MetricsReader.open(url, max_age_s=0.0)
    results: dict[str, dict[str, Any]] = {"old": {}, "new": {}}

    async def old() -> None:
        values = compute(await learning.metrics_rows(), await learning.models())
        render_prometheus(values, "m-2.tar.gz")
        results["old"] = values

    async def new() -> None:
        values = (await reader.read()).values
        render_prometheus(values, "m-2.tar.gz")
        results["new"] = values

    runs: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
    try:
        for round_ in range(1, rounds + 1):
            for name, scrape in (("old", old), ("new", new)):
                runs[name].append(await measure(scrape))
                print(f"round {round_}, {name}: {json.dumps(runs[name][-1])}", flush=True)
            if results["old"] != results["new"]:
                raise SystemExit("the old and the new computation disagree")
    finally:
        await reader.close()
        await store.close()
    values = results["new"]
    print(
        f"({values['user_messages']:,} user messages, {values['conversations']:,} conversations, "
        f"{values['handoffs']:,} handoffs; old and new results equal)"
    )
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000, help="stored messages to seed")
    parser.add_argument("--rounds", type=int, default=5, help="turns of old and new")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the data")
    parser.add_argument("--json", type=Path, help="also write the runs and medians here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="metrics-scrape-") as work:
        database = Path(work) / "handoff.db"
        started = time.perf_counter()
        print(f"seeding {args.messages:,} messages into {database} ...", flush=True)
        seed(database, args.messages, random.Random(args.seed))
        print(f"  took {time.perf_counter() - started:.1f} s", flush=True)
        runs = asyncio.run(run(database, args.rounds))
    medians = {
        name: {key: statistics.median(r[key] for r in rs) for key in rs[0]}
        for name, rs in runs.items()
    }
    print(f"\nmedians over {args.rounds} rounds at {args.messages:,} stored messages:")
    print(f"{'':6}{'loop CPU ms':>14}{'wall ms':>10}{'worst lag ms':>15}")
    for name, m in medians.items():
        print(f"{name:6}{m['loop_cpu_ms']:>14.1f}{m['wall_ms']:>10.1f}{m['worst_lag_ms']:>15.1f}")
    ratios = {key: medians["old"][key] / max(medians["new"][key], 1e-9) for key in medians["old"]}
    print(
        f"{'ratio':6}{ratios['loop_cpu_ms']:>13.0f}x{ratios['wall_ms']:>9.1f}x"
        f"{ratios['worst_lag_ms']:>14.0f}x  (old / new)"
    )
    if args.json:
        args.json.write_text(
            json.dumps({"messages": args.messages, "runs": runs, "medians": medians}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
