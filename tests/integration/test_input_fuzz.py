"""Hostile input against the real server: generated frames on both websockets and generated
REST bodies, plus each case reported in issue #12.

For every input the server must answer what :mod:`handoff.core.protocol` says (the same error
code and id for a refused frame), never ``internal``, never close the connection, keep
answering afterwards, and store nothing for a refused frame. The session server is shared;
its rate limits (user 20 frames in a burst) are met by opening a fresh connection for each
generated frame, which is cheap, instead of starting a server of our own (a model load).
"""

from __future__ import annotations

import json
import socket
import sqlite3
from typing import Any

import hypothesis
import pytest
from hypothesis import HealthCheck, event, given
from hypothesis import strategies as st
from websockets.client import connect

from handoff.core.protocol import (
    MAX_REST_BODY_BYTES,
    WEBSOCKET_MAX_SIZE,
    AgentFrame,
    RestMessage,
    UserFrame,
    parse_agent_frame,
    parse_rest_body,
    parse_user_frame,
)
from handoff.core.safe_json import ProtocolError
from tests.conftest import (
    PASSWORD,
    FrameClient,
    RunningServer,
    add_agent,
    connect_user,
    http_json,
    login,
)
from tests.hostile_inputs import agent_frames, rest_bodies, to_json, user_frames, wire_inputs

pytestmark = pytest.mark.slow

MAX_TEXT_CHARS = 2000
"""The session server's ``max_message_chars`` (the default)."""

EXAMPLES = hypothesis.settings().max_examples
"""The profile's count (conftest.py): each example costs a connection and two round trips,
about 40 ms."""

fuzz_settings = hypothesis.settings(
    max_examples=EXAMPLES,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

PROBE_ID = "probe:fuzz:answer-me"
USER_PROBE = json.dumps({"type": "feedback", "id": PROBE_ID, "helpful": True})
AGENT_PROBE = json.dumps({"type": "open", "id": PROBE_ID, "conversation_id": ""})
"""Frames the server refuses with ``invalid_field`` and the probe's id, touching nothing: its
answer shows that the frame before it was handled and that the connection still answers."""

ACTION_ERROR_CODES = {
    "not_assigned",
    "already_claimed",
    "unknown_conversation",
    "unknown_message",
    "unknown_agent",
    "illegal_transition",
    "invalid_field",
    "unknown_approval",
    "already_settled",
    "unknown_intent",
    "no_answer",
}
"""What a frame the parser accepts may still get: a refused action, never ``internal``."""

FUZZ_AGENT = "fuzz-agent"

wire_frames = st.one_of(
    wire_inputs, st.builds(to_json, user_frames), st.builds(to_json, agent_frames)
)


def wire_size(raw: str | bytes) -> int:
    return len(raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw)


def sendable(raw: str | bytes) -> bool:
    """Whether the websocket can carry ``raw``: text must be UTF-8, and frames over the
    websocket layer's limit close the connection with 1009 (documented)."""
    if isinstance(raw, str):
        try:
            raw.encode("utf-8")
        except UnicodeEncodeError:
            return False
    return wire_size(raw) <= WEBSOCKET_MAX_SIZE


def verdict(parse: Any, raw: str | bytes) -> Any:
    """What the protocol module answers ``raw``: the frame, or the ProtocolError."""
    try:
        frame = parse(raw, max_text_chars=MAX_TEXT_CHARS)
    except ProtocolError as error:
        event(f"refused: {error.code}")
        return error
    event(f"accepted {getattr(frame, 'kind', 'REST body')}")
    return frame


async def answers_until_probe(client: FrameClient, raw: str | bytes, probe: str) -> list[Any]:
    """Send ``raw`` then the probe; return every frame received before the probe's answer."""
    await client.ws.send(raw)
    await client.ws.send(probe)
    answer = await client.expect("error", timeout=30, id=PROBE_ID)
    assert answer["code"] == "invalid_field", answer
    frames, client.buffer = client.buffer, []
    return frames


def count_rows(server: RunningServer, sql: str, *params: Any) -> int:
    with sqlite3.connect(f"file:{server.database_path}?mode=ro", uri=True) as db:
        return int(db.execute(sql, params).fetchone()[0])


def messages_of(server: RunningServer, conversation_id: str) -> int:
    return count_rows(
        server, "SELECT COUNT(*) FROM messages WHERE conversation_id = ?", conversation_id
    )


def assert_answer_matches(frames: list[dict[str, Any]], expected: Any) -> None:
    errors = [f for f in frames if f.get("type") == "error"]
    assert all(e["code"] != "internal" for e in errors), errors
    if isinstance(expected, ProtocolError):
        assert [(e["code"], e.get("id")) for e in errors] == [
            (expected.code, expected.client_id)
        ], (errors, expected.message)
    else:
        assert all(e["code"] in ACTION_ERROR_CODES for e in errors), errors


@pytest.fixture(scope="module")
def log_start(server: RunningServer) -> int:
    """Where the server log stood before this module's first request."""
    return len(server.log_path.read_bytes())


@pytest.fixture(scope="module")
def agent_token(server: RunningServer, log_start: int) -> str:
    add_agent(server, FUZZ_AGENT, "Fuzz")
    return login(server, FUZZ_AGENT, PASSWORD)


@pytest.fixture(scope="module")
def agent_id(server: RunningServer, agent_token: str) -> int:
    return count_rows(server, "SELECT id FROM agents WHERE username = ?", FUZZ_AGENT)


async def connect_agent_with(server: RunningServer, token: str) -> FrameClient:
    ws = await connect(
        f"{server.ws_url}/ws/agent",
        origin=server.base_url,  # type: ignore[arg-type]
        extra_headers={"Authorization": f"Bearer {token}"},
        max_size=None,
    )
    client = FrameClient(ws)
    await client.expect("hello")
    client.buffer.clear()
    return client


def assert_agent_stored_nothing(server: RunningServer, agent: int) -> None:
    for table in ("messages", "labels"):
        assert count_rows(server, f"SELECT COUNT(*) FROM {table} WHERE agent_id = ?", agent) == 0


# Generated input --------------------------------------------------------------------------


@fuzz_settings
@given(raw=st.one_of(st.builds(to_json, user_frames), st.builds(to_json, user_frames), wire_frames))
async def test_user_socket_answers_every_generated_frame(
    server: RunningServer, log_start: int, raw: str | bytes
) -> None:
    expected = verdict(parse_user_frame, raw)
    if not sendable(raw) or (isinstance(expected, UserFrame) and expected.kind != "typing"):
        return  # too big for the websocket (closes, 1009), or a real message for Rasa
    user = await connect_user(server)
    try:
        frames = await answers_until_probe(user, raw, USER_PROBE)
    finally:
        await user.close()
    assert_answer_matches(frames, expected)
    assert messages_of(server, user.conversation_id) == 0


@fuzz_settings
@given(
    raw=st.one_of(st.builds(to_json, agent_frames), st.builds(to_json, agent_frames), wire_frames)
)
async def test_agent_socket_answers_every_generated_frame(
    server: RunningServer, agent_token: str, agent_id: int, raw: str | bytes
) -> None:
    expected = verdict(parse_agent_frame, raw)
    if not sendable(raw):
        return
    agent = await connect_agent_with(server, agent_token)
    try:
        frames = await answers_until_probe(agent, raw, AGENT_PROBE)
    finally:
        await agent.close()
    assert_answer_matches(frames, expected)
    if isinstance(expected, AgentFrame) and expected.client_id is not None:
        answered = [f for f in frames if f.get("id") == expected.client_id]
        assert len(answered) == 1 and answered[0]["type"] in ("ack", "error"), frames
    assert_agent_stored_nothing(server, agent_id)


@fuzz_settings
@given(
    body=st.one_of(
        st.builds(lambda body: to_json(body).encode(), rest_bodies),
        wire_inputs.map(
            lambda raw: raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
        ),
    )
)
def test_rest_channel_answers_every_generated_body(
    server: RunningServer, log_start: int, body: bytes
) -> None:
    expected = verdict(parse_rest_body, body)
    if isinstance(expected, RestMessage) or len(body) > MAX_REST_BODY_BYTES:
        return  # a real message for Rasa, or a 413 (tested below)
    sender = _sender_of(body)
    before = messages_of(server, sender) if sender else 0
    status, reply = http_json("POST", f"{server.base_url}/webhooks/rest/webhook", body)
    assert (status, reply) == (
        400,
        {"error": {"code": expected.code, "message": expected.message}},
    )
    if sender:
        assert messages_of(server, sender) == before


def _sender_of(body: bytes) -> str | None:
    """The body's ``sender`` if it could name a stored conversation."""
    try:
        sender = json.loads(body).get("sender")
        sender.encode("utf-8")
    except (ValueError, RecursionError, AttributeError):
        return None
    return sender if isinstance(sender, str) else None


def test_no_server_fault_was_logged(server: RunningServer, log_start: int) -> None:
    """Nothing above reached ``internal``: the server logged no traceback meanwhile."""
    logged = server.log_path.read_bytes()[log_start:].decode("utf-8", "replace")
    assert "Traceback" not in logged, logged[-4000:]


# Each case reported in issue #12 -------------------------------------------------------------

DEEP = "[" * 1000 + "]" * 1000
HUGE = "9" * 4301

REPORTED_USER_FRAMES = [
    (DEEP, "invalid_json", None),
    ('{"type": "message", "id": "r1", "text": "hi", "n": ' + HUGE + "}", "invalid_field", "r1"),
    ('{"type": "message", "id": "r2", "text": "\\ud800"}', "invalid_field", "r2"),
    ('{"type": "message", "id": "r3", "text": "nul \\u0000"}', "invalid_field", "r3"),
    ('{"type": ["message"], "id": "r4", "text": "hi"}', "unknown_type", "r4"),
    ('{"type": "message", "id": "r5", "text": "hi", "n": NaN}', "invalid_field", "r5"),
]


async def test_reported_user_frames_get_errors_and_the_socket_keeps_working(
    server: RunningServer,
) -> None:
    user = await connect_user(server)
    try:
        for raw, code, client_id in REPORTED_USER_FRAMES:
            frames = await answers_until_probe(user, raw, USER_PROBE)
            errors = [f for f in frames if f["type"] == "error"]
            assert [(e["code"], e.get("id")) for e in errors] == [(code, client_id)], raw[:80]
        await user.send({"type": "message", "id": "after", "text": "hello"})
        await user.expect("bot", timeout=120, in_reply_to="after")  # still a conversation
    finally:
        await user.close()
    stored = count_rows(
        server,
        "SELECT COUNT(*) FROM messages WHERE conversation_id = ? AND sender = 'user'",
        user.conversation_id,
    )
    assert stored == 1  # "hello" only


async def test_reported_agent_frames_get_errors_and_the_socket_keeps_working(
    server: RunningServer, agent_token: str, agent_id: int
) -> None:
    reported = [
        (DEEP, "invalid_json", None),
        ('{"type": ["claim"], "id": "a1", "conversation_id": "c"}', "unknown_type", "a1"),
        ('{"type": {"x": 1}, "id": "a2", "conversation_id": "c"}', "unknown_type", "a2"),
        (
            '{"type": "reply", "id": "a3", "conversation_id": "c", "text": "\\ud800"}',
            "invalid_field",
            "a3",
        ),
        ('{"type": "claim", "id": "a4", "conversation_id": "\\ud800"}', "invalid_field", "a4"),
        (
            '{"type": "label", "id": "a5", "message_id": ' + "7" * 400 + ', "intent": "greet"}',
            "invalid_field",
            "a5",
        ),
        (
            '{"type": "label", "id": "a6", "message_id": 2147483648, "intent": "greet"}',
            "invalid_field",
            "a6",
        ),
        (
            '{"type": "claim", "id": "a7", "conversation_id": "c", "n": ' + HUGE + "}",
            "invalid_field",
            "a7",
        ),
    ]
    agent = await connect_agent_with(server, agent_token)
    try:
        for raw, code, client_id in reported:
            frames = await answers_until_probe(agent, raw, AGENT_PROBE)
            errors = [f for f in frames if f["type"] == "error"]
            assert [(e["code"], e.get("id")) for e in errors] == [(code, client_id)], raw[:80]
        still = json.dumps({"type": "open", "id": "o1", "conversation_id": "none-such"})
        frames = await answers_until_probe(agent, still, AGENT_PROBE)
        assert [f["type"] for f in frames if f.get("id") == "o1"] in (["ack"], ["error"])
    finally:
        await agent.close()
    assert_agent_stored_nothing(server, agent_id)


async def test_rate_limited_errors_carry_the_frame_id(server: RunningServer) -> None:
    user = await connect_user(server)
    ids = [f"burst-{n}" for n in range(40)]
    try:
        for client_id in ids:  # 40 at once: over the burst of 20 at 5 per second
            await user.send({"type": "feedback", "id": client_id, "helpful": True})
        codes = {}
        for client_id in ids:
            frame = await user.expect("error", id=client_id)
            codes[client_id] = frame["code"]
    finally:
        await user.close()
    assert set(codes.values()) <= {"invalid_field", "rate_limited"}
    assert "rate_limited" in codes.values()


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (DEEP.encode(), "invalid_json"),
        (b'{"sender": "s", "message": "hi", "n": ' + HUGE.encode() + b"}", "invalid_field"),
        (b'{"sender": "s", "message": "\\ud800"}', "invalid_field"),
        (b'{"sender": "\\ud800", "message": "hi"}', "invalid_field"),
        (b'{"sender": "s", "message": "hi", "message_id": ' + b"4" * 400 + b"}", "invalid_field"),
    ],
)
def test_reported_rest_bodies_get_400_in_the_documented_shape(
    server: RunningServer, body: bytes, code: str
) -> None:
    status, reply = http_json("POST", f"{server.base_url}/webhooks/rest/webhook", body)
    assert status == 400
    assert reply["error"]["code"] == code and reply["error"]["message"]


def test_deep_json_sign_in_gets_400_in_the_documented_shape(server: RunningServer) -> None:
    status, reply = http_json(
        "POST", f"{server.base_url}/api/login", DEEP.encode(), headers={"Origin": server.base_url}
    )
    assert status == 400
    assert reply["error"]["code"] == "invalid_json"


def test_over_size_body_gets_413_too_large_with_the_limit(server: RunningServer) -> None:
    body = json.dumps({"sender": "big", "message": "q" * 100_000}).encode()
    status, reply = http_json("POST", f"{server.base_url}/webhooks/rest/webhook", body)
    assert status == 413
    assert reply["error"]["code"] == "too_large"
    assert str(MAX_REST_BODY_BYTES) in reply["error"]["message"]


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/webhooks/no-such-channel", 404, "not_found"),
        ("GET", "/api/no-such-thing", 404, "not_found"),
        ("GET", "/webhooks/rest/webhook", 405, "method_not_allowed"),
        ("DELETE", "/webhooks/rest/webhook", 405, "method_not_allowed"),
    ],
)
def test_sanic_errors_on_the_apis_come_back_in_the_documented_shape(
    server: RunningServer, method: str, path: str, status: int, code: str
) -> None:
    got, reply = http_json(method, f"{server.base_url}{path}", headers={"Origin": server.base_url})
    assert got == status
    assert reply["error"]["code"] == code and reply["error"]["message"]


def raw_http(server: RunningServer, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes no HTTP library would send; return status, headers and body."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), {k.lower(): v for k, v in headers.items()}, body


def test_a_request_sanic_cannot_read_gets_400_in_the_documented_shape(
    server: RunningServer,
) -> None:
    status, headers, body = raw_http(
        server,
        b"POST /webhooks/rest/webhook HTTP/1.1\r\nHost: x\r\nno colon here\r\n"
        b"Connection: close\r\nContent-Length: 2\r\n\r\n{}",
    )
    assert status == 400
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body)["error"]["code"] == "bad_request"


def test_a_malformed_content_length_gets_400_in_the_documented_shape(
    server: RunningServer,
) -> None:
    status, _, body = raw_http(
        server,
        b"POST /webhooks/rest/webhook HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Length: many\r\n\r\n",
    )
    assert status == 400
    assert json.loads(body)["error"]["code"] == "bad_request"


def test_other_pages_keep_sanic_pages(server: RunningServer) -> None:
    status, reply = http_json("GET", f"{server.base_url}/no-such-page")
    assert status == 404
    assert not (isinstance(reply, dict) and "error" in reply)
