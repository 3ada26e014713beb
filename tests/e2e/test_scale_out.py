"""Several server processes on PostgreSQL and Redis serving one team of agents.

Skipped, with the reason, where this machine has no PostgreSQL or no Redis. Set
HANDOFF_TEST_POSTGRES_URL / HANDOFF_TEST_REDIS_URL to use other servers.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import (
    HANDOFF,
    PASSWORD,
    TEST_ENV,
    RunningServer,
    TrainingRun,
    add_agent,
    connect_agent,
    connect_user,
    http_json,
    login,
    start_server,
    stop_server,
)
from tests.integration.test_accounts import (
    change_account,
    expect_closed,
    expect_in_queue,
    handed_off_and_claimed,
    token_status,
)
from tests.services import REDIS_URL, fresh_database, redis_available

pytestmark = pytest.mark.slow


@dataclass
class Cluster:
    servers: list[RunningServer]
    env: dict[str, str]
    models: Path
    database_url: str


@pytest.fixture(scope="module")
def postgres_database() -> Iterator[str]:
    with fresh_database("handoff_scale") as url:
        yield url


@pytest.fixture(scope="module")
def cluster(
    postgres_database: str, training_run: TrainingRun, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """Three server processes (A, B, C) on one PostgreSQL database and one Redis namespace."""
    problem = redis_available()
    if problem:
        pytest.skip(problem)
    root = tmp_path_factory.mktemp("cluster")
    models = root / "models"
    models.mkdir()
    shutil.copy2(training_run.model, models / training_run.model.name)
    env = {
        "HANDOFF_DATABASE_URL": postgres_database,
        "HANDOFF_REDIS_URL": REDIS_URL,
        "HANDOFF_REDIS_NAMESPACE": f"test-{uuid.uuid4().hex[:8]}",
        "HANDOFF_MODEL_POLL_SECONDS": "1",
    }
    for name in ("a", "b", "c"):
        (root / name).mkdir()
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(start_server, models, root / name, env) for name in ("a", "b", "c")]
        servers = [future.result() for future in futures]
    add_agent(servers[0], "alex", "Alex", database_url=postgres_database)
    add_agent(servers[0], "bo", "Bo", database_url=postgres_database)
    yield Cluster(servers, env, models, postgres_database)
    for server in servers:
        if server.process.poll() is None:
            stop_server(server)


def alive(cluster: Cluster) -> list[RunningServer]:
    return [s for s in cluster.servers if s.process.poll() is None]


async def test_user_on_one_process_and_agent_on_another_both_ways(cluster: Cluster) -> None:
    a, b = cluster.servers[0], cluster.servers[1]
    agent = await connect_agent(b, "alex")
    user = await connect_user(a)
    frames = await user.say("can I talk to a real person")
    assert frames[0]["type"] == "handoff" and frames[0]["status"] == "queued", frames
    await agent.expect("queue", timeout=10)
    await agent.act("claim", conversation_id=user.conversation_id)
    await user.expect("handoff", status="agent_joined", timeout=10)

    await user.send({"type": "message", "id": "u1", "text": "my card was swallowed"})
    relayed = await agent.expect("user_message", timeout=10, conversation_id=user.conversation_id)
    assert relayed["message"]["text"] == "my card was swallowed"
    await agent.act("reply", conversation_id=user.conversation_id, text="I'll order a new one.")
    assert (await user.expect("agent", timeout=10))["text"] == "I'll order a new one."

    await agent.act("hand_back", conversation_id=user.conversation_id)
    await user.expect("handoff", status="handed_back", timeout=10)
    # The bot answers again, on process A (which may first resume the Rasa conversation:
    # Rasa's lock polls once a second, so allow more than `say`'s quiet second).
    await user.send({"type": "message", "id": "u2", "text": "hello"})
    await user.expect("bot", timeout=30, in_reply_to="u2")
    await user.close()
    await agent.close()


async def test_two_agents_on_two_processes_claim_at_once_exactly_one_wins(
    cluster: Cluster,
) -> None:
    a, b = cluster.servers[0], cluster.servers[1]
    alex, bo = await connect_agent(a, "alex"), await connect_agent(b, "bo")
    for round_ in range(5):
        user = await connect_user(a if round_ % 2 else b)
        await user.say("I want to speak to a human")
        ids = [uuid.uuid4().hex, uuid.uuid4().hex]
        await asyncio.gather(
            alex.send({"type": "claim", "id": ids[0], "conversation_id": user.conversation_id}),
            bo.send({"type": "claim", "id": ids[1], "conversation_id": user.conversation_id}),
        )
        answers = [
            await alex.expect_any(("ack", "error"), id=ids[0]),
            await bo.expect_any(("ack", "error"), id=ids[1]),
        ]
        assert sorted(answer["type"] for answer in answers) == ["ack", "error"], answers
        winner = alex if answers[0]["type"] == "ack" else bo
        await winner.act("close", conversation_id=user.conversation_id)
        await user.close()
    await alex.close()
    await bo.close()


async def test_reconnecting_to_another_process_resumes_without_loss_or_duplicates(
    cluster: Cluster,
) -> None:
    a, b = cluster.servers[0], cluster.servers[1]
    agent = await connect_agent(a, "alex")
    user = await connect_user(b)
    await user.say("talk to a person please")
    await agent.act("claim", conversation_id=user.conversation_id)
    joined = await user.expect("handoff", status="agent_joined", timeout=10)
    cursor = joined["event_id"]
    await user.close()

    replies = [f"reply {n}" for n in range(5)]
    for text in replies:
        await agent.act("reply", conversation_id=user.conversation_id, text=text)
    back = await connect_user(a, conversation_id=user.conversation_id, last_event_id=cursor)
    frames = await back.drain(2.0)
    assert [f["text"] for f in frames if f["type"] == "agent"] == replies
    event_ids = [f["event_id"] for f in frames if "event_id" in f]
    assert event_ids == sorted(set(event_ids))
    await agent.act("close", conversation_id=user.conversation_id)
    await back.close()
    await agent.close()


async def test_a_promoted_model_reaches_every_process(cluster: Cluster) -> None:
    [original] = list(cluster.models.glob("*.tar.gz"))
    promoted = cluster.models / "assistant-promoted-copy.tar.gz"
    shutil.copy2(original, promoted)
    engine = sa.create_engine(cluster.database_url)
    try:
        with engine.begin() as db:
            db.execute(sa.text("UPDATE model_versions SET status = 'retired'"))
            db.execute(
                sa.text(
                    "INSERT INTO model_versions (name, training_hash, trained_at, status, "
                    "promoted_at) VALUES (:name, 'copy', 0, 'live', 0)"
                ),
                {"name": promoted.name},
            )
    finally:
        engine.dispose()
    pending = set(range(len(alive(cluster))))
    for _ in range(300):
        for index in list(pending):
            health = http_json("GET", f"{cluster.servers[index].base_url}/health")[1]
            if isinstance(health, dict) and health.get("model") == promoted.name:
                pending.discard(index)
        if not pending:
            break
        await asyncio.sleep(1)
    assert not pending, [cluster.servers[i].log_tail(2000) for i in pending]


def every_process_serves(cluster: Cluster, model: str) -> list[str]:
    """The logs of the processes not serving ``model`` after up to five minutes."""
    pending = set(range(len(alive(cluster))))
    for _ in range(300):
        for index in list(pending):
            health = http_json("GET", f"{cluster.servers[index].base_url}/health")[1]
            if isinstance(health, dict) and health.get("model") == model:
                pending.discard(index)
        if not pending:
            return []
        time.sleep(1)
    return [cluster.servers[i].log_tail(2000) for i in pending]


async def test_a_roll_back_from_the_command_line_reaches_every_process(cluster: Cluster) -> None:
    archives = sorted(p.name for p in cluster.models.glob("*.tar.gz"))
    engine = sa.create_engine(cluster.database_url)
    try:
        with engine.begin() as db:  # both archives registered (an earlier test added one)
            known = {row[0] for row in db.execute(sa.text("SELECT name FROM model_versions"))}
            for name in set(archives) - known:
                db.execute(
                    sa.text(
                        "INSERT INTO model_versions (name, training_hash, trained_at, status) "
                        "VALUES (:name, 'h', 0, 'retired')"
                    ),
                    {"name": name},
                )
    finally:
        engine.dispose()
    env = {**TEST_ENV, **cluster.env, "HANDOFF_MODEL_PATH": str(cluster.models)}
    serving = http_json("GET", f"{cluster.servers[0].base_url}/health")[1]["model"]
    target = next(name for name in archives if name != serving)

    def handoff(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [HANDOFF, "models", *args], env=env, capture_output=True, text=True, timeout=120
        )

    promoted = await asyncio.to_thread(handoff, "promote", target, "--as", "maya")
    assert promoted.returncode == 0, promoted.stderr
    assert f"{target} is live" in promoted.stdout
    assert not await asyncio.to_thread(every_process_serves, cluster, target)
    listed = await asyncio.to_thread(handoff, "list")
    live = next(line for line in listed.stdout.splitlines() if line.startswith(target))
    assert " live " in live and "by maya" in live, listed.stdout
    refused = await asyncio.to_thread(handoff, "promote", "assistant-nowhere.tar.gz")
    assert refused.returncode == 2 and "no model archive" in refused.stderr


async def test_disabling_an_agent_on_one_process_signs_it_out_on_another(
    cluster: Cluster,
) -> None:
    a, b = cluster.servers[0], cluster.servers[1]
    for username, name, role in [("cara", "Cara", "maintainer"), ("dev", "Dev", "agent")]:
        add_agent(a, username, name, role=role, database_url=cluster.database_url)
    maintainer = login(a, "cara", PASSWORD)
    dev, alex = await connect_agent(b, "dev"), await connect_agent(a, "alex")
    user = await handed_off_and_claimed(a, dev)
    await alex.drain()

    change_account(a, maintainer, "dev", disabled=True)

    assert await expect_closed(dev) == (4001, "account_disabled")
    notice = await user.expect("handoff", status="queued", timeout=10)
    assert notice["reason"] == "agent_unavailable", notice
    await expect_in_queue(alex, user.conversation_id)
    await alex.act("claim", conversation_id=user.conversation_id)
    await user.expect("handoff", status="agent_joined", timeout=10)
    assert token_status(b, dev.token) == 401

    # Removing the maintainer role mid-session: the maintainer's socket on B closes too.
    cara = await connect_agent(b, "cara")
    change_account(a, maintainer, "cara", role="agent")
    assert await expect_closed(cara) == (4002, "role_changed")
    await alex.act("close", conversation_id=user.conversation_id)
    await user.close()
    await alex.close()


async def test_sigkill_of_a_process_loses_nothing_acknowledged(cluster: Cluster) -> None:
    a, c = cluster.servers[0], cluster.servers[2]
    agent = await connect_agent(a, "bo")
    user = await connect_user(c)
    await user.say("I need a human")
    await agent.act("claim", conversation_id=user.conversation_id)
    joined = await user.expect("handoff", status="agent_joined", timeout=10)
    sent = [f"message {n}" for n in range(10)]
    for n, text in enumerate(sent):
        await user.send({"type": "message", "id": f"k{n}", "text": text})
        await user.expect("ack", id=f"k{n}")
    c.process.send_signal(signal.SIGKILL)
    c.process.wait(timeout=10)

    back = await connect_user(
        a, conversation_id=user.conversation_id, last_event_id=joined["event_id"]
    )
    await agent.act("reply", conversation_id=user.conversation_id, text="still here")
    assert (await back.expect("agent", timeout=10))["text"] == "still here"
    ack = await agent.act("open", conversation_id=user.conversation_id)
    texts = [m["text"] for m in ack["transcript"]["messages"] if m["sender"] == "user"]
    assert texts[-len(sent) :] == sent
    # The stored acks are replayed from the cursor; a resend is not stored twice.
    assert "event_id" in await back.expect("ack", id="k9")
    await back.send({"type": "message", "id": "k9", "text": "message 9"})
    await back.expect("ack", id="k9", duplicate=True)
    await agent.act("close", conversation_id=user.conversation_id)
    await back.close()
    await agent.close()
    status, presence = http_json("GET", f"{a.base_url}/health")
    assert status == 200, presence
