"""Approve before send with the real model over real websockets: a bot answer in the approval
band waits for the agent and goes out approved, corrected, replaced or at its deadline; with
no agent online it goes out at once."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    AgentClient,
    RunningServer,
    UserClient,
    add_agent,
    connect_agent,
    connect_user,
    http_json,
    login,
    start_server,
    stop_server,
)
from tests.integration.test_server import assert_is_response

pytestmark = pytest.mark.slow

TIMEOUT_S = 4


@pytest.fixture(scope="module")
def approving(
    trained_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """A server that holds every plain bot answer for an online agent (band 1.0)."""
    running = start_server(
        trained_model,
        tmp_path_factory.mktemp("approvals"),
        extra_env={
            "HANDOFF_APPROVAL_BAND": "1.0",
            "HANDOFF_APPROVAL_TIMEOUT": str(TIMEOUT_S),
            "HANDOFF_APPROVAL_SLOTS": "10",
        },
    )
    add_agent(running, "ivy", "Ivy")
    add_agent(running, "jon", "Jon", role="maintainer")
    yield running
    stop_server(running)


async def held(user: UserClient, agent: AgentClient, text: str) -> dict[str, Any]:
    """Send ``text``; the user is shown the bot typing, the agent gets the held answer."""
    await user.send({"type": "message", "id": f"m-{time.monotonic_ns()}", "text": text})
    await user.expect("typing", who="bot", typing=True)
    offer = await agent.expect("approval", conversation_id=user.conversation_id)
    assert offer["message"]["text"] == text and offer["draft"]
    return offer


async def test_with_no_agent_online_the_answer_goes_out_at_once_and_is_verified_later(
    approving: RunningServer,
) -> None:
    user = await connect_user(approving)
    try:
        (answer,) = await user.bot_texts("what's my balance")
        assert_is_response(answer, "utter_check_balance")
    finally:
        await user.close()
    token = login(approving, "jon", "correct-horse-battery")
    status, queued = http_json(
        "GET",
        f"{approving.base_url}/api/verifications",
        headers={"Authorization": f"Bearer {token}", "Origin": approving.base_url},
    )
    assert status == 200
    texts = [v["text"] for v in queued["verifications"]]
    assert "what's my balance" in texts, texts  # unchecked, so it waits to be verified


async def test_an_approved_answer_goes_out_and_becomes_a_review_candidate(
    approving: RunningServer,
) -> None:
    agent = await connect_agent(approving, "ivy")
    user = await connect_user(approving)
    try:
        offer = await held(user, agent, "how do I check what's in my account")
        started = time.monotonic()
        await agent.act("approve", approval_id=offer["approval_id"])
        answer = await user.expect("bot")
        assert answer["text"] == offer["draft"][0]["text"]  # exactly what the agent saw
        await user.expect("typing", who="bot", typing=False)
        settled = await agent.expect("approval_settled", approval_id=offer["approval_id"])
        assert (settled["outcome"], settled["by"]) == ("approved", "Ivy")
        print(f"\napproved -> user has the answer in {time.monotonic() - started:.3f} s")
        refused = await agent.act_expecting_error("approve", approval_id=offer["approval_id"])
        assert refused["code"] == "already_settled"
    finally:
        await user.close()
        await agent.close()
    token = login(approving, "jon", "correct-horse-battery")
    status, review = http_json(
        "GET",
        f"{approving.base_url}/api/review",
        headers={"Authorization": f"Bearer {token}", "Origin": approving.base_url},
    )
    assert status == 200
    examples = [e for g in review["groups"] for e in g["examples"]]
    assert any(e["text"] == "how do I check what's in my account" for e in examples), examples


async def test_a_corrected_answer_is_the_bots_answer_for_the_chosen_intent(
    approving: RunningServer,
) -> None:
    agent = await connect_agent(approving, "ivy")
    user = await connect_user(approving)
    try:
        first = await held(user, agent, "hello")  # a turn before: the rewind keeps it
        await agent.act("approve", approval_id=first["approval_id"])
        await user.expect("bot")
        offer = await held(user, agent, "hi")
        await agent.act("correct", approval_id=offer["approval_id"], intent="support_hours")
        answer = await user.expect("bot")
        assert_is_response(answer["text"], "utter_support_hours")
    finally:
        await user.close()
        await agent.close()
    # Rasa's transcript: the held turn is rewound and the message answered as support_hours.
    with sqlite3.connect(approving.tracker_database_path) as db:
        rows = db.execute(
            "SELECT type_name, intent_name, action_name FROM events WHERE sender_id = ?"
            " ORDER BY id",
            (user.conversation_id,),
        ).fetchall()
    kinds = [kind for kind, _, _ in rows]
    assert "rewind" in kinds
    after = rows[kinds.index("rewind") + 1 :]
    assert ("user", "support_hours", None) in after
    assert ("action", None, "utter_support_hours") in after


async def test_a_replaced_answer_is_the_agents_text(approving: RunningServer) -> None:
    agent = await connect_agent(approving, "ivy")
    user = await connect_user(approving)
    text = "Good morning! A person checked this one: how can we help?"
    try:
        offer = await held(user, agent, "good morning")
        await agent.act("replace", approval_id=offer["approval_id"], text=text)
        answer = await user.expect("bot")
        assert answer["text"] == text
    finally:
        await user.close()
        await agent.close()
    with sqlite3.connect(approving.tracker_database_path) as db:
        bots = [
            json.loads(data)
            for (data,) in db.execute(
                "SELECT data FROM events WHERE sender_id = ? AND type_name = 'bot'",
                (user.conversation_id,),
            )
        ]
    assert bots[-1]["text"] == text
    assert bots[-1]["metadata"]["approval"]["agent_name"] == "Ivy"


async def test_an_undecided_answer_goes_out_at_its_deadline(approving: RunningServer) -> None:
    agent = await connect_agent(approving, "ivy")
    user = await connect_user(approving)
    try:
        offer = await held(user, agent, "are you a bot?")
        answer = await user.expect("bot", timeout=TIMEOUT_S + 10)
        assert answer["text"] == offer["draft"][0]["text"]
        settled = await agent.expect("approval_settled", approval_id=offer["approval_id"])
        assert settled["outcome"] == "timed_out"
    finally:
        await user.close()
        await agent.close()
