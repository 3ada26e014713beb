"""Hot swap under traffic: does any reply wait for a model load?

Starts ``handoff serve`` on a temporary models folder holding a copy of the newest archive in
models/ (or --model), registered as the live model in the server's (temporary SQLite)
registry, with HANDOFF_MODEL_POLL_SECONDS=1. --users users (default 20) each send a message the
bot answers ("hello", "what is my balance", in turn) at --rate messages per second (default 1)
over the user websocket (``/ws/user``), starting a new conversation every
--messages-per-conversation messages so that Rasa's trackers stay short. After --warmup s
(not counted) and --before s more, a second archive (a copy of the model under a new file name)
is registered and made live, as ``handoff train --promote`` does; the traffic goes on until
``/health`` names the new model and --after s more, then every missing answer is waited for
(up to --drain s).

Reply latency (user send -> the first ``bot`` frame answering that message) is reported by when
the message was sent: "before" (before the promotion), "during" (promotion -> /health names the
new model) and "after"; with the swap's duration, the peak resident memory of the server and its
assistant workers during the swap, and every message not answered by the bot (handed off,
refused, or no answer at all).

With --handed-off N, N more conversations are handed off and claimed first, and each sends a
message at 1 msg/s that its agent answers at once, during the whole run; their relay latency
(both ways) is reported over the whole run, the swap included.

It runs once per --assistant-workers value (default 0 and 1: the model in the server process,
or one worker process), and with --checkout once more on that checkout's server (e.g. the
previous main in a ``git worktree``), in turns for --rounds rounds:

    .venv/bin/python -m benchmarks.hot_swap
    .venv/bin/python -m benchmarks.hot_swap --checkout /tmp/prev-main --json out.json

It prints a table and writes JSON (--json). One server runs at a time; each start and each
swap loads the model (30-90 s on 2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import shutil
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from websockets.client import connect
from websockets.exceptions import ConnectionClosed

from benchmarks.rasa_server import newest_model
from benchmarks.relay_latency import percentile
from benchmarks.relay_load import Load, Phase, create_agents, phase_result
from benchmarks.server_process import free_port, rss_with_children, running_server

__all__ = [
    "WINDOWS",
    "Sample",
    "Variant",
    "split_by_window",
    "window_summary",
]

ROOT = Path(__file__).resolve().parent.parent
TEXTS = ("hello", "what is my balance")
"""Messages the bundled bot answers itself (greet, check_balance)."""
WINDOWS = ("warmup", "before", "during", "after")
MIB = 1024 * 1024
HEALTH_POLL_S = 0.2
RELAY_FOR_S = 3600.0
"""The handed-off conversations' phase length: longer than any run (it is cut off at the end)."""


class Sample(NamedTuple):
    """One user message: when it was sent (perf_counter s) and how it ended."""

    sent_at: float
    latency_ms: float | None
    """Send -> first bot frame answering it; None if the bot did not answer."""
    outcome: str
    """"answered", "handed_off", "refused" (an error frame) or "unanswered"."""


def split_by_window(
    samples: list[Sample], warmup_end: float, promoted: float, switched: float
) -> dict[str, list[Sample]]:
    """Group samples by send time: ``warmup`` before ``warmup_end``, ``before`` until the
    promotion, ``during`` until /health named the new model, ``after`` from then on."""
    if not warmup_end <= promoted <= switched:
        raise ValueError("expected warmup_end <= promoted <= switched")
    windows: dict[str, list[Sample]] = {name: [] for name in WINDOWS}
    for sample in samples:
        if sample.sent_at < warmup_end:
            windows["warmup"].append(sample)
        elif sample.sent_at < promoted:
            windows["before"].append(sample)
        elif sample.sent_at < switched:
            windows["during"].append(sample)
        else:
            windows["after"].append(sample)
    return windows


def window_summary(samples: list[Sample]) -> dict[str, Any]:
    """Count, latency median / p99 / max (ms) of the answered ones, and how many were not."""
    latencies = sorted(s.latency_ms for s in samples if s.latency_ms is not None)
    summary: dict[str, Any] = {
        "messages": len(samples),
        "answered": len(latencies),
        "not_answered": {
            outcome: sum(1 for s in samples if s.outcome == outcome)
            for outcome in ("handed_off", "refused", "unanswered")
        },
    }
    if latencies:
        summary |= {
            "median_ms": percentile(latencies, 0.5),
            "p99_ms": percentile(latencies, 0.99),
            "max_ms": latencies[-1],
        }
    return summary


@dataclass(frozen=True)
class Variant:
    """One server set-up to measure."""

    label: str
    assistant_workers: int | None
    """HANDOFF_ASSISTANT_WORKERS (None: not set, the server's default)."""
    checkout: Path | None = None


@dataclass
class Pending:
    sent_at: float
    outcome: str = "unanswered"
    latency_ms: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Traffic:
    """The users: each sends on a fixed schedule and records the first answer to each."""

    def __init__(self, ws_url: str, users: int, rate: float, per_conversation: int) -> None:
        self.ws_url = ws_url
        self.users = users
        self.rate = rate
        self.per_conversation = per_conversation
        self.messages: dict[str, Pending] = {}
        self.stopping = asyncio.Event()
        self.send_lag_ms: list[float] = []

    async def _read(self, ws: Any, mine: list[Pending]) -> None:
        """Record the answers on one connection (``mine``: its messages, in send order)."""
        with contextlib.suppress(ConnectionClosed):
            async for raw in ws:
                frame = json.loads(raw)
                kind = frame.get("type")
                key = frame.get("in_reply_to") if kind == "bot" else frame.get("id")
                pending = self.messages.get(key) if isinstance(key, str) else None
                if kind == "handoff":  # names no message: this connection's oldest open one
                    pending = next((p for p in mine if not p.done.is_set()), None)
                if pending is None or pending.done.is_set():
                    continue
                if kind == "bot":
                    pending.outcome = "answered"
                    pending.latency_ms = (time.perf_counter() - pending.sent_at) * 1000
                    pending.done.set()
                elif kind in ("handoff", "error"):
                    pending.outcome = "handed_off" if kind == "handoff" else "refused"
                    pending.done.set()
                    if kind == "handoff":
                        print(f"warning: handed off: {frame}", flush=True)

    async def user(self, index: int, start: float, drain_s: float) -> None:
        offset = index / (self.users * self.rate)  # spread the users over one period
        number = 0
        while not self.stopping.is_set():
            async with connect(self.ws_url, max_queue=None, ping_interval=None) as ws:
                ready = json.loads(await ws.recv())
                assert ready["type"] == "ready", ready
                mine: list[Pending] = []
                reader = asyncio.create_task(self._read(ws, mine))
                for _ in range(self.per_conversation):
                    due = start + offset + number / self.rate
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
                    if self.stopping.is_set():
                        break
                    client_id = uuid.uuid4().hex
                    now = time.perf_counter()
                    self.send_lag_ms.append((now - due) * 1000)
                    pending = Pending(now)
                    self.messages[client_id] = pending
                    mine.append(pending)
                    text = TEXTS[number % len(TEXTS)]
                    number += 1
                    await ws.send(json.dumps({"type": "message", "id": client_id, "text": text}))
                # Every answer of this conversation before the next one (or the end).
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.gather(*(p.done.wait() for p in mine)), drain_s)
                reader.cancel()

    def samples(self) -> list[Sample]:
        return [Sample(p.sent_at, p.latency_ms, p.outcome) for p in self.messages.values()]


def health(base: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{base}/health", timeout=30) as response:
        body: dict[str, Any] = json.loads(response.read())
        return body


def prepare_models(source: Path, folder: Path) -> tuple[Path, Path]:
    """A models folder with a copy of ``source``; return it and the archive to promote later
    (a second copy under a new name, outside the folder until the promotion)."""
    models = folder / "models"
    models.mkdir()
    live = models / source.name
    shutil.copy2(source, live)
    second = folder / (source.name.removesuffix(".tar.gz") + "-swap.tar.gz")
    shutil.copy2(source, second)
    return models, second


async def register_live(database_url: str, archive: Path) -> None:
    """Record ``archive`` in the registry and make it the live model."""
    from handoff.storage.learning_store import LearningStore
    from handoff.storage.store import Store

    store = await Store.open(database_url)
    try:
        learning = LearningStore(store.engine)
        digest = hashlib.sha256(archive.name.encode()).hexdigest()
        await learning.register_model(archive.name, digest, None)
        await learning.set_model_outcome(archive.name, "live", None)
    finally:
        await store.close()


async def measure(
    args: argparse.Namespace, base: str, pid: int, database_url: str, models: Path, second: Path
) -> dict[str, Any]:
    served = (await asyncio.to_thread(health, base)).get("model")
    traffic = Traffic(
        base.replace("http://", "ws://") + "/ws/user",
        args.users,
        args.rate,
        args.messages_per_conversation,
    )
    relay: Load | None = None
    relaying: asyncio.Task[Phase] | None = None
    if args.handed_off:
        # Handed-off conversations at 1 msg/s, each answered by its agent at once, for the
        # whole run (the phase is cut off when the bot traffic stops).
        relay = Load(base, args.agents)
        await relay.connect_agents(
            await asyncio.to_thread(create_agents, database_url, base, args.agents)
        )
        await relay.open_until(args.handed_off)
        relaying = asyncio.create_task(
            relay.run_phase(args.handed_off, 1.0, RELAY_FOR_S, args.drain, RELAY_FOR_S)
        )
    start = time.perf_counter() + 0.5
    users = [asyncio.create_task(traffic.user(i, start, args.drain)) for i in range(args.users)]
    warmup_end = start + args.warmup
    await asyncio.sleep(max(0.0, warmup_end + args.before - time.perf_counter()))
    rss_before = sum(rss_with_children(pid))
    # The promotion: the archive appears in the models folder, then the registry names it.
    staged = models / second.name
    shutil.move(second, staged)
    promoted = time.perf_counter()
    await register_live(database_url, staged)
    print(f"promoted {staged.name}; waiting for /health to name it", flush=True)
    peak_rss = rss_before
    switched = None
    while time.perf_counter() - promoted < args.swap_timeout:
        polled = time.perf_counter()
        with contextlib.suppress(OSError):
            if (await asyncio.to_thread(health, base)).get("model") == staged.name:
                switched = polled  # the poll that first saw it was sent then
                break
        with contextlib.suppress(OSError, RuntimeError):
            peak_rss = max(peak_rss, sum(rss_with_children(pid)))
        await asyncio.sleep(HEALTH_POLL_S)
    if switched is None:
        print(f"warning: no switch within {args.swap_timeout:.0f} s", flush=True)
        switched = time.perf_counter()
    else:
        print(f"switched after {switched - promoted:.1f} s", flush=True)
    await asyncio.sleep(args.after)
    traffic.stopping.set()
    await asyncio.gather(*users)
    handed_off: dict[str, Any] | None = None
    if relay is not None and relaying is not None:
        assert relay.phase is not None
        relay.phase.cut_off = True  # stop sending; what was sent is still checked
        handed_off = phase_result(await relaying, 1.0, 100.0)
        await relay.close()
    after_health = await asyncio.to_thread(health, base)
    windows = split_by_window(traffic.samples(), warmup_end, promoted, switched)
    not_answered = [
        {"window": name, "outcome": s.outcome, "sent_s": round(s.sent_at - start, 2)}
        for name, samples in windows.items()
        for s in samples
        if s.outcome != "answered"
    ]
    return {
        "model_before": served,
        "model_after": after_health.get("model"),
        "assistant": after_health.get("assistant"),
        "swap_s": round(switched - promoted, 2),
        "switched": after_health.get("model") == staged.name,
        "rss_before_mib": round(rss_before / MIB, 1),
        "peak_rss_during_swap_mib": round(peak_rss / MIB, 1),
        "windows": {name: window_summary(samples) for name, samples in windows.items()},
        "send_lag_p99_ms": percentile(sorted(traffic.send_lag_ms), 0.99),
        "not_answered": not_answered,
        "handed_off": handed_off,
    }


def run_variant(args: argparse.Namespace, variant: Variant, source: Path) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="handoff-hot-swap-"))
    try:
        from handoff.storage.migrate import upgrade

        models, second = prepare_models(source, folder)
        database_url = f"sqlite:///{folder / 'bench.db'}"
        upgrade(database_url)
        asyncio.run(register_live(database_url, models / source.name))
        env = {
            "HANDOFF_DATABASE_URL": database_url,
            "HANDOFF_MODEL_POLL_SECONDS": "1",
            "HANDOFF_USER_RATE_PER_SECOND": "1000",
            "HANDOFF_USER_RATE_BURST": "1000",
        }
        if variant.assistant_workers is not None:
            env["HANDOFF_ASSISTANT_WORKERS"] = str(variant.assistant_workers)
        port = args.port or free_port()
        with running_server(port, models, env, variant.checkout) as server:
            result = asyncio.run(
                measure(args, server.base, server.pid, database_url, models, second)
            )
        return {"variant": variant.label, **result}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def cell(window: dict[str, Any], key: str) -> str:
    return f"{window[key]:>8.1f}" if key in window else f"{'-':>8}"


def print_table(runs: list[dict[str, Any]]) -> None:
    print(
        f"{'server':<22} {'round':>5} {'window':<7} {'msgs':>5} {'median':>8} {'p99':>8} "
        f"{'max':>8} {'not ans':>7} {'swap s':>7} {'peak MiB':>9}"
    )
    for run in runs:
        for name in WINDOWS[1:]:
            window = run["windows"][name]
            missing = sum(window["not_answered"].values())
            extra = (
                f"{run['swap_s']:>7.1f} {run['peak_rss_during_swap_mib']:>9.0f}"
                if name == "during"
                else ""
            )
            print(
                f"{run['variant']:<22} {run['round']:>5} {name:<7} {window['messages']:>5} "
                f"{cell(window, 'median_ms')} {cell(window, 'p99_ms')} {cell(window, 'max_ms')} "
                f"{missing:>7} {extra}",
                flush=True,
            )


def variants_of(args: argparse.Namespace) -> list[Variant]:
    variants = [Variant(f"workers={n}", n) for n in args.assistant_workers]
    if args.checkout is not None:
        variants.append(Variant(f"checkout {args.checkout.name}", None, args.checkout))
    return variants


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="About 3-5 minutes per server on 2 cores. See docs/benchmarks.md.",
    )
    parser.add_argument(
        "--assistant-workers",
        type=lambda text: [int(x) for x in text.split(",")],
        default=[0, 1],
        help="HANDOFF_ASSISTANT_WORKERS values to measure, comma-separated (default 0,1)",
    )
    parser.add_argument(
        "--checkout",
        type=Path,
        help="also measure the server of this checkout (e.g. a worktree of the previous main)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="rounds of all servers (1)")
    parser.add_argument("--users", type=int, default=20, help="users sending (default 20)")
    parser.add_argument("--rate", type=float, default=1.0, help="msg/s per user (default 1)")
    parser.add_argument(
        "--messages-per-conversation",
        type=int,
        default=20,
        help="a user starts a new conversation after this many messages (20)",
    )
    parser.add_argument("--warmup", type=float, default=5, help="seconds not counted (5)")
    parser.add_argument(
        "--before", type=float, default=15, help="seconds measured before the promotion (15)"
    )
    parser.add_argument(
        "--after", type=float, default=10, help="seconds of traffic after the switch (10)"
    )
    parser.add_argument(
        "--swap-timeout", type=float, default=300, help="give up on the switch after (300 s)"
    )
    parser.add_argument(
        "--drain", type=float, default=30, help="wait up to this for missing answers (30 s)"
    )
    parser.add_argument(
        "--handed-off",
        type=int,
        default=0,
        help="also this many handed-off conversations at 1 msg/s, each answered by an agent, "
        "during the whole run (default 0); their relay latency is reported for the whole run",
    )
    parser.add_argument("--agents", type=int, default=10, help="agents answering them (default 10)")
    parser.add_argument("--port", type=int, help="server port (default: a free one)")
    parser.add_argument(
        "--model", type=Path, default=ROOT / "models", help="model (or folder: newest) to serve"
    )
    parser.add_argument("--json", type=Path, help="write the results as JSON to this file")
    return parser


def main() -> int:
    parser = build_parser()
    args = parser.parse_args()
    if args.users < 1 or args.rate <= 0 or args.rounds < 1 or args.messages_per_conversation < 1:
        parser.error("--users, --rounds, --messages-per-conversation >= 1; --rate positive")
    if min(args.assistant_workers) < 0 or min(args.warmup, args.before, args.after) < 0:
        parser.error("--assistant-workers, --warmup, --before and --after must not be negative")
    try:
        source = newest_model(args.model)
    except FileNotFoundError as error:
        parser.error(str(error))
    started = time.perf_counter()
    runs: list[dict[str, Any]] = []
    for round_number in range(1, args.rounds + 1):
        for variant in variants_of(args):
            print(f"== round {round_number}: {variant.label}", flush=True)
            runs.append({"round": round_number, **run_variant(args, variant, source)})
    print_table(runs)
    for run in runs:
        relay = run.get("handed_off")
        if relay:
            there, back = relay["user_to_agent"], relay["agent_to_user"]
            print(
                f"{run['variant']} round {run['round']}: {relay['conversations']} handed-off "
                f"conversations, {relay['messages']} messages over the whole run: user -> agent "
                f"{there.get('median_ms', 0):.1f} / {there.get('p99_ms', 0):.1f} / "
                f"{there.get('max_ms', 0):.1f} ms, agent -> user {back.get('median_ms', 0):.1f} / "
                f"{back.get('p99_ms', 0):.1f} / {back.get('max_ms', 0):.1f} ms (median / p99 / "
                f"max); lost {relay['lost_to_agent'] + relay['lost_to_user']}, duplicated "
                f"{relay['duplicated_to_agent'] + relay['duplicated_to_user']}",
                flush=True,
            )
    for run in runs:
        for item in run["not_answered"]:
            print(f"not answered ({run['variant']}, round {run['round']}): {item}")
    results = {
        "runs": runs,
        "model": source.name,
        "settings": {
            k: str(v) if isinstance(v, Path) else v
            for k, v in vars(args).items()
            if k not in ("json", "port")
        },
        "wall_s": round(time.perf_counter() - started, 1),
    }
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
