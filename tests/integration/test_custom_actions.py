"""The bundled bot's custom actions on the real action server that ``handoff serve`` starts,
over real websockets: transfers, cards, handoffs by and during actions, Rasa's event broker,
and endpoint configurations the server refuses."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    HANDOFF,
    TEST_ENV,
    RunningServer,
    UserClient,
    add_agent,
    connect_agent,
    connect_user,
    endpoints_file,
    free_port,
    http_json,
    start_server,
    stop_server,
)
from tests.integration.test_server import assert_is_response

pytestmark = pytest.mark.slow


async def test_the_server_runs_the_action_server_on_the_endpoint_address_only(
    server: RunningServer,
) -> None:
    status, body = http_json("GET", f"{server.base_url}/health")
    actions = body["actions"]
    assert status == 200 and actions["ready"] and not actions["external"]
    assert actions["url"].startswith("http://127.0.0.1:")
    port = int(actions["url"].rsplit(":", 1)[1].split("/")[0])
    listening = await asyncio.to_thread(
        subprocess.run, ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True
    )
    assert listening.stdout.split() and all(
        "127.0.0.1:" in line for line in listening.stdout.splitlines()
    ), listening.stdout


async def test_a_completed_transfer_is_forgotten_and_the_next_one_asks_again(
    server: RunningServer,
) -> None:
    user = await connect_user(server)
    try:
        for _ in range(2):
            assert_is_response(
                (await user.bot_texts("I want to move money"))[-1], "utter_ask_amount"
            )
            replies = await user.bot_texts("200 euros")
            assert_is_response(replies[-1], "utter_ask_account_type")
            assert_is_response((await user.bot_texts("savings"))[-1], "utter_transfer_summary")
            assert_is_response((await user.bot_texts("yes"))[-1], "utter_transfer_next_steps")
    finally:
        await user.close()


async def test_a_card_is_frozen_once_and_a_second_freeze_is_refused(
    server: RunningServer,
) -> None:
    user = await connect_user(server)
    try:
        assert_is_response((await user.bot_texts("I lost my card"))[-1], "utter_ask_card_type")
        assert_is_response((await user.bot_texts("credit"))[-1], "utter_ask_card_last4")
        refused, asked_again = await user.bot_texts("it ends in 4242")  # 4242 is a debit card
        assert_is_response(refused, "utter_unknown_card")
        assert_is_response(asked_again, "utter_ask_card_last4")
        frozen = (await user.bot_texts("1881"))[-1]
        assert_is_response(frozen, "utter_lost_card_frozen")
        assert "1881" in frozen
        again = await user.bot_texts("I lost my credit card ending 1881")
        assert_is_response(again[-1], "utter_card_already_frozen")
    finally:
        await user.close()
    with sqlite3.connect(server.database_path.with_name("cards.db")) as db:
        assert db.execute(
            "SELECT status, frozen_reason FROM cards WHERE last4 = '1881'"
        ).fetchone() == (
            "frozen",
            "lost",
        )


async def test_an_action_that_hands_off_queues_the_conversation(server: RunningServer) -> None:
    user = await connect_user(server)
    try:
        await user.bot_texts("I lost my debit card 7310")  # frozen in the app: now 'lost'
        asked = await user.bot_texts("I found my card, can you unfreeze it")
        assert_is_response(asked[-1], "utter_ask_card_last4")
        answers = await user.say("7310")
        assert [a["type"] for a in answers[:2]] == ["bot", "handoff"]
        assert_is_response(answers[0]["text"], "utter_unfreeze_needs_person")
        assert (answers[1]["status"], answers[1]["reason"]) == ("queued", "action")
    finally:
        await user.close()


async def handed_back_into_the_form(server: RunningServer, user: UserClient) -> list[str]:
    """Start a transfer, ask for a person mid-form, let an agent claim, answer and hand back;
    return what the bot said right after the hand-back."""
    add_agent(server, "fiona", "Fiona")
    agent = await connect_agent(server, "fiona")
    try:
        replies = await user.bot_texts("I want to transfer 50 euros")
        assert_is_response(replies[-1], "utter_ask_account_type")
        queued = await user.say("can I talk to a person please")
        assert queued[0]["status"] == "queued"
        claimed = await agent.act("claim", conversation_id=user.conversation_id)
        await user.expect("handoff", status="agent_joined")
        transcript = claimed["transcript"]
        assert transcript["active_loop"] == "transfer_form"
        assert transcript["slots"]["amount"] == "50 euros"
        first = transcript["messages"][0]
        assert first["turn"]["actions"][0]["name"] == "transfer_form"
        await agent.act("reply", conversation_id=user.conversation_id, text="Happy to help.")
        await user.expect("agent", text="Happy to help.")
        await agent.act("hand_back", conversation_id=user.conversation_id)
        await user.expect("handoff", status="handed_back")
        asked = await user.expect("bot")
        return [asked["text"]]
    finally:
        await agent.close()


async def test_a_handoff_mid_form_keeps_the_form_and_a_hand_back_resumes_it(
    server: RunningServer,
) -> None:
    user = await connect_user(server)
    try:
        (asked,) = await handed_back_into_the_form(server, user)
        assert_is_response(asked, "utter_ask_account_type")
        replies = await user.bot_texts("checking")
        assert_is_response(replies[-1], "utter_transfer_summary")
        assert "50 euros" in replies[-1]
    finally:
        await user.close()


# Rasa's event broker, and a project whose action server cannot be reached ------------------


@pytest.fixture(scope="module")
def broker_server(
    trained_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """A server whose endpoints.yml names Rasa's SQL event broker and an action server that
    nobody runs (HANDOFF_ACTION_SERVER=off)."""
    workdir = tmp_path_factory.mktemp("broker")
    broker = f"event_broker:\n  type: sql\n  dialect: sqlite\n  db: {workdir / 'events.db'}\n"
    endpoints = endpoints_file(workdir, broker)
    running = start_server(
        trained_model,
        workdir,
        extra_env={"HANDOFF_ENDPOINTS_FILE": str(endpoints), "HANDOFF_ACTION_SERVER": "off"},
    )
    yield running
    stop_server(running)


def broker_events(server: RunningServer, conversation_id: str) -> list[dict[str, Any]]:
    with sqlite3.connect(server.database_path.with_name("events.db")) as db:
        rows = db.execute(
            "SELECT data FROM events WHERE sender_id = ? ORDER BY id", (conversation_id,)
        ).fetchall()
    return [json.loads(data) for (data,) in rows]


def tracker_events(server: RunningServer, conversation_id: str) -> list[dict[str, Any]]:
    with sqlite3.connect(server.tracker_database_path) as db:
        rows = db.execute(
            "SELECT data FROM events WHERE sender_id = ? ORDER BY id", (conversation_id,)
        ).fetchall()
    return [json.loads(data) for (data,) in rows]


async def test_every_tracker_event_reaches_the_event_broker_in_order(
    broker_server: RunningServer,
) -> None:
    add_agent(broker_server, "gus", "Gus")
    user = await connect_user(broker_server)
    agent = await connect_agent(broker_server, "gus")
    conversation_id = user.conversation_id
    try:
        await user.bot_texts("hello")
        await user.say("I want to talk to a person")
        await agent.act("claim", conversation_id=conversation_id)
        await user.expect("handoff", status="agent_joined")
        await agent.act("reply", conversation_id=conversation_id, text="Gus here.")
        await user.expect("agent", text="Gus here.")
        await agent.act("hand_back", conversation_id=conversation_id)
        await user.expect("handoff", status="handed_back")
        await user.bot_texts("what's my balance")
    finally:
        await asyncio.gather(user.close(), agent.close())

    stored = tracker_events(broker_server, conversation_id)
    for _ in range(40):  # the tracker work of the hand-back finishes off the relay path
        published = broker_events(broker_server, conversation_id)
        if len(published) >= len(stored):
            break
        await asyncio.sleep(0.25)
    assert published == [{"sender_id": conversation_id, **data} for data in stored]
    kinds = [event["event"] for event in published]
    assert kinds.index("pause") < kinds.index("resume")
    pause = next(e for e in published if e["event"] == "pause")
    assert pause["metadata"]["handoff"] == {"reason": "user_asked"}
    resume = next(e for e in published if e["event"] == "resume")
    assert resume["metadata"]["handoff"] == {"outcome": "handed_back"}
    (said,) = [e for e in published if e["event"] == "bot" and e.get("text") == "Gus here."]
    assert said["metadata"]["handoff"]["agent_name"] == "Gus"


async def test_an_unreachable_action_server_gets_an_apology_and_a_person(
    broker_server: RunningServer,
) -> None:
    add_agent(broker_server, "hana", "Hana")
    user = await connect_user(broker_server)
    try:
        answers = await user.say("I lost my debit card")
        queued = next(a for a in answers if a["type"] == "handoff")
        assert (queued["status"], queued["reason"]) == ("queued", "action_failed")
        assert queued["text"].startswith("Sorry, something went wrong on our side")
        agent = await connect_agent(broker_server, "hana")
        try:
            claimed = await agent.act("claim", conversation_id=user.conversation_id)
        finally:
            await agent.close()
        transcript = claimed["transcript"]
        assert transcript["handoff_reason"] == "action_failed"
        failed = transcript["messages"][0]["turn"]["failed_actions"]
        assert failed and "Couldn't connect" in failed[0]["error"]
        assert transcript["messages"][0]["text"] == "I lost my debit card"  # nothing lost
    finally:
        await user.close()


# Configurations that are refused at start ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("action_endpoint:\n  url: [unclosed\n", "cannot be read as Rasa's endpoints.yml"),
        ("event_broker:\n  type: carrier_pigeon\n", "unknown event_broker type"),
        ("tracker_store:\n  type: redis\n", "keeps Rasa's trackers in SQL"),
    ],
)
def test_an_endpoints_file_that_cannot_be_honoured_stops_the_server_at_start(
    trained_model: Path, tmp_path: Path, text: str, fragment: str
) -> None:
    endpoints = tmp_path / "endpoints.yml"
    endpoints.write_text(text, encoding="utf-8")
    result = subprocess.run(
        [HANDOFF, "serve", "--port", str(free_port()), "--model", str(trained_model)],
        env={
            **TEST_ENV,
            "HANDOFF_ENDPOINTS_FILE": str(endpoints),
            "HANDOFF_DATABASE_URL": f"sqlite:///{tmp_path / 'handoff.db'}",
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert fragment in result.stderr
    assert str(endpoints) in result.stderr
