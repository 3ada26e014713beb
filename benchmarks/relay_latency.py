"""Relay latency during handoffs: user -> agent and agent -> user, with many conversations.

Starts its own server (``handoff serve`` on a temporary SQLite database, the newest model in
models/), creates agent accounts, hands every conversation off ("I want to talk to a person"),
lets the agents claim them round-robin, then every user sends --messages messages at --rate
per second while the agents answer each one. Latency is measured from send to receive, by
message id; every message is checked (lost / duplicated).

    .venv/bin/python -m benchmarks.relay_latency --conversations 40 --agents 4

With ``--processes N`` (N > 1) it starts N servers on PostgreSQL and Redis (``--database-url``,
``--redis-url``; a fresh database is created and dropped) and connects each agent to another
process than the users it serves, so every message crosses processes.

The load runs in this process; the servers in others.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from websockets.client import connect
from websockets.exceptions import ConnectionClosed

from benchmarks.server_process import running_server

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PASSWORD = "benchmark-password"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "count": len(values),
        "median_ms": statistics.median(values),
        "p99_ms": percentile(values, 0.99),
        "max_ms": max(values),
    }


def login(base: str, username: str) -> str:
    request = urllib.request.Request(
        f"{base}/api/login",
        data=json.dumps({"username": username, "password": PASSWORD}).encode(),
        headers={"Content-Type": "application/json", "Origin": base},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        token: str = json.loads(response.read())["token"]
        return token


async def next_frame(ws: Any, type_: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        frame: dict[str, Any] = json.loads(
            await asyncio.wait_for(ws.recv(), deadline - time.monotonic())
        )
        if frame.get("type") == type_:
            return frame


async def run(args: argparse.Namespace, bases: list[str]) -> dict[str, Any]:
    agents = []
    for index in range(args.agents):
        base = bases[(index + 1) % len(bases)]
        token = login(base, f"bench{index}")
        ws = await connect(
            f"{base.replace('http://', 'ws://')}/ws/agent",
            origin=base,  # type: ignore[arg-type]
            extra_headers={"Authorization": f"Bearer {token}"},
            max_queue=None,
        )
        await next_frame(ws, "hello")
        agents.append(ws)

    users = []
    for index in range(args.conversations):
        ws_base = bases[index % len(bases)].replace("http://", "ws://")
        ws = await connect(f"{ws_base}/ws/user", max_queue=None)
        ready = await next_frame(ws, "ready")
        await ws.send(
            json.dumps(
                {"type": "message", "id": uuid.uuid4().hex, "text": "I want to talk to a person"}
            )
        )
        await next_frame(ws, "handoff")
        users.append((ready["conversation_id"], ws))
    owner: dict[str, Any] = {}
    for index, (conversation_id, user_ws) in enumerate(users):
        # With several processes, an agent on another process than the user.
        serving = [
            agent
            for number, agent in enumerate(agents)
            if len(bases) == 1 or (number + 1) % len(bases) != index % len(bases)
        ]
        agent_ws = serving[(index // len(bases)) % len(serving)]
        claim_id = uuid.uuid4().hex
        await agent_ws.send(
            json.dumps({"type": "claim", "id": claim_id, "conversation_id": conversation_id})
        )
        while True:
            frame = json.loads(await agent_ws.recv())
            if frame.get("id") == claim_id:
                assert frame["type"] == "ack", frame
                break
        await next_frame(user_ws, "handoff")
        owner[conversation_id] = agent_ws
    print(f"{len(users)} conversations handed off and claimed by {len(agents)} agents; relaying...")

    sent_at: dict[str, float] = {}
    to_agent: list[float] = []
    to_user: list[float] = []
    agent_seen: Counter[str] = Counter()
    user_seen: Counter[str] = Counter()
    expected = args.conversations * args.messages
    done = asyncio.Event()

    async def agent_reader(ws: Any) -> None:
        with contextlib.suppress(ConnectionClosed):
            await _agent_reader(ws)

    async def user_reader(ws: Any) -> None:
        with contextlib.suppress(ConnectionClosed):
            await _user_reader(ws)

    async def _agent_reader(ws: Any) -> None:
        while True:
            frame = json.loads(await ws.recv())
            if frame.get("type") != "user_message":
                continue
            token = frame["message"]["text"]
            agent_seen[token] += 1
            if agent_seen[token] == 1:
                to_agent.append((time.perf_counter() - sent_at[token]) * 1000)
                reply = "re:" + token
                sent_at[reply] = time.perf_counter()
                await ws.send(
                    json.dumps(
                        {
                            "type": "reply",
                            "id": uuid.uuid4().hex[:32],
                            "conversation_id": frame["conversation_id"],
                            "text": reply,
                        }
                    )
                )

    async def _user_reader(ws: Any) -> None:
        while True:
            frame = json.loads(await ws.recv())
            if frame.get("type") != "agent":
                continue
            user_seen[frame["text"]] += 1
            if user_seen[frame["text"]] == 1:
                to_user.append((time.perf_counter() - sent_at[frame["text"]]) * 1000)
                if len(to_user) >= expected:
                    done.set()

    async def user_writer(conversation_id: str, ws: Any, offset: float) -> None:
        await asyncio.sleep(offset)  # users are not synchronised: spread their send times
        for number in range(args.messages):
            token = f"{conversation_id[:8]}-{number}"
            sent_at[token] = time.perf_counter()
            await ws.send(json.dumps({"type": "message", "id": uuid.uuid4().hex, "text": token}))
            await asyncio.sleep(1.0 / args.rate)

    readers = [asyncio.create_task(agent_reader(ws)) for ws in agents]
    readers += [asyncio.create_task(user_reader(ws)) for _, ws in users]
    started = time.perf_counter()
    spread = random.Random(42)
    await asyncio.gather(
        *(user_writer(cid, ws, spread.uniform(0, 1.0 / args.rate)) for cid, ws in users)
    )
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(done.wait(), timeout=60)
    wall = time.perf_counter() - started
    for task in readers:
        task.cancel()
    for ws in agents + [ws for _, ws in users]:
        await ws.close()
    user_tokens = [k for k in sent_at if not k.startswith("re:")]
    return {
        "conversations": args.conversations,
        "agents": args.agents,
        "messages_per_conversation": args.messages,
        "rate_per_conversation": args.rate,
        "user_to_agent": summary(to_agent) if to_agent else {},
        "agent_to_user": summary(to_user) if to_user else {},
        "lost_to_agent": sum(1 for t in user_tokens if agent_seen[t] == 0),
        "duplicated_to_agent": sum(1 for t in user_tokens if agent_seen[t] > 1),
        "lost_to_user": sum(1 for t in user_tokens if user_seen["re:" + t] == 0),
        "duplicated_to_user": sum(1 for t in user_tokens if user_seen["re:" + t] > 1),
        "wall_s": wall,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=40)
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--messages", type=int, default=20, help="per conversation (default 20)")
    parser.add_argument("--rate", type=float, default=1.0, help="messages/s per conversation")
    parser.add_argument("--port", type=int, default=5123)
    parser.add_argument("--model", type=Path, default=ROOT / "models")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    parser.add_argument(
        "--processes", type=int, default=1, help="server processes (more than 1: PostgreSQL+Redis)"
    )
    parser.add_argument(
        "--database-url",
        default="postgresql://postgres@127.0.0.1/postgres",
        help="PostgreSQL server for --processes > 1 (a fresh database is created on it)",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    if min(args.conversations, args.agents, args.messages, args.processes) < 1 or args.rate <= 0:
        parser.error("counts must be at least 1 and --rate positive")
    if args.processes > 1 and args.agents < args.processes:
        parser.error("--agents must be at least --processes (agents serve other processes)")

    workdir = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    with contextlib.ExitStack() as stack:
        if args.processes > 1:
            database_url = stack.enter_context(fresh_postgres_database(args.database_url))
            extra = {
                "HANDOFF_REDIS_URL": args.redis_url,
                "HANDOFF_REDIS_NAMESPACE": f"bench-{uuid.uuid4().hex[:8]}",
            }
        else:
            database_url, extra = f"sqlite:///{workdir / 'bench.db'}", {}
        return measure(args, stack, database_url, extra)


@contextlib.contextmanager
def fresh_postgres_database(admin_url: str) -> Any:
    """A new database on the PostgreSQL server at ``admin_url``, dropped afterwards."""
    import sqlalchemy as sa

    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"handoff_bench_{uuid.uuid4().hex[:10]}"
    with engine.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield str(sa.engine.make_url(admin_url).set(database=name))
    finally:
        with engine.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        engine.dispose()


def measure(
    args: argparse.Namespace,
    stack: contextlib.ExitStack,
    database_url: str,
    extra: dict[str, str],
) -> int:
    env = {**os.environ, "HANDOFF_DATABASE_URL": database_url}
    for index in range(args.agents):
        subprocess.run(
            [
                str(BIN / "handoff"),
                "agents",
                "add",
                f"bench{index}",
                "--name",
                f"Bench {index}",
                "--password-stdin",
            ],
            input=PASSWORD + "\n",
            text=True,
            env=env,
            check=True,
            capture_output=True,
        )
    server_env = {
        "HANDOFF_DATABASE_URL": database_url,
        "HANDOFF_USER_RATE_BURST": "1000",
        "HANDOFF_AGENT_RATE_PER_SECOND": "1000",
        "HANDOFF_AGENT_RATE_BURST": "1000",
        **extra,
    }
    bases = [
        stack.enter_context(running_server(args.port + n, args.model, server_env)).base
        for n in range(args.processes)
    ]
    results = asyncio.run(run(args, bases))
    results["processes"] = args.processes
    print(f"{'direction':<14} {'messages':>9} {'median ms':>10} {'p99 ms':>8} {'max ms':>8}")
    for name in ("user_to_agent", "agent_to_user"):
        row = results[name]
        print(
            f"{name:<14} {row['count']:>9} {row['median_ms']:>10.2f} "
            f"{row['p99_ms']:>8.2f} {row['max_ms']:>8.2f}"
        )
    print(
        f"lost: {results['lost_to_agent']} to agents, {results['lost_to_user']} to users; "
        f"duplicated: {results['duplicated_to_agent']} / {results['duplicated_to_user']}"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
