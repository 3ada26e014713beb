"""Live handoff against the real server and model, over real websockets."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.client import connect
from websockets.exceptions import InvalidStatusCode

from handoff.web.websocket_io import MAX_QUEUED
from tests.conftest import (
    PASSWORD,
    STRICT_INTENT,
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

pytestmark = pytest.mark.slow

LOW_CONFIDENCE_TEXT = "I'd like to close my account please"
"""Classified as close_account, which the session server hands off below 99.99% confidence."""


@pytest.fixture(scope="module")
def team(server: RunningServer) -> RunningServer:
    add_agent(server, "maya", "Maya", role="maintainer")
    add_agent(server, "dana", "Dana")
    add_agent(server, "lee", "Lee")
    return server


@pytest.fixture
async def dana(team: RunningServer) -> AsyncIterator[AgentClient]:
    agent = await connect_agent(team, "dana")
    yield agent
    await agent.close()


async def handed_off_user(
    server: RunningServer, text: str = "can I talk to a real person"
) -> UserClient:
    user = await connect_user(server)
    frames = await user.say(text)
    assert frames[0]["type"] == "handoff" and frames[0]["status"] == "queued", frames
    return user


async def claim(agent: AgentClient, user: UserClient) -> dict[str, Any]:
    ack = await agent.act("claim", conversation_id=user.conversation_id)
    await user.expect("handoff", status="agent_joined")
    transcript: dict[str, Any] = ack["transcript"]
    return transcript


def tracker_events(server: RunningServer, conversation_id: str) -> list[tuple[str, dict]]:
    with sqlite3.connect(server.tracker_database_path) as db:
        rows = db.execute(
            "SELECT type_name, data FROM events WHERE sender_id = ? ORDER BY id", (conversation_id,)
        ).fetchall()
    return [(kind, json.loads(data)) for kind, data in rows]


async def test_low_confidence_message_is_handled_by_an_agent_and_handed_back(
    team: RunningServer, dana: AgentClient
) -> None:
    user = await connect_user(team)
    assert await user.bot_texts("hello")  # the bot answers first
    frames = await user.say(LOW_CONFIDENCE_TEXT)
    assert [f.get("status") for f in frames] == ["queued"]
    assert frames[0]["reason"] == "low_confidence"
    position = await user.expect("queue_position")
    assert position["position"] >= 1

    queue = await dana.expect("queue")
    item = next(i for i in queue["items"] if i["conversation_id"] == user.conversation_id)
    assert item["last_message"] == LOW_CONFIDENCE_TEXT
    assert item["intents"][0]["name"] == STRICT_INTENT

    transcript = (await dana.act("claim", conversation_id=user.conversation_id))["transcript"]
    joined = await user.expect("handoff", status="agent_joined")
    assert joined["text"] == "Dana joined the chat."
    senders = [m["sender"] for m in transcript["messages"]]
    assert senders[:3] == ["user", "bot", "user"], "the agent sees the bot part too"
    escalated = transcript["messages"][2]
    assert escalated["text"] == LOW_CONFIDENCE_TEXT
    assert len(escalated["intents"]) == 5
    assert escalated["intents"][0]["name"] == STRICT_INTENT

    await user.send({"type": "message", "id": "u-follow-up", "text": "it's my savings account"})
    relayed = await dana.expect("user_message", conversation_id=user.conversation_id)
    assert relayed["message"]["text"] == "it's my savings account"
    intents = await dana.expect("intents", message_id=relayed["message"]["message_id"])
    assert intents["ranking"] and intents["event_id"] > relayed["event_id"]

    labelled = await dana.act("label", message_id=escalated["message_id"], intent=STRICT_INTENT)
    assert labelled["new_intent"] is False
    new = await dana.act(
        "label", message_id=relayed["message"]["message_id"], intent="close_savings"
    )
    assert new["new_intent"] is True

    await dana.act(
        "reply",
        conversation_id=user.conversation_id,
        text="I can help you close it.",
        response_name="utter_close_account",
    )
    reply = await user.expect("agent")
    assert reply == {**reply, "text": "I can help you close it.", "agent": "Dana"}

    await dana.act("hand_back", conversation_id=user.conversation_id)
    await user.expect("handoff", status="handed_back")
    await dana.expect("unassigned", conversation_id=user.conversation_id)
    assert await user.bot_texts("hi again"), "the bot answers again"

    kinds = [kind for kind, _ in tracker_events(team, user.conversation_id)]
    assert "pause" in kinds and "resume" in kinds
    assert kinds.index("pause") < kinds.index("resume")
    agent_utterances = [
        data
        for kind, data in tracker_events(team, user.conversation_id)
        if kind == "bot" and "handoff" in (data.get("metadata") or {})
    ]
    assert agent_utterances[0]["text"] == "I can help you close it."
    assert agent_utterances[0]["metadata"]["handoff"]["agent_name"] == "Dana"
    assert agent_utterances[0]["metadata"]["handoff"]["response_name"] == "utter_close_account"
    paused_user_messages = [
        data
        for kind, data in tracker_events(team, user.conversation_id)
        if kind == "user" and data["text"] == "it's my savings account"
    ]
    assert paused_user_messages[0]["parse_data"]["intent_ranking"], "parsed while paused"

    opened = await dana.act_expecting_error("open", conversation_id=user.conversation_id)
    assert opened["code"] == "not_assigned"
    await user.close()


async def test_always_human_intent_goes_to_a_person(team: RunningServer, dana: AgentClient) -> None:
    user = await connect_user(team)
    frames = await user.say("someone used my card without my permission")
    assert frames[0]["status"] == "queued"
    assert frames[0]["reason"] == "always_human_intent"
    await user.close()


async def test_no_agent_online_user_can_leave_a_message(team: RunningServer) -> None:
    user = await connect_user(team)
    frames = await user.say("I want to speak to a human")
    assert [f["status"] for f in frames] == ["queued", "no_agents"]
    frames = await user.say("please call me back about my loan", answered=False)
    assert frames == [], "while queued, messages wait for an agent"
    await user.close()

    agent = await connect_agent(team, "lee")
    try:
        item = next(i for i in agent.hello["queue"] if i["conversation_id"] == user.conversation_id)
        assert item["last_message"] == "please call me back about my loan"
        transcript = (await agent.act("claim", conversation_id=user.conversation_id))["transcript"]
        assert transcript["messages"][-1]["text"] == "please call me back about my loan"
        await agent.act("close", conversation_id=user.conversation_id)
    finally:
        await agent.close()


async def test_two_agents_racing_to_claim_exactly_one_wins(team: RunningServer) -> None:
    dana, lee = await connect_agent(team, "dana"), await connect_agent(team, "lee")
    user = await handed_off_user(team)
    try:
        ids = ["race-dana", "race-lee"]
        await asyncio.gather(
            dana.send({"type": "claim", "id": ids[0], "conversation_id": user.conversation_id}),
            lee.send({"type": "claim", "id": ids[1], "conversation_id": user.conversation_id}),
        )
        outcomes = []
        for agent, client_id in ((dana, ids[0]), (lee, ids[1])):
            frame = await agent.expect_any(("ack", "error"), id=client_id)
            outcomes.append(frame["type"])
        assert sorted(outcomes) == ["ack", "error"]
        loser = (dana, lee)[outcomes.index("error")]
        winner = (dana, lee)[outcomes.index("ack")]
        assert loser.last_error["code"] == "already_claimed"

        # the loser cannot act on the winner's conversation
        error = await loser.act_expecting_error(
            "reply", conversation_id=user.conversation_id, text="me too"
        )
        assert error["code"] == "not_assigned"
        await winner.act("close", conversation_id=user.conversation_id)
    finally:
        await asyncio.gather(dana.close(), lee.close(), user.close())


async def test_reconnecting_user_receives_exactly_what_it_missed(
    team: RunningServer, dana: AgentClient
) -> None:
    user = await handed_off_user(team)
    await dana.act("claim", conversation_id=user.conversation_id)
    joined = await user.expect("handoff", status="agent_joined")
    seen = [joined, *await user.drain(0.5)]  # queue positions are live only: no event_id
    cursor = max(f["event_id"] for f in seen if "event_id" in f)
    cursor = max(cursor, user.ready["last_event_id"])
    await user.close()

    for text in ("first while away", "second while away"):
        await dana.act("reply", conversation_id=user.conversation_id, text=text)
    again = await connect_user(team, user.conversation_id, last_event_id=cursor)
    try:
        missed = [f for f in await again.drain(1.0) if f["type"] == "agent"]
        assert [f["text"] for f in missed] == ["first while away", "second while away"]
        ids = [f["event_id"] for f in missed]
        assert ids == sorted(ids) and len(set(ids)) == 2
        await dana.act("reply", conversation_id=user.conversation_id, text="live again")
        live = await again.expect("agent")
        assert live["text"] == "live again" and live["event_id"] > ids[-1]
        assert [f for f in await again.drain(0.5) if f["type"] == "agent"] == []
    finally:
        await dana.act("close", conversation_id=user.conversation_id)
        await again.close()


async def test_stale_cursor_gets_a_resync_frame(team: RunningServer) -> None:
    user = await connect_user(team)
    frame = await connect(
        f"{team.ws_url}/ws/user?conversation_id={user.conversation_id}&last_event_id=999999999"
    )
    try:
        first = json.loads(await frame.recv())
        assert first["type"] == "resync"
    finally:
        await frame.close()
        await user.close()


async def test_duplicate_client_message_id_is_stored_and_delivered_once(
    team: RunningServer, dana: AgentClient
) -> None:
    user = await handed_off_user(team)
    await claim(dana, user)
    frame = {"type": "message", "id": "dup-1", "text": "is anyone there?"}
    await user.send(frame)
    await user.expect("ack", id="dup-1")
    await user.send(frame)
    duplicate = await user.expect("ack", id="dup-1")
    assert duplicate["duplicate"] is True
    await dana.expect("user_message", conversation_id=user.conversation_id)
    later = [f for f in await dana.drain(1.0) if f["type"] == "user_message"]
    assert later == []
    with sqlite3.connect(team.database_path) as db:
        count = db.execute(
            "SELECT COUNT(*) FROM messages"
            " WHERE conversation_id = ? AND client_message_id = 'dup-1'",
            (user.conversation_id,),
        ).fetchone()[0]
    assert count == 1
    await dana.act("close", conversation_id=user.conversation_id)
    await user.close()


AGENT_MALFORMED = [
    ("nope", "invalid_json"),
    (json.dumps({"type": "dance"}), "unknown_type"),
    (json.dumps({"type": "claim", "id": "m1"}), "invalid_field"),
    (
        json.dumps({"type": "reply", "id": "m2", "conversation_id": "c", "text": ""}),
        "invalid_field",
    ),
    (json.dumps({"type": "label", "id": "m3", "message_id": "7", "intent": "x"}), "invalid_field"),
    (json.dumps({"type": "presence", "status": "asleep"}), "invalid_field"),
    (
        json.dumps({"type": "claim", "id": "m4", "conversation_id": "no-such-conversation"}),
        "unknown_conversation",
    ),
    (
        json.dumps({"type": "reply", "id": "m5", "conversation_id": "c", "text": "x" * 3000}),
        "too_large",
    ),
]


async def test_malformed_agent_frames_get_errors_and_the_socket_stays_usable(
    team: RunningServer, dana: AgentClient
) -> None:
    for raw, code in AGENT_MALFORMED:
        await dana.send(raw)
        error = await dana.expect("error")
        assert error["code"] == code, (raw, error)
    await dana.send({"type": "presence", "status": "away"})
    presence = await dana.expect("presence")
    assert presence["agents"]


async def test_agent_socket_checks_origin_and_authentication(team: RunningServer) -> None:
    token = login(team, "dana", PASSWORD)
    with pytest.raises(InvalidStatusCode) as wrong_origin:
        await connect(
            f"{team.ws_url}/ws/agent",
            origin="http://evil.example",  # type: ignore[arg-type]
            extra_headers={"Authorization": f"Bearer {token}"},
        )
    assert wrong_origin.value.status_code == 403
    with pytest.raises(InvalidStatusCode) as anonymous:
        await connect(f"{team.ws_url}/ws/agent", origin=team.base_url)  # type: ignore[arg-type]
    assert anonymous.value.status_code == 401
    with pytest.raises(InvalidStatusCode) as bad_token:
        await connect(
            f"{team.ws_url}/ws/agent",
            origin=team.base_url,  # type: ignore[arg-type]
            extra_headers={"Authorization": "Bearer forged"},
        )
    assert bad_token.value.status_code == 401
    status, body = http_json(
        "POST",
        f"{team.base_url}/api/login",
        json.dumps({"username": "dana", "password": "wrong-password"}).encode(),
        headers={"Origin": team.base_url},
    )
    assert status == 401 and body["error"]["code"] == "bad_credentials"


async def test_typing_transfer_and_agent_accounts(team: RunningServer) -> None:
    dana, lee = await connect_agent(team, "dana"), await connect_agent(team, "lee")
    user = await handed_off_user(team)
    try:
        await claim(dana, user)
        await dana.send({"type": "typing", "conversation_id": user.conversation_id, "typing": True})
        assert (await user.expect("typing"))["typing"] is True
        await user.send({"type": "typing", "typing": True})
        assert (await dana.expect("typing", conversation_id=user.conversation_id))["typing"] is True

        await dana.act("transfer", conversation_id=user.conversation_id, to="lee")
        await lee.expect("assigned", conversation_id=user.conversation_id)
        await dana.expect("unassigned", conversation_id=user.conversation_id)
        assert (await user.expect("handoff", status="agent_joined"))["agent"] == "Lee"
        await lee.act("reply", conversation_id=user.conversation_id, text="Lee here.")
        assert (await user.expect("agent"))["agent"] == "Lee"
        error = await dana.act_expecting_error("hand_back", conversation_id=user.conversation_id)
        assert error["code"] == "not_assigned"
        await lee.act("close", conversation_id=user.conversation_id)
        await user.expect("handoff", status="closed")
    finally:
        await asyncio.gather(dana.close(), lee.close(), user.close())

    maya = login(team, "maya", PASSWORD)
    headers = {"Origin": team.base_url, "Authorization": f"Bearer {maya}"}
    body = json.dumps(
        {"username": "kim", "display_name": "Kim", "password": PASSWORD, "role": "agent"}
    ).encode()
    status, created = http_json("POST", f"{team.base_url}/api/agents", body, headers=headers)
    assert status == 201, created
    status, _ = http_json(
        "PATCH",
        f"{team.base_url}/api/agents/kim",
        json.dumps({"disabled": True}).encode(),
        headers=headers,
    )
    assert status == 200
    status, _ = http_json(
        "POST",
        f"{team.base_url}/api/login",
        json.dumps({"username": "kim", "password": PASSWORD}).encode(),
        headers={"Origin": team.base_url},
    )
    assert status == 401
    dana_token = login(team, "dana", PASSWORD)
    status, _ = http_json(
        "POST",
        f"{team.base_url}/api/agents",
        body,
        headers={"Origin": team.base_url, "Authorization": f"Bearer {dana_token}"},
    )
    assert status == 403, "only maintainers manage accounts"


@pytest.fixture
def restartable(trained_model: Path, tmp_path: Path) -> Iterator[list[RunningServer]]:
    servers: list[RunningServer] = []
    yield servers
    for running in servers:
        stop_server(running)


async def test_server_restart_in_the_middle_of_a_handoff_loses_nothing(
    trained_model: Path, tmp_path: Path, restartable: list[RunningServer]
) -> None:
    first = start_server(trained_model, tmp_path)
    restartable.append(first)
    add_agent(first, "dana", "Dana")
    waiting_user = await handed_off_user(first)
    claimed_user = await handed_off_user(first)
    dana = await connect_agent(first, "dana")
    await dana.act("claim", conversation_id=claimed_user.conversation_id)
    await claimed_user.expect("handoff", status="agent_joined")
    cursor = max(f.get("event_id", 0) for f in await claimed_user.drain(0.5)) or 0
    cursor = max(cursor, claimed_user.ready["last_event_id"])
    await asyncio.gather(dana.close(), waiting_user.close(), claimed_user.close())

    stop_server(first)
    restartable.clear()
    second = start_server(trained_model, tmp_path, port=first.port)
    restartable.append(second)

    dana = await connect_agent(second, "dana")
    try:
        assert claimed_user.conversation_id in dana.hello["assigned"]
        assert waiting_user.conversation_id in [i["conversation_id"] for i in dana.hello["queue"]]
        await dana.act("reply", conversation_id=claimed_user.conversation_id, text="Still here.")
        back = await connect_user(second, claimed_user.conversation_id, last_event_id=cursor)
        assert back.ready["state"] == "assigned"
        assert (await back.expect("agent"))["text"] == "Still here."
        await back.send({"type": "message", "id": "after-restart", "text": "great, thanks"})
        relayed = await dana.expect("user_message", conversation_id=claimed_user.conversation_id)
        assert relayed["message"]["text"] == "great, thanks"
        await back.close()
    finally:
        await dana.close()


async def test_unhelpful_answer_then_accepting_a_person_hands_off(team: RunningServer) -> None:
    user = await connect_user(team)
    assert await user.bot_texts("what are your support hours")
    await user.send({"type": "request_human", "id": "thumbs-down-1"})
    await user.expect("ack", id="thumbs-down-1")
    queued = await user.expect("handoff", status="queued")
    assert queued["reason"] == "unhelpful_answer"
    await user.send({"type": "request_human", "id": "thumbs-down-2"})
    error = await user.expect("error", id="thumbs-down-2")
    assert error["code"] == "illegal_transition", "already waiting for a person"
    await user.close()


async def test_bursts_are_relayed_in_order_and_once_each_way(
    team: RunningServer, dana: AgentClient
) -> None:
    """Frames sent back to back arrive together and are read as a burst: each is handled once,
    in the order sent, both ways (the agent's burst is longer than a connection queues before
    it stops reading from its socket)."""
    user = await handed_off_user(team)
    await claim(dana, user)
    said = [f"burst message {n}" for n in range(15)]
    for number, text in enumerate(said):
        await user.send({"type": "message", "id": f"burst-{number}", "text": text})
    relayed = [
        (await dana.expect("user_message", conversation_id=user.conversation_id))["message"]
        for _ in said
    ]
    assert [m["text"] for m in relayed] == said
    # Longer than a connection queues before it pauses reading, and than the agent's burst
    # allowance (60, less what the claim used): those accepted are relayed in order, the rest
    # refused with their ids, none dropped. (Which ones are refused depends on time: the
    # allowance refills while the burst is read, so a later frame may pass again.)
    replies = [f"burst reply {n}" for n in range(MAX_QUEUED + 6)]
    for number, text in enumerate(replies):
        await dana.send(
            {
                "type": "reply",
                "id": f"burst-reply-{number}",
                "conversation_id": user.conversation_id,
                "text": text,
            }
        )
    answers = [await dana.expect_any(("ack", "error")) for _ in replies]
    refused = {a["id"] for a in answers if a["type"] == "error" and a["code"] == "rate_limited"}
    accepted = [a["id"] for a in answers if a["type"] == "ack"]
    assert len(accepted) + len(refused) == len(replies), answers
    order = [int(client_id.rsplit("-", 1)[1]) for client_id in accepted]
    assert order == sorted(order)
    assert accepted[:50] == [f"burst-reply-{n}" for n in range(50)]
    received = [(await user.expect("agent"))["text"] for _ in accepted]
    assert received == [replies[n] for n in order]
    frames = await user.drain(0.5) + await dana.drain(0.5)
    assert not [f for f in frames if f["type"] in ("agent", "user_message", "error")], frames
    await dana.act("close", conversation_id=user.conversation_id)
    await user.close()


async def test_an_agent_burst_across_conversations_keeps_each_one_in_order(
    team: RunningServer, dana: AgentClient
) -> None:
    """An agent's replies to several users sent back to back are handled at once across the
    conversations (one store commit) and in order within each; every reply is acked once, in
    the order sent."""
    users = [await handed_off_user(team) for _ in range(3)]
    for user in users:
        await claim(dana, user)
    frames = [
        {
            "type": "reply",
            "id": f"across-{index}-{number}",
            "conversation_id": user.conversation_id,
            "text": f"to user {index}: {number}",
        }
        for number in range(5)
        for index, user in enumerate(users)
    ]
    for frame in frames:
        await dana.send(frame)
    acked = [(await dana.expect("ack"))["id"] for _ in frames]
    assert acked == [frame["id"] for frame in frames]  # answers in the order sent
    for index, user in enumerate(users):
        received = [(await user.expect("agent"))["text"] for _ in range(5)]
        assert received == [f"to user {index}: {number}" for number in range(5)]
    assert not [f for f in await dana.drain(0.5) if f["type"] in ("ack", "error")]
    for user in users:
        await dana.act("close", conversation_id=user.conversation_id)
        await user.close()


async def test_flooding_a_socket_is_rate_limited_and_it_stays_usable(team: RunningServer) -> None:
    user = await connect_user(team)
    for _ in range(60):
        await user.send({"type": "typing", "typing": True})
    error = await user.expect("error", code="rate_limited")
    assert "slow down" in error["message"]
    await asyncio.sleep(2.5)
    assert await user.bot_texts("hello")
    await user.close()
