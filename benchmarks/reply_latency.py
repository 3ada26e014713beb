"""Reply latency over the end-user websocket: user message -> first bot frame.

Usage (starts its own server with the newest model in models/):

    .venv/bin/python -m benchmarks.reply_latency --messages 500

or against a running server (e.g. one started by `make run`): add --url ws://127.0.0.1:5005/ws/user

Sends held-out test messages (tests/data/heldout_nlu.yml), one at a time, over --connections
parallel conversations; prints median, p90, p99 and max, and writes JSON with --json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

import yaml
from websockets.client import connect

from benchmarks.server_process import running_server

ROOT = Path(__file__).resolve().parent.parent
HELDOUT = ROOT / "tests" / "data" / "heldout_nlu.yml"


def heldout_texts() -> list[str]:
    import re

    document = yaml.safe_load(HELDOUT.read_text(encoding="utf-8"))
    texts = []
    for block in document["nlu"]:
        for line in block.get("examples", "").splitlines():
            if line.strip().startswith("- "):
                texts.append(re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", line.strip()[2:]))
    return texts


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


async def conversation(
    url: str, texts: list[str], latencies: list[float], handoffs: list[str]
) -> None:
    """Send ``texts`` one by one; time each until its first answer (a bot message, or the
    handoff notice). After a handoff the next message starts a new conversation."""
    remaining = list(texts)
    while remaining:
        async with connect(url) as ws:
            ready = json.loads(await ws.recv())
            assert ready["type"] == "ready", ready
            while remaining:
                text = remaining.pop(0)
                client_id = uuid.uuid4().hex
                started = time.perf_counter()
                await ws.send(json.dumps({"type": "message", "id": client_id, "text": text}))
                while True:
                    frame = json.loads(await ws.recv())
                    if frame["type"] == "error":
                        raise RuntimeError(f"server refused {text!r}: {frame}")
                    if frame["type"] == "bot" and frame.get("in_reply_to") == client_id:
                        break
                    if frame["type"] == "handoff":
                        break
                latencies.append((time.perf_counter() - started) * 1000)
                with contextlib.suppress(asyncio.TimeoutError):
                    while True:  # the rest of a multi-message answer
                        await asyncio.wait_for(ws.recv(), 0.05)
                if frame["type"] == "handoff":
                    handoffs.append(text)
                    break


async def run(url: str, messages: int, connections: int) -> dict[str, float]:
    texts = list(itertools.islice(itertools.cycle(heldout_texts()), messages))
    shares = [texts[i::connections] for i in range(connections)]
    latencies: list[float] = []
    handoffs: list[str] = []
    started = time.perf_counter()
    await asyncio.gather(*(conversation(url, share, latencies, handoffs) for share in shares))
    wall = time.perf_counter() - started
    return {
        "messages": len(latencies),
        "connections": connections,
        "median_ms": statistics.median(latencies),
        "p90_ms": percentile(latencies, 0.90),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": max(latencies),
        "wall_s": wall,
        "messages_per_s": len(latencies) / wall,
        "handed_off": len(handoffs),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="user websocket URL of a running server (default: start one)")
    parser.add_argument("--port", type=int, default=5124, help="port of the server it starts")
    parser.add_argument("--model", type=Path, default=ROOT / "models", help="model to serve")
    parser.add_argument("--messages", type=int, default=500, help="messages to send (default 500)")
    parser.add_argument("--connections", type=int, default=1, help="parallel conversations")
    parser.add_argument("--json", type=Path, help="write the results as JSON to this file")
    args = parser.parse_args()
    if args.messages < 1 or args.connections < 1:
        parser.error("--messages and --connections must be at least 1")
    with contextlib.ExitStack() as stack:
        url = args.url
        if url is None:
            no_rate_limit = {
                "HANDOFF_USER_RATE_PER_SECOND": "1000",
                "HANDOFF_USER_RATE_BURST": "1000",
            }
            base, _ = stack.enter_context(running_server(args.port, args.model, no_rate_limit))
            url = base.replace("http://", "ws://") + "/ws/user"
        print(f"Sending {args.messages} messages over {args.connections} conversation(s) to {url}")
        results = asyncio.run(run(url, args.messages, args.connections))
    print(
        f"{'messages':>10} {'median ms':>10} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} {'msg/s':>8}"
    )
    print(
        f"{results['messages']:>10} {results['median_ms']:>10.1f} {results['p90_ms']:>8.1f} "
        f"{results['p99_ms']:>8.1f} {results['max_ms']:>8.1f} {results['messages_per_s']:>8.1f}"
    )
    print(f"({results['handed_off']} messages were handed off: their answer is the notice)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
