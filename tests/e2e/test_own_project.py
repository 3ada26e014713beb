"""Bring your own Rasa assistant: a second Rasa project (tests/projects/library: a library help
desk, a single domain.yml, custom actions, endpoints.yml with an environment variable) served
through HANDOFF_PROJECT_DIR alone. Training, serving with its action server, a handoff in
which an agent teaches a new intent, review, export, retraining and the hot swap all work on
it, and the bot answers the taught question next time."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
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
    add_agent,
    connect_agent,
    connect_user,
    free_port,
    http_json,
    login,
    start_server,
    stop_server,
)

pytestmark = pytest.mark.slow

LIBRARY = PROJECT_ROOT / "tests" / "projects" / "library"
NEW_INTENT = "ask_printer"
AGENT_ANSWER = "Yes: the printer is on the first floor, 10 cents a page, paid with your card."
PARAPHRASES = [
    "is there a printer I can use",
    "can I print something at the library",
    "where is the printer",
    "do you have a printer for visitors",
    "how much does printing cost",
    "I need to print a document",
]
UNSEEN = "is there a printer here"


@dataclass
class OwnProject:
    root: Path
    env: dict[str, str]


def handoff(project: OwnProject, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HANDOFF, *args],
        env=project.env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        cwd=project.root.parent,
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> OwnProject:
    """A copy of the library project, configured by HANDOFF_PROJECT_DIR and the environment
    variable its endpoints.yml names, nothing else."""
    root = tmp_path_factory.mktemp("own") / "library"
    shutil.copytree(LIBRARY, root, ignore=shutil.ignore_patterns("__pycache__"))
    env = {
        **TEST_ENV,
        "HANDOFF_PROJECT_DIR": str(root),
        "LIBRARY_ACTIONS_PORT": str(free_port()),
        "HANDOFF_MODEL_POLL_SECONDS": "1",
    }
    return OwnProject(root, env)


@pytest.fixture(scope="module")
def server(project: OwnProject) -> Iterator[RunningServer]:
    trained = handoff(project, "train")
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    assert "Promoted: no model is live yet" in trained.stdout
    # Where a project's state goes unless set otherwise: its models/ and .handoff/ folders.
    database = project.root / ".handoff" / "handoff.db"
    assert database.exists() and list((project.root / "models").glob("*.tar.gz"))
    running = start_server(
        project.root / "models",
        project.root.parent,
        extra_env={
            **{k: v for k, v in project.env.items() if k.startswith(("HANDOFF_", "LIBRARY_"))},
            "HANDOFF_DATABASE_URL": f"sqlite:///{database}",  # the project's own (as above)
        },
    )
    yield running
    stop_server(running)


async def test_a_project_of_your_own_serves_learns_and_answers_what_it_learned(
    project: OwnProject, server: RunningServer
) -> None:
    health = http_json("GET", f"{server.base_url}/health")[1]
    port = project.env["LIBRARY_ACTIONS_PORT"]
    assert health["actions"]["url"] == f"http://127.0.0.1:{port}/webhook"
    assert health["actions"]["ready"]
    old_model = health["model"]

    # Its custom action answers.
    visitor = await connect_user(server)
    (hours,) = await visitor.bot_texts("when are you open on saturday")
    assert hours == "On Saturday the library is open from 10:00 to 16:00."
    await visitor.close()

    # A handoff: the agent teaches a new intent and its answer.
    database_url = f"sqlite:///{project.root / '.handoff' / 'handoff.db'}"
    add_agent(server, "lou", "Lou", database_url=database_url)
    add_agent(server, "mae", "Mae", role="maintainer", database_url=database_url)
    agent = await connect_agent(server, "lou")
    user = await connect_user(server)
    frames = await user.say("can I speak to a librarian")
    assert (frames[0]["status"], frames[0]["reason"]) == ("queued", "user_asked"), frames
    await agent.act("claim", conversation_id=user.conversation_id)
    for text in PARAPHRASES:
        await user.say(text, answered=False)
        relayed = await agent.expect("user_message", conversation_id=user.conversation_id)
        labelled = await agent.act(
            "label", message_id=relayed["message"]["message_id"], intent=NEW_INTENT
        )
        assert labelled["new_intent"] is True
    await agent.act("reply", conversation_id=user.conversation_id, text=AGENT_ANSWER)
    await agent.act("close", conversation_id=user.conversation_id)
    await user.close()
    await agent.close()

    # Review and export: the learned domain goes beside the single domain.yml.
    token = login(server, "mae", "correct-horse-battery")
    status, review = http_json(
        "GET",
        f"{server.base_url}/api/review",
        headers={"Authorization": f"Bearer {token}", "Origin": server.base_url},
    )
    assert status == 200, review
    group = next(g for g in review["groups"] if g["intent"] == NEW_INTENT)
    ids = [e["id"] for e in group["examples"]] + [r["id"] for r in group["responses"]]
    ids += [s["id"] for s in review["stories"]]
    status, _ = http_json(
        "POST",
        f"{server.base_url}/api/review",
        json.dumps({"decisions": [{"id": i, "action": "approve"} for i in ids]}).encode(),
        headers={"Authorization": f"Bearer {token}", "Origin": server.base_url},
    )
    assert status == 200
    exported = handoff(project, "export")
    assert exported.returncode == 0, exported.stdout + exported.stderr
    learned_domain = yaml.safe_load((project.root / "domain.learned.yml").read_text())
    assert learned_domain["intents"] == [NEW_INTENT]
    assert learned_domain["responses"] == {f"utter_{NEW_INTENT}": [{"text": AGENT_ANSWER}]}
    learned_nlu = (project.root / "data" / "learned" / "nlu.yml").read_text()
    assert all(text in learned_nlu for text in PARAPHRASES)
    assert "ask_printer" not in (project.root / "domain.yml").read_text()  # untouched

    # Retrain on domain.yml + domain.learned.yml, promote, and the server swaps to it.
    trained = handoff(project, "train")
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    assert "Promoted:" in trained.stdout, trained.stdout[-2000:]
    new_model = re.search(r"Model: .*/(\S+\.tar\.gz)", trained.stdout)
    assert new_model and new_model.group(1) != old_model
    for _ in range(240):
        if http_json("GET", f"{server.base_url}/health")[1].get("model") == new_model.group(1):
            break
        await asyncio.sleep(1)
    else:
        pytest.fail(f"the server did not swap to {new_model.group(1)}:\n{server.log_tail()}")

    newcomer = await connect_user(server)
    frames = await newcomer.say(UNSEEN)
    assert [(f["type"], f.get("text")) for f in frames] == [("bot", AGENT_ANSWER)], frames
    await newcomer.close()
