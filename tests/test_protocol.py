"""The end-user wire protocol's validation, table-driven."""

from __future__ import annotations

import json

import pytest

from handoff.protocol import (
    MAX_FRAME_BYTES,
    ProtocolError,
    UserFrame,
    error_frame,
    parse_cursor,
    parse_rest_body,
    parse_user_frame,
    validate_conversation_id,
)

LIMIT = 100


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"type": "message", "id": "m1", "text": "hi"}', UserFrame("message", "m1", "hi")),
        (
            '{"type": "message", "id": "m-1.a:b_c", "text": "  padded  "}',
            UserFrame("message", "m-1.a:b_c", "padded"),
        ),
        (
            b'{"type": "message", "id": "bytes", "text": "caf\\u00e9"}',
            UserFrame("message", "bytes", "café"),
        ),
        (
            json.dumps({"type": "message", "id": "x" * 64, "text": "t" * LIMIT}),
            UserFrame("message", "x" * 64, "t" * LIMIT),
        ),
        ('{"type": "typing", "typing": true}', UserFrame("typing", typing=True)),
        ('{"type": "request_human", "id": "r1"}', UserFrame("request_human", "r1")),
    ],
)
def test_valid_user_frames(raw: str | bytes, expected: UserFrame) -> None:
    assert parse_user_frame(raw, max_text_chars=LIMIT) == expected


@pytest.mark.parametrize(
    ("raw", "code", "client_id"),
    [
        ("", "invalid_json", None),
        ("{", "invalid_json", None),
        (b"\xff\xfe", "invalid_json", None),
        ("null", "invalid_json", None),
        ('"message"', "invalid_json", None),
        ("{}", "unknown_type", None),
        ('{"type": "typing", "typing": "yes"}', "invalid_field", None),
        ('{"type": "request_human"}', "invalid_field", None),
        ('{"type": "agent_reply", "id": "m", "text": "x"}', "unknown_type", None),
        ('{"type": "message", "text": "x"}', "invalid_field", None),
        ('{"type": "message", "id": "", "text": "x"}', "invalid_field", None),
        ('{"type": "message", "id": 7, "text": "x"}', "invalid_field", None),
        (json.dumps({"type": "message", "id": "x" * 65, "text": "x"}), "invalid_field", None),
        ('{"type": "message", "id": "m", "text": ["x"]}', "invalid_field", "m"),
        ('{"type": "message", "id": "m"}', "invalid_field", "m"),
        ('{"type": "message", "id": "m", "text": "\\n\\t "}', "invalid_field", "m"),
        (json.dumps({"type": "message", "id": "m", "text": "t" * (LIMIT + 1)}), "too_large", "m"),
        ("x" * (MAX_FRAME_BYTES + 1), "too_large", None),
    ],
)
def test_invalid_user_frames_name_the_problem(
    raw: str | bytes, code: str, client_id: str | None
) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_user_frame(raw, max_text_chars=LIMIT)
    assert caught.value.code == code
    assert caught.value.client_id == client_id
    frame = error_frame(caught.value)
    assert frame["type"] == "error"
    assert frame["code"] == code
    assert frame["message"]
    assert frame.get("id") == client_id


def test_rest_body_round_trip() -> None:
    body = json.dumps({"sender": "u1", "message": " hello ", "metadata": {"a": 1}}).encode()
    assert parse_rest_body(body, max_text_chars=LIMIT) == ("u1", "hello", {"a": 1})
    assert parse_rest_body(b'{"sender": "u1", "message": "x"}', max_text_chars=LIMIT) == (
        "u1",
        "x",
        None,
    )


@pytest.mark.parametrize(
    "body",
    [
        b'{"message": "x"}',
        b'{"sender": "  ", "message": "x"}',
        json.dumps({"sender": "s" * 256, "message": "x"}).encode(),
        b'{"sender": "u", "message": 3}',
        b'{"sender": "u", "message": "x", "metadata": "m"}',
    ],
)
def test_invalid_rest_bodies(body: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_rest_body(body, max_text_chars=LIMIT)
    assert caught.value.code == "invalid_field"


@pytest.mark.parametrize("value", ["abc", "user@example.com", "a" * 128, "A-b_c.d:e"])
def test_valid_conversation_ids(value: str) -> None:
    assert validate_conversation_id(value) == value


@pytest.mark.parametrize("value", ["", "a b", "a" * 129, "<script>", "a/b"])
def test_invalid_conversation_ids(value: str) -> None:
    with pytest.raises(ProtocolError):
        validate_conversation_id(value)


@pytest.mark.parametrize(("raw", "expected"), [(None, None), ("", None), ("0", 0), ("42", 42)])
def test_cursor(raw: str | None, expected: int | None) -> None:
    assert parse_cursor(raw) == expected


@pytest.mark.parametrize("raw", ["-1", "abc", "1.5", "9" * 19])
def test_invalid_cursor(raw: str) -> None:
    with pytest.raises(ProtocolError, match="last_event_id"):
        parse_cursor(raw)
