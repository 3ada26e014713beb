"""The whole learning loop end to end, on a copy of bot/ and data/ and a server of its own:
handoff -> an agent creates an intent, replies and labels paraphrases -> a maintainer approves
-> export -> train -> promote -> hot swap -> the bot answers a paraphrase itself, while a
conversation kept open across the swap keeps working. One labelled paraphrase is held out in
review: it goes into the held-out test set, never into the training data, and both models are
scored on it."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import (
    HANDOFF,
    PROJECT_ROOT,
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

pytestmark = pytest.mark.slow

NEW_INTENT = "safe_deposit_box"
AGENT_ANSWER = (
    "Yes: our city branches rent safe deposit boxes from 60 pounds a year. "
    "Book one at any branch counter."
)
PARAPHRASES = [
    "do you rent out safe deposit boxes",
    "I want a safety deposit box for my jewellery",
    "can I store valuables in a safe deposit box at your bank",
    "how much does a safe deposit box cost",
    "is there a safe deposit box service at the branch",
    "where can I get a deposit box to keep my documents safe",
]
UNSEEN_PARAPHRASE = "do you have safe deposit boxes available"
HELD_OUT = "could I keep my passport in one of your vault boxes"
"""Labelled by the agent too; the maintainer holds it out: it joins the held-out test set."""


@dataclass
class LoopProject:
    root: Path
    env: dict[str, str]
    server: RunningServer
    models: Path


@pytest.fixture(scope="module")
def project(
    training_run: TrainingRun, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LoopProject]:
    """bot/, data/, the trained model and its registry copied; a server watching for
    promotions every second."""
    root = tmp_path_factory.mktemp("loop")
    shutil.copytree(
        PROJECT_ROOT / "bot", root / "bot", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copytree(PROJECT_ROOT / "data", root / "data")
    shutil.copy2(PROJECT_ROOT / "tests" / "data" / "heldout_nlu.yml", root / "heldout_nlu.yml")
    models = root / "models"
    models.mkdir()
    shutil.copy2(training_run.model, models / training_run.model.name)
    shutil.copy2(training_run.database, root / "handoff.db")
    env = {
        "HANDOFF_BOT_DIR": str(root / "bot"),
        "HANDOFF_DATA_DIR": str(root / "data"),
        "HANDOFF_TEST_DATA": str(root / "heldout_nlu.yml"),
        "HANDOFF_DATABASE_URL": f"sqlite:///{root / 'handoff.db'}",
        "HANDOFF_MODEL_PATH": str(models),
        "HANDOFF_MODEL_POLL_SECONDS": "1",
        # Retraining with a new intent moves held-out scores by a point or two either way.
        "HANDOFF_PROMOTION_MARGIN": "0.05",
    }
    server = start_server(models, root, extra_env=env)
    yield LoopProject(root, {**TEST_ENV, **env}, server, models)
    stop_server(server)


def run(project: LoopProject, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HANDOFF, *args],
        env=project.env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=project.root,
    )


def api(project: LoopProject, method: str, path: str, token: str, body: object = None) -> object:
    status, answer = http_json(
        method,
        f"{project.server.base_url}{path}",
        json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Origin": project.server.base_url},
    )
    assert status == 200, answer
    return answer


async def keep_talking(project: LoopProject, stop: asyncio.Event, latencies: list[float]) -> None:
    """A conversation open across the swap: says thanks every half second; every message must
    get its bot answer (within 60 s: the swap loads a model on the same CPUs)."""
    user = await connect_user(project.server)
    loop = asyncio.get_running_loop()
    try:
        while not stop.is_set():
            client_id = uuid.uuid4().hex
            sent = loop.time()
            await user.send({"type": "message", "id": client_id, "text": "thank you"})
            await user.expect("bot", timeout=60, in_reply_to=client_id)
            latencies.append(loop.time() - sent)
            await asyncio.sleep(0.5)
    finally:
        await user.close()


async def test_what_an_agent_teaches_the_bot_answers_after_a_hot_swap(
    project: LoopProject,
) -> None:
    server = project.server
    add_agent(server, "ana", "Ana")
    add_agent(server, "max", "Max", role="maintainer")
    before_swap = http_json("GET", f"{server.base_url}/health")[1]
    old_model, old_workers = before_swap["model"], before_swap["assistant"]["pids"]

    # Before: the question goes to a person (the user asks for one), who teaches the answer.
    agent = await connect_agent(server, "ana")
    user = await connect_user(server)
    frames = await user.say("I need to talk to a human")
    assert frames[0]["type"] == "handoff", frames
    await agent.act("claim", conversation_id=user.conversation_id)
    for text in [*PARAPHRASES, HELD_OUT]:
        await user.say(text, answered=False)
        relayed = await agent.expect("user_message", conversation_id=user.conversation_id)
        labelled = await agent.act(
            "label", message_id=relayed["message"]["message_id"], intent=NEW_INTENT
        )
        assert labelled["new_intent"] is True
    await agent.act("reply", conversation_id=user.conversation_id, text=AGENT_ANSWER)
    await user.expect("agent", text=AGENT_ANSWER)
    await agent.act("close", conversation_id=user.conversation_id)
    await user.close()
    await agent.close()

    # Review: a maintainer approves everything the handoff taught but one example, held out.
    token = login(server, "max", "correct-horse-battery")
    review = api(project, "GET", "/api/review", token)
    assert isinstance(review, dict)
    group = next(g for g in review["groups"] if g["intent"] == NEW_INTENT)
    assert group["new_intent"] is True
    assert [r["text"] for r in group["responses"]] == [AGENT_ANSWER]
    examples = [e["text"] for e in group["examples"]]
    taught = len(PARAPHRASES) + 1
    assert len(examples) + sum(len(e["duplicates"]) for e in group["examples"]) == taught
    assert [s["turns"] for s in review["stories"]] == [[[NEW_INTENT, f"utter_{NEW_INTENT}"]]]
    [held_out] = [e["id"] for e in group["examples"] if e["text"] == HELD_OUT]
    ids = [e["id"] for e in group["examples"] if e["id"] != held_out]
    ids += [r["id"] for r in group["responses"]] + [s["id"] for s in review["stories"]]
    decisions = [{"id": i, "action": "approve"} for i in ids]
    api(project, "POST", "/api/review", token, {"decisions": decisions})
    status, refused = http_json(
        "POST",
        f"{server.base_url}/api/review",
        json.dumps(
            {"decisions": [{"id": group["responses"][0]["id"], "action": "hold_out"}]}
        ).encode(),
        headers={"Authorization": f"Bearer {token}", "Origin": server.base_url},
    )
    assert status == 400 and "only examples can be held out" in str(refused), refused
    api(
        project,
        "POST",
        "/api/review",
        token,
        {"decisions": [{"id": held_out, "action": "hold_out"}]},
    )
    heldout_file = project.root / "heldout_nlu.yml"
    heldout_before = heldout_file.read_text()

    # Export, twice: the second run changes nothing.
    exported = run(project, "export")
    assert exported.returncode == 0, exported.stdout + exported.stderr
    assert "1 of them went into the held-out test set" in exported.stdout, exported.stdout
    learned = {p: p.read_bytes() for p in (project.root / "data" / "learned").glob("*.yml")}
    assert HELD_OUT not in (project.root / "data" / "learned" / "nlu.yml").read_text()
    heldout_after = heldout_file.read_text()
    assert heldout_after.startswith('version: "3.1"') or heldout_after.startswith("version:")
    assert "# Held-out NLU test set" in heldout_after  # its comments are kept
    heldout_blocks = {b["intent"]: b["examples"] for b in yaml.safe_load(heldout_after)["nlu"]}
    assert heldout_blocks[NEW_INTENT] == f"- {HELD_OUT}\n"
    before_blocks = yaml.safe_load(heldout_before)["nlu"]
    assert all(heldout_blocks[b["intent"]] == b["examples"] for b in before_blocks)
    domain = project.root / "bot" / "domain" / "learned.yml"
    assert sorted(p.name for p in learned) == ["nlu.yml", "rules.yml", "stories.yml"]
    additions = yaml.safe_load(domain.read_text())
    assert additions["intents"] == [NEW_INTENT]
    assert additions["responses"] == {f"utter_{NEW_INTENT}": [{"text": AGENT_ANSWER}]}
    again = run(project, "export")
    assert again.returncode == 0 and "Nothing new to write" in again.stdout, again.stdout
    assert {p: p.read_bytes() for p in learned} == learned

    # Train, evaluate, promote; the server swaps while a conversation keeps talking.
    stop, latencies = asyncio.Event(), list[float]()
    talker = asyncio.create_task(keep_talking(project, stop, latencies))
    trained = await asyncio.to_thread(run, project, "train")
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    assert "Promoted:" in trained.stdout, trained.stdout[-2000:]
    new_model = re.search(r"Model: .*/(\S+\.tar\.gz)", trained.stdout)
    assert new_model and new_model.group(1) != old_model
    for _ in range(240):
        health = http_json("GET", f"{server.base_url}/health")[1]
        if isinstance(health, dict) and health.get("model") == new_model.group(1):
            break
        assert not talker.done(), talker.exception()
        await asyncio.sleep(1)
    else:
        pytest.fail(f"the server did not swap to {new_model.group(1)}:\n{server.log_tail()}")
    await asyncio.sleep(2)  # a few more messages on the new model
    stop.set()
    await talker  # raises if any message of the open conversation went unanswered
    # Blue/green: a new worker process serves the new model; the old one finished and exited.
    new_workers = health["assistant"]["pids"]
    assert set(new_workers).isdisjoint(old_workers), (old_workers, new_workers)
    for pid in old_workers:
        for _ in range(60):
            if not await asyncio.to_thread(Path(f"/proc/{pid}").exists):
                break
            await asyncio.sleep(1)
        else:
            pytest.fail(f"the retired worker {pid} did not exit:\n{server.log_tail()}")
    assert len(latencies) >= 10, latencies
    print(f"\nopen conversation: {len(latencies)} answers, slowest {max(latencies):.2f} s")

    # After: a paraphrase nobody labelled gets the agent's answer from the bot, no handoff.
    newcomer = await connect_user(server)
    frames = await newcomer.say(UNSEEN_PARAPHRASE)
    assert [f["type"] for f in frames] == ["bot"], frames
    assert frames[0]["text"] == AGENT_ANSWER
    await newcomer.close()

    # The registry and the reports record both models and their held-out scores.
    models = api(project, "GET", "/api/models", token)
    assert isinstance(models, dict)
    assert models["serving"] == new_model.group(1)
    by_name = {m["name"]: m for m in models["models"]}
    assert by_name[new_model.group(1)]["status"] == "live"
    assert by_name[old_model]["status"] == "retired"
    report = json.loads(
        (project.models / "reports" / new_model.group(1).replace(".tar.gz", ".json")).read_text()
    )
    before, after = report["live"]["metrics"], report["new"]["metrics"]
    # Both models scored on the grown held-out set: the old model on it again, not from cache.
    grown = sum(len(b["examples"].splitlines()) for b in yaml.safe_load(heldout_after)["nlu"])
    assert before["examples"] == after["examples"] == grown
    print(
        f"\nheld-out accuracy before/after: {before['accuracy']:.4f} -> {after['accuracy']:.4f}; "
        f"macro-F1 {before['macro_f1']:.4f} -> {after['macro_f1']:.4f}"
    )
    status, metrics = http_json("GET", f"{server.base_url}/metrics")
    assert status == 200
    assert f'handoff_serving_model_info{{model="{new_model.group(1)}"}} 1' in str(metrics)
    assert f'handoff_approved_examples_total{{intent="{NEW_INTENT}"}}' in str(metrics)
    reported = run(project, "report", timeout=120)
    assert reported.returncode == 0 and NEW_INTENT in reported.stdout, reported.stderr
