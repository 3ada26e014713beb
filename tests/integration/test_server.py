"""The real server with the real model, over real websockets and HTTP."""

from __future__ import annotations

import json
import re
import sqlite3
import uuid
from pathlib import Path

import pytest
import yaml
from websockets.client import connect as ws_connect

from handoff.assistant.model_files import operating_point_file
from tests.conftest import PROJECT_ROOT, RunningServer, connect_user, http_json

pytestmark = pytest.mark.slow

RESPONSES: dict[str, list[str]] = {
    name: [variation["text"] for variation in variations if "text" in variation]
    for name, variations in yaml.safe_load(
        (PROJECT_ROOT / "bot" / "domain" / "assistant.yml").read_text(encoding="utf-8")
    )["responses"].items()
}


def response_pattern(name: str) -> re.Pattern[str]:
    """A regex matching any variation of response ``name``, slots like {card_type} as wildcards."""
    alternatives = [
        re.escape(text).replace(r"\{", "{").replace(r"\}", "}") for text in RESPONSES[name]
    ]
    alternatives = [re.sub(r"\{[a-z0-9_]+\}", ".+", alt) for alt in alternatives]
    return re.compile("^(?:" + "|".join(alternatives) + ")$", re.DOTALL)


def assert_is_response(text: str, name: str) -> None:
    assert response_pattern(name).match(text), f"{text!r} is not a variation of {name}"


def test_health_names_the_loaded_model(server: RunningServer, trained_model: Path) -> None:
    status, body = http_json("GET", f"{server.base_url}/health")
    assert status == 200
    assert body["status"] == "ok"
    assert body["model"] == trained_model.name
    # Served at the threshold `handoff train` chose for the target precision, stored beside it.
    chosen = json.loads(operating_point_file(trained_model).read_text())
    assert chosen["reached"] and chosen["target_precision"] == 0.95
    assert body["fallback_threshold"] == chosen["threshold"]
    assert 0 < body["fallback_threshold"] < 1


async def test_websocket_greeting_gets_the_greeting_answer(server: RunningServer) -> None:
    user = await connect_user(server)
    try:
        replies = await user.bot_texts("hello there")
        assert_is_response(replies[0], "utter_greet")
    finally:
        await user.close()


SAMPLE = [
    ("what's my current balance", "utter_check_balance"),
    ("can you show me the last few payments on my account", "utter_recent_transactions"),
    ("my card got declined at the supermarket", "utter_card_declined"),
    ("how do I change my PIN", "utter_change_pin"),
    ("I forgot my password and can't log in", "utter_reset_password"),
    ("what are your opening hours for support", "utter_support_hours"),
    ("are you a real person or a bot?", "utter_iamabot"),
]


@pytest.mark.parametrize(("text", "response"), SAMPLE)
async def test_websocket_answers_a_sample_of_intents(
    server: RunningServer, text: str, response: str
) -> None:
    user = await connect_user(server)
    try:
        replies = await user.bot_texts(text)
        assert_is_response(replies[0], response)
    finally:
        await user.close()


async def test_form_fills_slots_across_turns_and_is_stored(server: RunningServer) -> None:
    user = await connect_user(server)
    try:
        replies = await user.bot_texts("I think I lost my card")
        assert_is_response(replies[-1], "utter_ask_card_type")
        replies = await user.bot_texts("it's the debit one")
        assert any("debit" in reply for reply in replies), replies
    finally:
        await user.close()
    with sqlite3.connect(server.tracker_database_path) as db:
        rows = db.execute(
            "SELECT type_name, intent_name FROM events WHERE sender_id = ? ORDER BY id",
            (user.conversation_id,),
        ).fetchall()
    assert ("user", "report_lost_card") in rows
    assert sum(1 for kind, _ in rows if kind == "user") == 2


async def test_reconnecting_with_the_conversation_id_continues_the_conversation(
    server: RunningServer,
) -> None:
    user = await connect_user(server)
    replies = await user.bot_texts("I need to move some money")
    assert_is_response(replies[-1], "utter_ask_amount")
    await user.close()

    again = await connect_user(server, user.conversation_id)
    try:
        assert again.conversation_id == user.conversation_id
        replies = await again.bot_texts("150 euros")
        assert_is_response(replies[-1], "utter_ask_account_type")
    finally:
        await again.close()


MALFORMED_FRAMES = [
    ("{not json", "invalid_json"),
    ("[1, 2, 3]", "invalid_json"),
    (json.dumps({"type": "shout", "id": "a1", "text": "hi"}), "unknown_type"),
    (json.dumps({"type": "typing", "typing": "maybe"}), "invalid_field"),
    (json.dumps({"type": "message", "text": "hi"}), "invalid_field"),
    (json.dumps({"type": "message", "id": "has spaces", "text": "hi"}), "invalid_field"),
    (json.dumps({"type": "message", "id": "a2", "text": 42}), "invalid_field"),
    (json.dumps({"type": "message", "id": "a3", "text": "   "}), "invalid_field"),
    (json.dumps({"type": "message", "id": "a4", "text": "x" * 5000}), "too_large"),
    (json.dumps({"type": "message", "id": "a5", "text": "y" * 20_000}), "too_large"),
]


async def test_malformed_frames_get_an_error_and_the_connection_keeps_working(
    server: RunningServer,
) -> None:
    user = await connect_user(server)
    try:
        for raw, code in MALFORMED_FRAMES:
            await user.send(raw)
            frame = await user.expect("error")
            assert frame["code"] == code, (raw, frame)
            assert frame["message"]
        replies = await user.bot_texts("hi")
        assert_is_response(replies[0], "utter_greet")
    finally:
        await user.close()
    with sqlite3.connect(server.tracker_database_path) as db:
        user_events = db.execute(
            "SELECT COUNT(*) FROM events WHERE sender_id = ? AND type_name = 'user'",
            (user.conversation_id,),
        ).fetchone()[0]
    assert user_events == 1, "malformed frames must not be stored"


async def test_invalid_conversation_id_is_refused_with_an_error_frame(
    server: RunningServer,
) -> None:
    async with ws_connect(f"{server.ws_url}/ws/user?conversation_id=bad%20id") as ws:
        frame = json.loads(await ws.recv())
        assert frame["type"] == "error"
        assert frame["code"] == "invalid_field"


def test_rest_channel_answers_like_rasa(server: RunningServer) -> None:
    sender = f"rest-{uuid.uuid4().hex}"
    body = json.dumps({"sender": sender, "message": "hi"}).encode()
    status, replies = http_json("POST", f"{server.base_url}/webhooks/rest/webhook", body)
    assert status == 200
    assert replies[0]["recipient_id"] == sender
    assert_is_response(replies[0]["text"], "utter_greet")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{broken", "invalid_json"),
        (b'"just a string"', "invalid_json"),
        (json.dumps({"message": "hi"}).encode(), "invalid_field"),
        (json.dumps({"sender": "", "message": "hi"}).encode(), "invalid_field"),
        (json.dumps({"sender": "s1", "message": None}).encode(), "invalid_field"),
        (json.dumps({"sender": "s1", "message": "hi", "metadata": [1]}).encode(), "invalid_field"),
        (json.dumps({"sender": "s1", "message": "z" * 3000}).encode(), "too_large"),
    ],
)
def test_malformed_rest_bodies_get_400_with_a_reason(
    server: RunningServer, body: bytes, code: str
) -> None:
    status, reply = http_json("POST", f"{server.base_url}/webhooks/rest/webhook", body)
    assert status == 400
    assert reply["error"]["code"] == code
    assert reply["error"]["message"]
    status, _ = http_json("GET", f"{server.base_url}/health")
    assert status == 200


def test_oversized_rest_body_is_refused_and_the_server_keeps_working(
    server: RunningServer,
) -> None:
    body = json.dumps({"sender": "big", "message": "q" * 200_000}).encode()
    status, _ = http_json("POST", f"{server.base_url}/webhooks/rest/webhook", body)
    assert status == 413
    status, replies = http_json(
        "POST",
        f"{server.base_url}/webhooks/rest/webhook",
        json.dumps({"sender": "after-big", "message": "hello"}).encode(),
    )
    assert status == 200
    assert replies


def test_chat_page_and_console_are_served(server: RunningServer) -> None:
    import urllib.request

    with urllib.request.urlopen(f"{server.base_url}/chat", timeout=10) as page:
        html = page.read().decode()
    assert "/ws/user" not in html  # the socket URL lives in chat.js
    assert '<script src="/static/chat.js">' in html
    with urllib.request.urlopen(f"{server.base_url}/static/chat.js", timeout=10) as script:
        assert "/ws/user" in script.read().decode()
    with urllib.request.urlopen(f"{server.base_url}/console", timeout=10) as console:
        assert '<script src="/console/console.js">' in console.read().decode()
    for asset in ("/console/console.js", "/console/console.css", "/static/chat.css"):
        with urllib.request.urlopen(f"{server.base_url}{asset}", timeout=10) as response:
            assert response.status == 200, asset
