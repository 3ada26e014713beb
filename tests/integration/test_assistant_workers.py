"""The assistant in worker processes, against the real server and model: the server process
loads no model, and a worker killed mid-conversation is replaced while nothing is lost."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from handoff.assistant.workers import worker_index
from tests.conftest import (
    RunningServer,
    UserClient,
    add_agent,
    connect_agent,
    connect_user,
    http_json,
    start_server,
    stop_server,
)

pytestmark = pytest.mark.slow

WORKERS = 2


@pytest.fixture(scope="module")
def two_workers(
    trained_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    running = start_server(
        trained_model,
        tmp_path_factory.mktemp("workers"),
        extra_env={"HANDOFF_ASSISTANT_WORKERS": str(WORKERS)},
    )
    add_agent(running, "wren", "Wren")
    yield running
    stop_server(running)


def assistant_health(server: RunningServer) -> dict[str, Any]:
    status, body = http_json("GET", f"{server.base_url}/health")
    assert status == 200, body
    health: dict[str, Any] = body["assistant"]
    return health


def mapped_files(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


async def user_on_worker(server: RunningServer, index: int) -> UserClient:
    """A new user whose conversation is pinned to worker ``index``."""
    for _ in range(64):
        user = await connect_user(server)
        if worker_index(user.conversation_id, WORKERS) == index:
            return user
        await user.close()
    raise AssertionError("no conversation id hashed to that worker in 64 tries")


def tracker_events(server: RunningServer, conversation_id: str) -> list[tuple[str, dict]]:
    with sqlite3.connect(server.tracker_database_path) as db:
        rows = db.execute(
            "SELECT type_name, data FROM events WHERE sender_id = ? ORDER BY id", (conversation_id,)
        ).fetchall()
    return [(kind, json.loads(data)) for kind, data in rows]


def test_the_server_process_loads_no_model(two_workers: RunningServer) -> None:
    pids = assistant_health(two_workers)["pids"]
    assert len(set(pids)) == WORKERS and None not in pids, pids
    assert "tensorflow" not in mapped_files(two_workers.process.pid)
    for pid in pids:
        assert parent_of(pid) == two_workers.process.pid
        assert "tensorflow" in mapped_files(pid)


async def test_a_killed_worker_is_replaced_and_nothing_is_lost(two_workers: RunningServer) -> None:
    server = two_workers
    before = assistant_health(server)
    victim = before["pids"][0]
    agent = await connect_agent(server, "wren")
    chatty = await user_on_worker(server, 0)
    assert await chatty.bot_texts("hello")
    handed_off = await user_on_worker(server, 0)
    frames = await handed_off.say("can I talk to a real person")
    assert frames[0]["type"] == "handoff" and frames[0]["status"] == "queued", frames
    await agent.act("claim", conversation_id=handed_off.conversation_id)
    await handed_off.expect("handoff", status="agent_joined")

    os.kill(victim, signal.SIGKILL)

    # While worker 0 restarts (a model load), its conversations go on: the bot answers on the
    # other worker, the relay needs no worker, and the intent guesses still come.
    assert await chatty.bot_texts("thanks")
    await handed_off.send({"type": "message", "id": "w-1", "text": "I lost my card yesterday"})
    relayed = await agent.expect("user_message", conversation_id=handed_off.conversation_id)
    guesses = await agent.expect("intents", message_id=relayed["message"]["message_id"])
    assert guesses["ranking"], guesses
    await agent.act("reply", conversation_id=handed_off.conversation_id, text="Blocking it now.")
    reply = await handed_off.expect("agent")
    assert reply["text"] == "Blocking it now."
    await agent.act("hand_back", conversation_id=handed_off.conversation_id)
    await handed_off.expect("handoff", status="handed_back")

    deadline = time.monotonic() + 300
    while True:
        health = assistant_health(server)
        if None not in health["pids"] and health["restarts"] == 1:
            break
        assert time.monotonic() < deadline, f"worker not replaced:\n{server.log_tail()}"
        await asyncio.sleep(1)
    assert victim not in health["pids"] and health["pids"][1] == before["pids"][1], health
    assert await chatty.bot_texts("hello")  # on the replacement now
    assert await handed_off.bot_texts("hello")  # the bot again after the hand-back

    # Rasa's transcript of the handed-off conversation is complete and in order.
    events: list[tuple[str, dict]] = []
    for _ in range(60):
        events = tracker_events(server, handed_off.conversation_id)
        if any(kind == "resume" for kind, _ in events):
            break
        await asyncio.sleep(0.5)
    kinds = [kind for kind, _ in events]
    relayed_at = next(
        i for i, (kind, data) in enumerate(events) if data.get("text") == "I lost my card yesterday"
    )
    agent_at = next(
        i for i, (kind, data) in enumerate(events) if data.get("text") == "Blocking it now."
    )
    assert kinds.index("pause") < relayed_at < agent_at < kinds.index("resume"), kinds
    assert events[relayed_at][0] == "user"
    assert events[relayed_at][1]["parse_data"]["intent_ranking"], "NLU ran for the relayed message"
    assert events[agent_at][1]["metadata"]["handoff"]["agent_name"] == "Wren"
    for client in (chatty, handed_off, agent):
        await client.close()
