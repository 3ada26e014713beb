"""Relay under load: how many handed-off conversations one server process carries.

Starts ``handoff serve`` (SQLite, the newest model in models/) in its own process and drives it
from this one: --agents agent connections, and user connections opened, handed off and claimed
in steps (--levels, default 100, 500 and 1,000 conversations). At each level every open
conversation sends --rate messages per second (default 1) for --duration seconds; the agent
that claimed it answers each message at once. Measured, matched by message: user send -> agent
receive, agent send -> user receive, and user send -> the agent receives the model's intent
guesses for it ("NLU lag": Rasa parses relayed messages after relaying them). A step whose
server falls behind stops sending early, once a message or reply has waited --overload-s
seconds for delivery (column "sent", marked *): the backlog of an overloaded server only grows,
and every message sent is still checked. After a step it waits for every answer and guess
until nothing has arrived for --stall seconds ("drain" is how long that took after the last
send): what is missing then is lost, and the next step starts on an idle server. The resident
memory of the server process and, separately, of its children (the assistant worker
processes, --assistant-workers) is read after each level's conversations open, and again after
each step (the trackers a worker keeps grow with the conversations).

It also searches for the highest sustained rate: the most conversations, at --rate each, whose
p99 stays within --p99-limit-ms (default 100) in both directions with nothing lost or
duplicated, by bisection (--search-steps rounds, on conversations already open) below the first
level that fails, right after it.

    .venv/bin/python -m benchmarks.relay_load
    .venv/bin/python -m benchmarks.relay_load --checkout /tmp/prev-main   # another checkout
    .venv/bin/python -m benchmarks.relay_load --floor   # bare sanic + websockets, same frames

It prints a table per step and writes JSON (--json). The load generator's own CPU use is
reported ("gen"): near 100 % of a core, the generator, not the server, would set the limit.
So is the server process's CPU time per relayed message ("srv µs": its user and system time
during the step, the drain included, over twice the user messages sent): what the server
spends on a message whatever the machine's load, the steadier figure to compare versions by.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.client import connect
from websockets.exceptions import ConnectionClosed

from benchmarks.relay_latency import PASSWORD, login, percentile
from benchmarks.server_process import rss_with_children, running_server, serving_process

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SETUP_CONCURRENCY = 8
"""Conversations handed off and claimed at once while opening a level."""
MIB = 1024 * 1024


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "median_ms": percentile(ordered, 0.5),
        "p99_ms": percentile(ordered, 0.99),
        "max_ms": ordered[-1],
    }


@dataclass
class Phase:
    """What one load step measured."""

    active: int
    sent_at: dict[str, float] = field(default_factory=dict)
    to_agent: list[float] = field(default_factory=list)
    to_user: list[float] = field(default_factory=list)
    intents_lag: list[float] = field(default_factory=list)
    send_lag: list[float] = field(default_factory=list)
    agent_seen: Counter[str] = field(default_factory=Counter)
    user_seen: Counter[str] = field(default_factory=Counter)
    token_of_message: dict[int, str] = field(default_factory=dict)
    replies_due: int = 0
    generator_cpu: float = 0.0
    closed_connections: int = 0
    backlog_s: float = 0.0
    """How long after the last send the last answer and intent guess arrived."""
    unanswered: OrderedDict[str, float] = field(default_factory=OrderedDict)
    """Sent user messages not yet at their agent and replies not yet at their user, oldest
    first (insertion order is send order)."""
    sending_s: float = 0.0
    """How long the users sent; shorter than asked when the step was cut off."""
    cut_off: bool = False
    """The step stopped sending early: a message waited longer than the overload limit."""


class Load:
    """The agents' and users' connections, and the phase being measured."""

    def __init__(self, base: str, agents: int) -> None:
        self.base = base
        self.ws_base = base.replace("http://", "ws://")
        self.agent_count = agents
        self.agents: list[Any] = []
        self.users: list[tuple[str, Any]] = []
        self.pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.user_frames: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self.phase: Phase | None = None
        self.step = 0
        self.tasks: list[asyncio.Task[None]] = []

    async def connect_agents(self, tokens: list[str]) -> None:
        for token in tokens:
            ws = await connect(
                f"{self.ws_base}/ws/agent",
                origin=self.base,  # type: ignore[arg-type]
                extra_headers={"Authorization": f"Bearer {token}"},
                max_queue=None,
                ping_interval=None,  # an overloaded server must not cost the measurement
            )
            hello = json.loads(await ws.recv())
            assert hello["type"] == "hello", hello
            self.agents.append(ws)
            self.tasks.append(asyncio.create_task(self._agent_reader(ws)))

    async def _agent_reader(self, ws: Any) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in ws:
                frame = json.loads(raw)
                kind = frame.get("type")
                if kind in ("ack", "error") and frame.get("id") in self.pending:
                    self.pending.pop(frame["id"]).set_result(frame)
                elif kind == "user_message" and self.phase is not None:
                    await self._answer(ws, frame)
                elif kind == "intents" and self.phase is not None:
                    token = self.phase.token_of_message.pop(frame["message_id"], None)
                    if token is not None:
                        self.phase.intents_lag.append(self._since(token))

    def _since(self, token: str) -> float:
        assert self.phase is not None
        return (time.perf_counter() - self.phase.sent_at[token]) * 1000

    async def _answer(self, ws: Any, frame: dict[str, Any]) -> None:
        phase = self.phase
        assert phase is not None
        token = frame["message"]["text"]
        if token not in phase.sent_at:
            return  # from an earlier step, arriving late
        phase.agent_seen[token] += 1
        if phase.agent_seen[token] > 1:
            return
        phase.to_agent.append(self._since(token))
        phase.unanswered.pop(token, None)
        phase.token_of_message[frame["message"]["message_id"]] = token
        reply = "re:" + token
        phase.sent_at[reply] = time.perf_counter()
        phase.unanswered[reply] = phase.sent_at[reply]
        await ws.send(
            json.dumps(
                {
                    "type": "reply",
                    "id": uuid.uuid4().hex,
                    "conversation_id": frame["conversation_id"],
                    "text": reply,
                }
            )
        )

    async def _user_reader(self, conversation_id: str, ws: Any) -> None:
        queue = self.user_frames[conversation_id]
        with contextlib.suppress(ConnectionClosed):
            async for raw in ws:
                frame = json.loads(raw)
                phase = self.phase
                if frame.get("type") == "agent" and phase is not None:
                    text = frame["text"]
                    if text in phase.sent_at:
                        phase.user_seen[text] += 1
                        if phase.user_seen[text] == 1:
                            phase.to_user.append(self._since(text))
                            phase.unanswered.pop(text, None)
                elif frame.get("type") in ("ready", "handoff", "error"):
                    queue.put_nowait(frame)

    async def _user_frame(self, conversation_id: str, type_: str, **match: Any) -> None:
        queue = self.user_frames[conversation_id]
        while True:
            frame = await asyncio.wait_for(queue.get(), 120)
            if frame["type"] == "error":
                raise RuntimeError(f"user {conversation_id} got {frame}")
            if frame["type"] == type_ and all(frame.get(k) == v for k, v in match.items()):
                return

    async def _agent_request(self, ws: Any, frame: dict[str, Any]) -> dict[str, Any]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[frame["id"]] = future
        await ws.send(json.dumps(frame))
        return await asyncio.wait_for(future, 120)

    async def open_conversation(self) -> None:
        """A user connects, asks for a person and is claimed by the next agent."""
        ws = await connect(f"{self.ws_base}/ws/user", max_queue=None, ping_interval=None)
        ready = json.loads(await ws.recv())
        assert ready["type"] == "ready", ready
        conversation_id = ready["conversation_id"]
        self.user_frames[conversation_id] = asyncio.Queue()
        self.tasks.append(asyncio.create_task(self._user_reader(conversation_id, ws)))
        await ws.send(
            json.dumps(
                {"type": "message", "id": uuid.uuid4().hex, "text": "I want to talk to a person"}
            )
        )
        await self._user_frame(conversation_id, "handoff", status="queued")
        agent = self.agents[len(self.users) % len(self.agents)]
        self.users.append((conversation_id, ws))
        answer = await self._agent_request(
            agent, {"type": "claim", "id": uuid.uuid4().hex, "conversation_id": conversation_id}
        )
        if answer["type"] != "ack":
            raise RuntimeError(f"claim of {conversation_id} refused: {answer}")
        await self._user_frame(conversation_id, "handoff", status="agent_joined")

    async def open_until(self, count: int) -> None:
        gate = asyncio.Semaphore(SETUP_CONCURRENCY)

        async def one() -> None:
            async with gate:
                await self.open_conversation()

        await asyncio.gather(*(one() for _ in range(count - len(self.users))))

    async def run_phase(
        self, active: int, rate: float, duration: float, stall: float, overload_s: float
    ) -> Phase:
        """``active`` conversations send ``rate`` msg/s each for ``duration`` s, or until a
        message or reply has waited ``overload_s`` for delivery (an overloaded server: going
        on would only grow the backlog). Then wait for every answer and intent guess, until
        nothing has arrived for ``stall`` s: what is missing then is lost, and the next step
        starts on an idle server."""
        phase = Phase(active=active)
        per_user = max(1, round(duration * rate))
        self.phase = phase
        self.step += 1
        spread = random.Random(self.step)
        start = time.perf_counter() + 0.5

        async def user(index: int, ws: Any, offset: float) -> None:
            for number in range(per_user):
                due = start + offset + number / rate
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                if phase.cut_off:
                    return
                token = f"s{self.step}-c{index}-m{number}"
                now = time.perf_counter()
                phase.send_lag.append((now - due) * 1000)
                phase.sent_at[token] = now
                phase.unanswered[token] = now
                phase.replies_due += 1
                try:
                    await ws.send(
                        json.dumps({"type": "message", "id": uuid.uuid4().hex, "text": token})
                    )
                except ConnectionClosed:  # the server dropped us: the rest counts as lost
                    phase.closed_connections += 1
                    return

        async def watch_overload() -> None:
            while True:
                await asyncio.sleep(0.1)
                oldest = next(iter(phase.unanswered.values()), None)
                if oldest is not None and time.perf_counter() - oldest > overload_s:
                    phase.cut_off = True
                    return

        cpu_before = time.process_time()
        wall_before = time.perf_counter()
        watchdog = asyncio.create_task(watch_overload())
        await asyncio.gather(
            *(
                user(index, ws, spread.uniform(0, 1 / rate))
                for index, (_, ws) in enumerate(self.users[:active])
            )
        )
        watchdog.cancel()
        sent = time.perf_counter()
        phase.sending_s = max(0.0, sent - start)
        phase.generator_cpu = (time.process_time() - cpu_before) / (sent - wall_before)
        progress, last_change = -1, time.perf_counter()
        while time.perf_counter() - last_change < stall:
            arrived = len(phase.to_user) + len(phase.intents_lag)
            if arrived >= 2 * phase.replies_due:
                break
            if arrived != progress:
                progress, last_change = arrived, time.perf_counter()
            await asyncio.sleep(0.2)
        phase.backlog_s = max(0.0, last_change - sent)
        await asyncio.sleep(0.5)  # late duplicates, if any
        self.phase = None
        return phase

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for ws in self.agents + [ws for _, ws in self.users]:
            with contextlib.suppress(Exception):
                await ws.close()


def phase_result(phase: Phase, rate: float, limit_ms: float) -> dict[str, Any]:
    user_tokens = [t for t in phase.sent_at if not t.startswith("re:")]
    result: dict[str, Any] = {
        "conversations": phase.active,
        "offered_msgs_per_s": phase.active * rate,
        "user_to_agent": summary(phase.to_agent),
        "agent_to_user": summary(phase.to_user),
        "intents_lag": summary(phase.intents_lag),
        "send_lag": summary(phase.send_lag),
        "messages": len(user_tokens),
        "sending_s": round(phase.sending_s, 1),
        "cut_off_overloaded": phase.cut_off,
        "lost_to_agent": sum(1 for t in user_tokens if phase.agent_seen[t] == 0),
        "duplicated_to_agent": sum(1 for t in user_tokens if phase.agent_seen[t] > 1),
        "lost_to_user": sum(1 for t in user_tokens if phase.user_seen["re:" + t] == 0),
        "duplicated_to_user": sum(1 for t in user_tokens if phase.user_seen["re:" + t] > 1),
        "generator_cpu": round(phase.generator_cpu, 3),
        "backlog_s": round(phase.backlog_s, 1),
        "closed_connections": phase.closed_connections,
    }
    exactly_once = not any(
        result[k]
        for k in ("lost_to_agent", "lost_to_user", "duplicated_to_agent", "duplicated_to_user")
    )
    within = all(
        result[d].get("p99_ms", float("inf")) <= limit_ms
        for d in ("user_to_agent", "agent_to_user")
    )
    result["sustained"] = exactly_once and within and not phase.cut_off
    return result


def print_row(result: dict[str, Any]) -> None:
    def cell(direction: str) -> str:
        row = result[direction]
        if not row.get("count"):
            return f"{'-':>8} {'-':>8} {'-':>8}"
        return f"{row['median_ms']:>8.1f} {row['p99_ms']:>8.1f} {row['max_ms']:>8.1f}"

    lost = result["lost_to_agent"] + result["lost_to_user"]
    duplicated = result["duplicated_to_agent"] + result["duplicated_to_user"]
    print(
        f"{result['conversations']:>6} {result['offered_msgs_per_s']:>7.0f} "
        f"{result['sending_s']:>5.0f}{'*' if result['cut_off_overloaded'] else ' '} "
        f"{cell('user_to_agent')} {cell('agent_to_user')} "
        f"{result['intents_lag'].get('median_ms', float('nan')):>8.0f} "
        f"{result['backlog_s']:>6.0f} {lost:>5} {duplicated:>4} "
        f"{result['generator_cpu'] * 100:>5.0f}% "
        f"{result.get('server_cpu_us_per_message', float('nan')):>7.0f} "
        f"{'yes' if result['sustained'] else 'NO':>4}",
        flush=True,
    )


HEADER = (
    f"{'convs':>6} {'msg/s':>7} {'sent':>6} {'u>a med':>8} {'p99':>8} {'max':>8} "
    f"{'a>u med':>8} {'p99':>8} {'max':>8} {'NLU lag':>8} {'drain':>6} {'lost':>5} {'dup':>4} "
    f"{'gen':>6} {'srv µs':>7} {'ok':>4}"
)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time process ``pid`` has used so far (Linux /proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def create_agents(database_url: str, base: str, count: int) -> list[str]:
    """A maintainer by the CLI, the other agents through the API; return their tokens."""
    env = {**os.environ, "HANDOFF_DATABASE_URL": database_url}
    subprocess.run(
        [
            str(BIN / "handoff"),
            *("agents", "add", "bench0", "--name", "Bench 0"),
            *("--role", "maintainer", "--password-stdin"),
        ],
        input=PASSWORD + "\n",
        text=True,
        env=env,
        check=True,
        capture_output=True,
    )
    maintainer = login(base, "bench0")
    import urllib.request

    for index in range(1, count):
        body = {
            "username": f"bench{index}",
            "display_name": f"Bench {index}",
            "password": PASSWORD,
            "role": "agent",
        }
        request = urllib.request.Request(
            f"{base}/api/agents",
            data=json.dumps(body).encode(),
            headers={
                "Content-Type": "application/json",
                "Origin": base,
                "Authorization": f"Bearer {maintainer}",
            },
            method="POST",
        )
        urllib.request.urlopen(request, timeout=30).close()
    return [maintainer] + [login(base, f"bench{index}") for index in range(1, count)]


async def measure(
    args: argparse.Namespace, base: str, pid: int, database_url: str | None
) -> dict[str, Any]:
    """Run the levels against the server at ``base`` (process ``pid``); agents are created in
    ``database_url``, or none are (the floor server takes any token)."""
    load = Load(base, args.agents)
    tokens = (
        create_agents(database_url, base, args.agents)
        if database_url is not None
        else [f"floor{index}" for index in range(args.agents)]
    )
    await load.connect_agents(tokens)
    # Warm up the bot turn and the relay path before the memory baseline.
    await load.open_until(2)
    await load.run_phase(2, args.rate, 2, args.stall, args.overload_s)
    await asyncio.sleep(1)
    baseline_rss, baseline_workers_rss = rss_with_children(pid)
    print(
        f"{args.agents} agents connected; RSS: server {baseline_rss / MIB:.0f} MiB, "
        f"assistant workers {baseline_workers_rss / MIB:.0f} MiB",
        flush=True,
    )
    results: dict[str, Any] = {"levels": [], "search": [], "memory": []}
    print(HEADER, flush=True)

    async def step(active: int) -> dict[str, Any]:
        cpu_before = process_cpu_seconds(pid)
        phase = await load.run_phase(active, args.rate, args.duration, args.stall, args.overload_s)
        result = phase_result(phase, args.rate, args.p99_limit_ms)
        relayed = 2 * result["messages"]  # each user message and the agent's answer to it
        result["server_cpu_us_per_message"] = round(
            (process_cpu_seconds(pid) - cpu_before) * 1e6 / max(1, relayed), 1
        )
        rss, workers_rss = rss_with_children(pid)
        result["rss_after_mib"] = round(rss / MIB, 1)
        result["workers_rss_after_mib"] = round(workers_rss / MIB, 1)
        print_row(result)
        print(
            f"   (RSS after the step: server {result['rss_after_mib']:.0f} MiB, "
            f"workers {result['workers_rss_after_mib']:.0f} MiB)",
            flush=True,
        )
        return result

    async def search(low: int, high: int) -> tuple[int, int]:
        """Bisect between a sustained and a failing count of conversations."""
        for _ in range(args.search_steps):
            if high - low <= args.resolution:
                break
            middle = (low + high) // 2
            print(f"-- search: {middle} conversations", flush=True)
            result = await step(middle)
            results["search"].append(result)
            if result["sustained"]:
                low = middle
            else:
                high = middle
        return low, high

    low, high = max(args.levels), None  # every level sustained unless one fails
    for level in args.levels:
        started = time.perf_counter()
        await load.open_until(level)
        await asyncio.sleep(1)
        rss, workers_rss = rss_with_children(pid)
        opened = len(load.users)
        memory = {
            "open_conversations": opened,
            "rss_mib": round(rss / MIB, 1),
            "workers_rss_mib": round(workers_rss / MIB, 1),
            "kib_per_conversation": round(
                (rss + workers_rss - baseline_rss - baseline_workers_rss) / 1024 / opened, 1
            ),
        }
        results["memory"].append(memory)
        print(
            f"-- {opened} conversations open (handed off and claimed in "
            f"{time.perf_counter() - started:.0f} s); RSS: server {memory['rss_mib']:.0f} MiB, "
            f"workers {memory['workers_rss_mib']:.0f} MiB, "
            f"{memory['kib_per_conversation']:.0f} KiB per conversation (both)",
            flush=True,
        )
        result = await step(level)
        results["levels"].append(result)
        if not result["sustained"] and high is None:
            # The first level that fails: search below it now, before the bigger levels
            # leave hundreds of idle conversations (and their memory) on the server.
            high = level
            low = max((r["conversations"] for r in results["levels"] if r["sustained"]), default=0)
            low, high = await search(low, high)

    results["sustained_conversations"] = low
    results["sustained_msgs_per_s"] = low * args.rate
    results["first_failing_conversations"] = high
    results["baseline_rss_mib"] = round(baseline_rss / MIB, 1)
    results["baseline_workers_rss_mib"] = round(baseline_workers_rss / MIB, 1)
    await load.close()
    return results


def measure_floor(args: argparse.Namespace) -> dict[str, Any]:
    """:func:`measure` against ``benchmarks.relay_floor`` in a process of its own."""
    base = f"http://127.0.0.1:{args.port}"
    command = [sys.executable, "-m", "benchmarks.relay_floor", "--port", str(args.port)]
    workdir = Path(tempfile.mkdtemp(prefix="handoff-floor-"))
    print(f"Starting the floor server (benchmarks.relay_floor) on port {args.port}...")
    with serving_process(command, f"{base}/health", workdir, dict(os.environ), "Floor") as pid:
        return asyncio.run(measure(args, base, pid, None))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Takes 6-8 minutes with the defaults on 2 cores.",
    )
    parser.add_argument(
        "--levels",
        type=lambda text: sorted(int(x) for x in text.split(",")),
        default=[100, 500, 1000],
        help="conversations open at each step, comma-separated (default 100,500,1000)",
    )
    parser.add_argument("--agents", type=int, default=20, help="agent connections (default 20)")
    parser.add_argument("--rate", type=float, default=1.0, help="msg/s per conversation (1)")
    parser.add_argument("--duration", type=float, default=20, help="seconds per step (20)")
    parser.add_argument(
        "--stall",
        type=float,
        default=30,
        help="after a step, wait for answers and intent guesses until none came for this "
        "long (30 s); what is missing then counts as lost",
    )
    parser.add_argument(
        "--overload-s",
        type=float,
        default=3,
        help="stop a step's sending once a message or reply has waited this long for "
        "delivery (3 s); what was sent is still checked",
    )
    parser.add_argument(
        "--p99-limit-ms",
        type=float,
        default=100.0,
        help="sustained: p99 within this both ways, nothing lost or duplicated (100)",
    )
    parser.add_argument("--search-steps", type=int, default=4, help="bisection rounds (4)")
    parser.add_argument(
        "--resolution", type=int, default=10, help="stop the search within N conversations (10)"
    )
    parser.add_argument("--port", type=int, default=5124)
    parser.add_argument("--model", type=Path, default=ROOT / "models")
    parser.add_argument(
        "--checkout",
        type=Path,
        help="run the server code of this checkout (e.g. a `git worktree` of the previous "
        "main) with our venv; default: ours",
    )
    parser.add_argument(
        "--assistant-workers",
        type=int,
        help="HANDOFF_ASSISTANT_WORKERS for the server (0: the model in the server process); "
        "default: the server's own default; a checkout without worker processes ignores it",
    )
    parser.add_argument(
        "--no-assistant",
        action="store_true",
        help="the server process alone: its worker is benchmarks.null_worker (no model; every "
        "conversation hands off at once, intent guesses are instant)",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="measure benchmarks.relay_floor instead of our server: bare sanic + websockets "
        "sending the same frames, with no store, routing or assistant (the floor to compare "
        "the relay alone with, on the same machine and hour)",
    )
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    if args.floor and (args.checkout or args.no_assistant or args.assistant_workers is not None):
        parser.error(
            "--floor runs no server of ours: leave out --checkout, --no-assistant and "
            "--assistant-workers"
        )
    if min(args.levels) < 1 or args.agents < 1 or args.rate <= 0 or args.duration <= 0:
        parser.error("levels and --agents must be at least 1; --rate and --duration positive")
    if args.overload_s <= 0 or args.stall <= 0 or args.search_steps < 0 or args.resolution < 1:
        parser.error(
            "--overload-s and --stall must be positive, --search-steps at least 0, "
            "--resolution at least 1"
        )

    server_env = {
        "HANDOFF_USER_RATE_BURST": "1000",
        "HANDOFF_AGENT_RATE_PER_SECOND": "100000",
        "HANDOFF_AGENT_RATE_BURST": "100000",
        # Overloaded steps (500, 1,000) lag the server's loop by tens of seconds: with the
        # default 20 s keepalive it would drop the connections being measured.
        "HANDOFF_WEBSOCKET_PING_TIMEOUT": "600",
    }
    if args.assistant_workers is not None:
        server_env["HANDOFF_ASSISTANT_WORKERS"] = str(args.assistant_workers)
    if args.no_assistant:
        server_env["HANDOFF_ASSISTANT_WORKER_MODULE"] = "benchmarks.null_worker"
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max(args.levels) + args.agents + 256
    if limit[0] < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, limit[1]), limit[1]))
    started = time.perf_counter()
    if args.floor:
        results = measure_floor(args)
    else:
        with running_server(args.port, args.model, server_env, args.checkout) as server:
            database_url = f"sqlite:///{server.workdir / 'bench.db'}"
            results = asyncio.run(measure(args, server.base, server.pid, database_url))
    results["settings"] = {
        k: v for k, v in vars(args).items() if k not in ("json", "model", "port", "checkout")
    }
    results["checkout"] = (
        "benchmarks.relay_floor" if args.floor else str((args.checkout or ROOT).resolve())
    )
    results["wall_s"] = round(time.perf_counter() - started, 1)
    print(
        f"Highest sustained load: {results['sustained_conversations']} conversations at "
        f"{args.rate:g} msg/s ({results['sustained_msgs_per_s']:.0f} user msg/s, each answered "
        f"by an agent) with p99 <= {args.p99_limit_ms:.0f} ms, each message exactly once"
        + (
            f" ({results['first_failing_conversations']} failed)"
            if results["first_failing_conversations"] is not None
            else " (no level failed)"
        )
        + f"; {results['wall_s'] / 60:.1f} min in all."
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
