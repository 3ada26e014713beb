"""Reply latency: user message -> first answer, ours against a plain `rasa run`.

Usage (starts its own servers with the newest model in models/):

    .venv/bin/python -m benchmarks.reply_latency --messages 500

Sends held-out test messages (tests/data/heldout_nlu.yml), one at a time per conversation, over
--connections parallel conversations, with the same model:

1. to ``handoff serve``'s end-user websocket (``/ws/user``): time to the first answer frame;
2. to ``handoff serve``'s REST channel (``POST /webhooks/rest/webhook``) and to a plain
   ``rasa run`` (REST channel only, no ``--enable-api``, trackers in SQLite like ours;
   ``--rasa-tracker-store memory`` for Rasa's default), each message to one server and then
   the other (alternating which goes first), so that both see the same load on a shared
   machine; a handoff by ours starts a new conversation on both. Our overhead is the ratio
   of the two. Messages ours hands off skip Rasa's dialogue turn there (not in `rasa run`),
   so the ratio is also given over the messages ours answered with the bot ("bot-answered").

Prints median, p90, p99 and max of each and the ratios; writes JSON with --json. Against a
running server (e.g. `make run`): --url ws://127.0.0.1:5005/ws/user (then --model must be the
model it serves, for the `rasa run` comparison; --no-rasa skips it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import itertools
import json
import statistics
import sys
import time
import urllib.parse
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from websockets.client import connect

from benchmarks.rasa_server import TRACKER_STORES, newest_model, running_rasa
from benchmarks.server_process import running_server

ROOT = Path(__file__).resolve().parent.parent
HELDOUT = ROOT / "tests" / "data" / "heldout_nlu.yml"
REST_PATH = "/webhooks/rest/webhook"


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


def summarize(
    latencies: list[float], connections: int, wall: float | None = None
) -> dict[str, float]:
    summary = {
        "messages": len(latencies),
        "connections": connections,
        "median_ms": statistics.median(latencies),
        "p90_ms": percentile(latencies, 0.90),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": max(latencies),
    }
    if wall is not None:
        summary |= {"wall_s": wall, "messages_per_s": len(latencies) / wall}
    return summary


# Websocket ----------------------------------------------------------------------------------


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
    return {**summarize(latencies, connections, wall), "handed_off": len(handoffs)}


# REST ---------------------------------------------------------------------------------------


class RestClient:
    """One user on one server's REST channel, over a kept-alive HTTP connection."""

    def __init__(self, base: str) -> None:
        parts = urllib.parse.urlsplit(base)
        self.base = base
        self.connection = http.client.HTTPConnection(
            parts.hostname or "127.0.0.1", parts.port, timeout=120
        )
        self.sender = uuid.uuid4().hex

    def send(self, text: str) -> tuple[float, bool]:
        """Post one message; return the latency (ms) and whether it was handed off."""
        body = json.dumps({"sender": self.sender, "message": text})
        started = time.perf_counter()
        self.connection.request("POST", REST_PATH, body, {"Content-Type": "application/json"})
        response = self.connection.getresponse()
        raw = response.read()
        latency = (time.perf_counter() - started) * 1000
        if response.status != 200:
            raise RuntimeError(f"{self.base} answered {text!r} with {response.status}: {raw!r}")
        answers = json.loads(raw)
        return latency, any((answer.get("custom") or {}).get("handoff") for answer in answers)

    def new_conversation(self) -> None:
        self.sender = uuid.uuid4().hex

    def close(self) -> None:
        self.connection.close()


@dataclass
class UserRun:
    latencies: dict[str, list[float]]
    """Per server base URL, the latency (ms) of each message."""
    handed_off: list[int]
    """Indexes of the messages our server handed off (after each, a new conversation)."""


def rest_user(bases: list[str], texts: list[str]) -> UserRun:
    """One user sending ``texts`` one by one to each server in turn (alternating which goes
    first), so that both see the same load on a shared machine. After a message the first
    server (ours) hands off, the user starts a new conversation on every server."""
    clients = [RestClient(base) for base in bases]
    run = UserRun({base: [] for base in bases}, [])
    try:
        for index, text in enumerate(texts):
            order = clients if index % 2 == 0 else clients[::-1]
            handoffs = {client.base: client.send(text) for client in order}
            for client in clients:
                run.latencies[client.base].append(handoffs[client.base][0])
            if handoffs[bases[0]][1]:
                run.handed_off.append(index)
                for client in clients:
                    client.new_conversation()
    finally:
        for client in clients:
            client.close()
    return run


def run_rest(bases: list[str], messages: int, connections: int) -> tuple[list[UserRun], float]:
    """The REST pass: ``connections`` users in parallel threads, each sending its share of the
    messages to every server in ``bases`` (ours first). Returns the users' runs and the wall
    time."""
    texts = list(itertools.islice(itertools.cycle(heldout_texts()), messages))
    shares = [texts[i::connections] for i in range(connections)]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=connections) as pool:
        runs = list(pool.map(rest_user, [bases] * connections, shares))
    return runs, time.perf_counter() - started


def latencies_of(runs: list[UserRun], base: str, *, bot_answered_only: bool = False) -> list[float]:
    """All latencies of one server, or only those of messages our server did not hand off."""
    return [
        latency
        for run in runs
        for index, latency in enumerate(run.latencies[base])
        if not (bot_answered_only and index in run.handed_off)
    ]


def warm_up(base: str, count: int) -> None:
    """A few untimed messages first: the first predictions build TensorFlow functions."""
    client = RestClient(base)
    try:
        for text in heldout_texts()[:count]:
            client.send(text)
    finally:
        client.close()


def served_model(base: str) -> str | None:
    """The model name ``handoff serve`` reports on /health."""
    with urllib.request.urlopen(f"{base}/health", timeout=10) as response:
        name: str | None = json.loads(response.read()).get("model")
        return name


# Output -------------------------------------------------------------------------------------


def ratios(ours: dict[str, Any], rasa: dict[str, Any]) -> dict[str, float]:
    return {key: ours[key] / rasa[key] for key in ("median_ms", "p90_ms", "p99_ms", "max_ms")}


def print_table(results: dict[str, Any]) -> None:
    store = results.get("rasa_tracker_store")
    rows = [
        ("handoff serve, websocket", results),
        ("handoff serve, REST", results.get("rest")),
        (f"rasa run, REST ({store})", results.get("rasa_rest")),
        ("handoff serve, REST, bot-answered", results.get("rest_bot_answered")),
        (f"rasa run, REST ({store}), same msgs", results.get("rasa_rest_bot_answered")),
    ]
    print(
        f"{'server, channel':<38} {'messages':>8} {'median ms':>10} {'p90 ms':>8} {'p99 ms':>8} "
        f"{'max ms':>8} {'msg/s':>7}"
    )
    for name, row in rows:
        if row:
            rate = f"{row['messages_per_s']:>7.1f}" if "messages_per_s" in row else f"{'-':>7}"
            print(
                f"{name:<38} {row['messages']:>8} {row['median_ms']:>10.1f} {row['p90_ms']:>8.1f} "
                f"{row['p99_ms']:>8.1f} {row['max_ms']:>8.1f} {rate}"
            )
    note = "; bot-answered: the REST messages ours answered with the bot" if store else ""
    print(
        f"({results['handed_off']} websocket messages were handed off: their answer is the "
        f"notice{note})"
    )
    for key, label in (
        ("overhead_rest", "REST, all messages"),
        ("overhead_rest_bot_answered", "REST, bot-answered"),
        ("overhead_websocket", "websocket vs REST"),
    ):
        if key in results:
            ratio = results[key]
            print(
                f"ours / rasa run ({label}): median x{ratio['median_ms']:.2f}, "
                f"p90 x{ratio['p90_ms']:.2f}, p99 x{ratio['p99_ms']:.2f}"
            )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="See docs/benchmarks.md for results and how to read them.",
    )
    parser.add_argument("--url", help="user websocket URL of a running server (default: start one)")
    parser.add_argument(
        "--port", type=int, default=5124, help="port of the server it starts (default 5124)"
    )
    parser.add_argument(
        "--model", type=Path, default=ROOT / "models", help="model (or folder: newest) to serve"
    )
    parser.add_argument("--messages", type=int, default=500, help="messages to send (default 500)")
    parser.add_argument(
        "--connections", type=int, default=1, help="parallel conversations (default 1)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=3,
        help="untimed messages sent to each server first (default 3)",
    )
    parser.add_argument("--no-rasa", action="store_true", help="skip the `rasa run` comparison")
    parser.add_argument(
        "--rasa-tracker-store",
        choices=TRACKER_STORES,
        default="sqlite",
        help="tracker store of `rasa run`: a SQLite file like ours (default), or in memory",
    )
    parser.add_argument("--json", type=Path, help="write the results as JSON to this file")
    return parser


def main() -> int:
    parser = build_parser()
    args = parser.parse_args()
    if args.messages < 1 or args.connections < 1 or args.warmup < 0:
        parser.error("--messages and --connections must be at least 1, --warmup at least 0")
    model = None
    if not args.no_rasa or args.url is None:
        try:
            model = newest_model(args.model)
        except FileNotFoundError as error:
            parser.error(str(error))
    with contextlib.ExitStack() as stack:
        url = args.url
        if url is None:
            assert model is not None
            no_rate_limit = {
                "HANDOFF_USER_RATE_PER_SECOND": "1000",
                "HANDOFF_USER_RATE_BURST": "1000",
            }
            base = stack.enter_context(running_server(args.port, model, no_rate_limit)).base
            url = base.replace("http://", "ws://") + "/ws/user"
        base = (
            url.replace("ws://", "http://").replace("wss://", "https://").removesuffix("/ws/user")
        )
        serving = served_model(base)
        bases = [base]
        if not args.no_rasa:
            assert model is not None
            if serving != model.name:
                print(f"warning: the server serves {serving}, `rasa run` will serve {model.name}")
            bases.append(stack.enter_context(running_rasa(model, args.rasa_tracker_store)))
        for each in bases:
            warm_up(each, args.warmup)
        print(f"Sending {args.messages} messages over {args.connections} conversation(s) to {url}")
        results: dict[str, Any] = asyncio.run(run(url, args.messages, args.connections))
        results["model"] = serving
        turns = ", in turns" if len(bases) > 1 else ""
        print(f"... and over REST to {' and '.join(b + REST_PATH for b in bases)}{turns}")
        runs, wall = run_rest(bases, args.messages, args.connections)
    # With `rasa run` each user alternates between the servers: the wall time is shared.
    results["rest"] = summarize(
        latencies_of(runs, base), args.connections, wall if args.no_rasa else None
    )
    results["rest"]["new_conversations"] = sum(len(run.handed_off) for run in runs)
    if not args.no_rasa:
        rasa = bases[1]
        results["rasa_tracker_store"] = args.rasa_tracker_store
        results["rasa_rest"] = summarize(latencies_of(runs, rasa), args.connections)
        # Handed-off messages skip Rasa's dialogue turn in our server, not in `rasa run`.
        results["rest_bot_answered"] = summarize(
            latencies_of(runs, base, bot_answered_only=True), args.connections
        )
        results["rasa_rest_bot_answered"] = summarize(
            latencies_of(runs, rasa, bot_answered_only=True), args.connections
        )
        results["overhead_rest"] = ratios(results["rest"], results["rasa_rest"])
        results["overhead_rest_bot_answered"] = ratios(
            results["rest_bot_answered"], results["rasa_rest_bot_answered"]
        )
        results["overhead_websocket"] = ratios(results, results["rasa_rest"])
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
