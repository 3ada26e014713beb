"""What one commit for many relay writes saves: ``Store.add_message`` on the inline SQLite
store (the server's group commit, ``InlineEngine.batched``), awaited one after the other (a
commit each) against --batch writes submitted together (one commit for them). Rounds
alternate the two, on fresh database files in a temporary folder.

    .venv/bin/python -m benchmarks.group_commit
    .venv/bin/python -m benchmarks.group_commit --writes 5000 --batch 10,50 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from handoff.storage.migrate import upgrade
from handoff.storage.records import NewEvent
from handoff.storage.store import Store

CONVERSATIONS = 50


def _events(conversation_id: str) -> list[NewEvent]:
    """What a relayed user message writes besides itself: the user's ack, the agent's copy."""
    return [
        NewEvent("user", "ack", {"id": "x"}, conversation_id, None),
        NewEvent("agent", "user_message", {"text": "hello there"}, conversation_id, 1),
    ]


async def microseconds_per_write(folder: Path, writes: int, batch: int | None) -> float:
    """Mean cost of one ``add_message``; ``batch``: writes submitted together (None: each
    awaited before the next, so each commits alone)."""
    url = f"sqlite:///{folder}/{'own' if batch is None else f'group-{batch}'}.db"
    upgrade(url)
    store = await Store.open(url)

    def write(number: int):  # type: ignore[no-untyped-def]
        conversation_id = f"c{number % CONVERSATIONS}"
        return store.add_message(
            conversation_id,
            "user",
            "hello there",
            client_message_id=f"m{number}",
            events=_events(conversation_id),
        )

    step = batch or 1
    started = time.perf_counter()
    for first in range(0, writes, step):
        await asyncio.gather(*(write(n) for n in range(first, min(writes, first + step))))
    elapsed = time.perf_counter() - started
    await store.close()
    return elapsed / writes * 1e6


async def run(writes: int, batches: list[int], rounds: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {"own transaction": []}
    results.update({f"{batch} per commit": [] for batch in batches})
    for number in range(1, rounds + 1):
        with tempfile.TemporaryDirectory() as folder:
            results["own transaction"].append(
                await microseconds_per_write(Path(folder), writes, None)
            )
            for batch in batches:
                results[f"{batch} per commit"].append(
                    await microseconds_per_write(Path(folder), writes, batch)
                )
        print(
            f"round {number}/{rounds}: "
            + "; ".join(f"{name} {values[-1]:.0f} µs" for name, values in results.items())
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=3000, help="writes per run (3000)")
    parser.add_argument("--batch", default="10,50", help="writes per shared commit (10,50)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, in turns (3)")
    args = parser.parse_args()
    try:
        batches = [int(part) for part in args.batch.split(",")]
    except ValueError:
        parser.error(f"--batch takes whole numbers separated by commas, not {args.batch!r}")
    if args.writes < 1 or args.rounds < 1 or min(batches) < 1:
        parser.error("--writes, --rounds and every --batch must be at least 1")
    results = asyncio.run(run(args.writes, batches, args.rounds))
    print("median per write:")
    for name, values in results.items():
        print(f"  {name:>16}: {statistics.median(values):.0f} µs")


if __name__ == "__main__":
    main()
