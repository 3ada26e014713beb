"""The wire protocol's validation: table-driven cases (those reported in issue #12 among them)
and properties over generated hostile input."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from handoff.core.protocol import (
    AGENT_FRAME_FIELDS,
    MAX_MESSAGE_ID,
    MAX_NAME_CHARS,
    MAX_RESPONSE_NAME_CHARS,
    MAX_SENDER_CHARS,
    USER_FRAME_TYPES,
    AgentFrame,
    RestMessage,
    UserFrame,
    error_frame,
    parse_agent_frame,
    parse_cursor,
    parse_rest_body,
    parse_user_frame,
    validate_conversation_id,
)
from handoff.core.safe_json import (
    CLIENT_ID_PATTERN,
    MAX_FRAME_BYTES,
    MAX_JSON_DEPTH,
    MAX_JSON_INTEGER,
    ProtocolError,
    decode_json_object,
    peek_client_id,
    readable_client_id,
)
from tests.hostile_inputs import (
    agent_frames,
    client_ids,
    conversation_ids,
    rest_bodies,
    to_json,
    user_frames,
    wire_inputs,
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
        ('{"type": "agent_reply", "id": "m", "text": "x"}', "unknown_type", "m"),
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
    body = json.dumps(
        {"sender": "u1", "message": " hello ", "metadata": {"a": 1}, "message_id": "r-1"}
    ).encode()
    assert parse_rest_body(body, max_text_chars=LIMIT) == RestMessage(
        "u1", "hello", "r-1", {"a": 1}
    )
    assert parse_rest_body(
        b'{"sender": "u1", "message": "x"}', max_text_chars=LIMIT
    ) == RestMessage("u1", "x")


@pytest.mark.parametrize(
    "body",
    [
        b'{"message": "x"}',
        b'{"sender": "  ", "message": "x"}',
        json.dumps({"sender": "s" * 256, "message": "x"}).encode(),
        b'{"sender": "u", "message": 3}',
        b'{"sender": "u", "message": "x", "metadata": "m"}',
        b'{"sender": "u", "message": "x", "message_id": "has space"}',
        b'{"sender": "u", "message": "x", "message_id": 7}',
    ],
)
def test_invalid_rest_bodies(body: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_rest_body(body, max_text_chars=LIMIT)
    assert caught.value.code == "invalid_field"


@pytest.mark.parametrize("value", ["abc", "user@example.com", "a" * 128, "A-b_c.d:e"])
def test_valid_conversation_ids(value: str) -> None:
    assert validate_conversation_id(value) == value


@pytest.mark.parametrize("value", ["", "a b", "a" * 129, "<script>", "a/b", "a\n", "\ud800", 7])
def test_invalid_conversation_ids(value: object) -> None:
    with pytest.raises(ProtocolError):
        validate_conversation_id(value)


@pytest.mark.parametrize(("raw", "expected"), [(None, None), ("", None), ("0", 0), ("42", 42)])
def test_cursor(raw: str | None, expected: int | None) -> None:
    assert parse_cursor(raw) == expected


@pytest.mark.parametrize("raw", ["-1", "abc", "1.5", "9" * 19, "٣", "²", "1\n", " 1", "+1"])
def test_invalid_cursor(raw: str) -> None:
    with pytest.raises(ProtocolError, match="last_event_id"):
        parse_cursor(raw)


# Reported by an independent client (issue #12): each input class and what it gets now. -----

DEEP = "[" * 1000 + "]" * 1000
HUGE = "9" * 4301


@pytest.mark.parametrize(
    ("raw", "code", "client_id"),
    [
        (DEEP, "invalid_json", None),
        ('{"type": "message", "id": "m", "text": "x", "n": ' + DEEP + "}", "invalid_json", None),
        ('{"type": "message", "id": "m", "text": "x", "n": ' + HUGE + "}", "invalid_field", "m"),
        ('{"type": "message", "id": "m", "text": "x", "n": NaN}', "invalid_field", "m"),
        ('{"type": "message", "id": "m", "text": "x", "n": -Infinity}', "invalid_field", "m"),
        ('{"type": "message", "id": "m", "text": "x", "n": 1e999}', "invalid_field", "m"),
        ('{"type": "message", "id": "m", "text": "\\ud800"}', "invalid_field", "m"),
        ('{"type": "message", "id": "m", "text": "a\\u0000b"}', "invalid_field", "m"),
        ('{"type": "message", "id": "m", "text": "x", "\\udfff": 1}', "invalid_field", "m"),
        ('{"type": "message", "id": "m", "text": "\ud800"}', "invalid_field", "m"),  # raw
        (b'{"type": "message", "id": "m", "text": "\xed\xa0\x80"}', "invalid_json", None),
        ('{"type": ["message"], "id": "m", "text": "x"}', "unknown_type", "m"),
        ('{"type": {"a": 1}, "id": "m", "text": "x"}', "unknown_type", "m"),
        ('{"type": "message", "id": "m\\n", "text": "x"}', "invalid_field", None),
        (
            '{"type": "feedback", "id": "f", "in_reply_to": "m\\n", "helpful": false}',
            "invalid_field",
            "f",
        ),
    ],
)
def test_reported_user_inputs_get_documented_errors(
    raw: str | bytes, code: str, client_id: str | None
) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_user_frame(raw, max_text_chars=LIMIT)
    assert (caught.value.code, caught.value.client_id) == (code, client_id)
    assert_reportable(caught.value)


@pytest.mark.parametrize(
    ("frame", "code", "client_id"),
    [
        ('{"type": ["claim"], "id": "a", "conversation_id": "c"}', "unknown_type", "a"),
        ('{"type": {"t": "claim"}, "id": "a", "conversation_id": "c"}', "unknown_type", "a"),
        ('{"type": "claim", "id": "a", "conversation_id": "\\ud800"}', "invalid_field", "a"),
        ('{"type": "claim", "id": "a", "conversation_id": ""}', "invalid_field", "a"),
        ('{"type": "claim", "id": "a", "conversation_id": " "}', "invalid_field", "a"),
        (
            '{"type": "claim", "id": "a", "conversation_id": "' + "c" * 256 + '"}',
            "invalid_field",
            "a",
        ),
        ('{"type": "claim", "id": "a", "conversation_id": 7}', "invalid_field", "a"),
        (
            '{"type": "claim", "id": "a", "conversation_id": "c" ' + ', "x": ' + DEEP + "}",
            "invalid_json",
            None,
        ),
        (
            '{"type": "reply", "id": "a", "conversation_id": "c", "text": "\\ud800"}',
            "invalid_field",
            "a",
        ),
        (
            '{"type": "reply", "id": "a", "conversation_id": "c", "text": "\\u0000"}',
            "invalid_field",
            "a",
        ),
        (
            '{"type": "reply", "id": "a", "conversation_id": "c", "text": "x", "response_name": 3}',
            "invalid_field",
            "a",
        ),
        (
            '{"type": "reply", "id": "a", "conversation_id": "c", "text": "x", "response_name": "'
            + "r" * 129
            + '"}',
            "invalid_field",
            "a",
        ),
        (
            '{"type": "label", "id": "a", "message_id": ' + "4" * 400 + ', "intent": "x"}',
            "invalid_field",
            "a",
        ),
        (
            '{"type": "label", "id": "a", "message_id": 2147483648, "intent": "x"}',
            "invalid_field",
            "a",
        ),
        ('{"type": "label", "id": "a", "message_id": 0, "intent": "x"}', "invalid_field", "a"),
        ('{"type": "label", "id": "a", "message_id": true, "intent": "x"}', "invalid_field", "a"),
        ('{"type": "label", "id": "a", "message_id": 1.5, "intent": "x"}', "invalid_field", "a"),
        (
            '{"type": "label", "id": "a", "message_id": 1, "intent": "' + "i" * 65 + '"}',
            "invalid_field",
            "a",
        ),
        ('{"type": "label", "id": "a", "message_id": 1, "intent": ["x"]}', "invalid_field", "a"),
        ('{"type": "transfer", "id": "a", "conversation_id": "c", "to": ""}', "invalid_field", "a"),
        (
            '{"type": "transfer", "id": "a", "conversation_id": "c", "to": {"u": 1}}',
            "invalid_field",
            "a",
        ),
        (
            '{"type": "transfer", "id": "a", "conversation_id": "c", "to": "' + "u" * 65 + '"}',
            "invalid_field",
            "a",
        ),
        ('{"type": "presence", "status": ["online"]}', "invalid_field", None),
        ('{"type": "typing", "conversation_id": "c", "typing": 1}', "invalid_field", None),
        ('{"type": "claim", "id": "a"}', "invalid_field", "a"),
    ],
)
def test_hostile_agent_frames_get_documented_errors(
    frame: str, code: str, client_id: str | None
) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_agent_frame(frame, max_text_chars=LIMIT)
    assert (caught.value.code, caught.value.client_id) == (code, client_id)
    assert_reportable(caught.value)


def test_valid_agent_frames() -> None:
    assert parse_agent_frame(
        '{"type": "label", "id": "a", "message_id": 2147483647, "intent": " greet "}',
        max_text_chars=LIMIT,
    ) == AgentFrame("label", "a", message_id=MAX_MESSAGE_ID, intent="greet")
    assert parse_agent_frame(
        '{"type": "transfer", "id": "a", "conversation_id": "c@x", "to": null}',
        max_text_chars=LIMIT,
    ) == AgentFrame("transfer", "a", conversation_id="c@x", to=None)
    assert parse_agent_frame(
        '{"type": "typing", "conversation_id": "c", "typing": true}', max_text_chars=LIMIT
    ) == AgentFrame("typing", conversation_id="c", typing=True)


def test_decisions_on_held_answers() -> None:
    def parse(raw: str) -> AgentFrame:
        return parse_agent_frame(raw, max_text_chars=LIMIT)

    assert parse('{"type": "approve", "id": "a", "approval_id": 7}') == AgentFrame(
        "approve", "a", approval_id=7
    )
    assert parse('{"type": "correct", "id": "a", "approval_id": 7, "intent": "greet"}') == (
        AgentFrame("correct", "a", approval_id=7, intent="greet")
    )
    assert parse('{"type": "replace", "id": "a", "approval_id": 7, "text": " Hi "}') == (
        AgentFrame("replace", "a", approval_id=7, text="Hi")
    )
    assert parse(
        '{"type": "replace", "id": "a", "approval_id": 7, "text": "Hi", "intent": "greet"}'
    ) == AgentFrame("replace", "a", approval_id=7, text="Hi", intent="greet")
    for raw, code in [
        ('{"type": "approve", "id": "a", "approval_id": 0}', "invalid_field"),
        ('{"type": "approve", "id": "a", "approval_id": "7"}', "invalid_field"),
        ('{"type": "approve", "id": "a", "approval_id": true}', "invalid_field"),
        ('{"type": "correct", "id": "a", "approval_id": 7}', "invalid_field"),
        ('{"type": "replace", "id": "a", "approval_id": 7, "text": " "}', "invalid_field"),
    ]:
        with pytest.raises(ProtocolError) as refused:
            parse(raw)
        assert (refused.value.code, refused.value.client_id) == (code, "a")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (DEEP.encode(), "invalid_json"),
        (
            b'{"sender": "s", "message": "x", "metadata": {"n": ' + HUGE.encode() + b"}}",
            "invalid_field",
        ),
        (b'{"sender": "s", "message": "\\ud800"}', "invalid_field"),
        (b'{"sender": "\\ud800", "message": "x"}', "invalid_field"),
        (b'{"sender": "s\\u0000", "message": "x"}', "invalid_field"),
        (b'{"sender": "s", "message": "x", "message_id": ' + b"7" * 400 + b"}", "invalid_field"),
        (b'{"sender": "s", "message": "x", "metadata": {"a": NaN}}', "invalid_field"),
        (b"\xff" * 10, "invalid_json"),
        (b"\xef\xbb\xbf{}", "invalid_json"),  # a UTF-8 byte order mark
    ],
)
def test_reported_rest_bodies_get_documented_errors(body: bytes, code: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_rest_body(body, max_text_chars=LIMIT)
    assert caught.value.code == code
    assert_reportable(caught.value)


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH])
def test_nesting_up_to_the_limit_is_accepted(depth: int) -> None:
    metadata = '{"a": ' * (depth - 1) + "1" + "}" * (depth - 1)  # the body is one more level
    body = b'{"sender": "s", "message": "x", "metadata": ' + metadata.encode() + b"}"
    assert parse_rest_body(body, max_text_chars=LIMIT).metadata is not None
    with pytest.raises(ProtocolError, match="nested more than"):
        parse_rest_body(
            body[:-1] + b', "b": [' + b"[" * depth + b"]" * depth + b"]}", max_text_chars=LIMIT
        )


def test_nesting_inside_strings_does_not_count() -> None:
    text = "[{" * 100 + '\\"' + "]}" * 10
    frame = parse_user_frame(
        json.dumps({"type": "message", "id": "m", "text": text}), max_text_chars=10_000
    )
    assert frame.text == text


@pytest.mark.parametrize(
    ("value", "accepted"),
    [(2**63 - 1, True), (-(2**63 - 1), True), (2**63, False), (-(2**63), False)],
)
def test_integers_are_bounded_anywhere(value: int, accepted: bool) -> None:
    body = json.dumps({"sender": "s", "message": "x", "metadata": {"n": value}}).encode()
    if accepted:
        assert parse_rest_body(body, max_text_chars=LIMIT).metadata == {"n": value}
    else:
        with pytest.raises(ProtocolError, match="integers must be within"):
            parse_rest_body(body, max_text_chars=LIMIT)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"type": "message", "id": "m7", "text": "\\ud800"}', "m7"),
        ('{"type": "typing", "typing": true, "id": "t1"}', "t1"),
        ('{"type": "message", "id": "bad id"}', None),
        (DEEP, None),
        (b"\xff", None),
        ("x" * (MAX_FRAME_BYTES + 1), None),
    ],
)
def test_peek_client_id_reads_the_id_when_it_can(raw: str | bytes, expected: str | None) -> None:
    assert peek_client_id(raw) == expected


# Properties over generated input ------------------------------------------------------------

DOCUMENTED_CODES = {"invalid_json", "unknown_type", "invalid_field", "too_large"}


def is_clean_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in value


def assert_reportable(error: ProtocolError) -> None:
    """The error has a documented code, a helpful message and an id only when valid, and its
    frame can be sent (JSON, UTF-8)."""
    assert error.code in DOCUMENTED_CODES
    assert len(error.message) > 10 and is_clean_text(error.message)
    assert error.client_id is None or CLIENT_ID_PATTERN.fullmatch(error.client_id)
    json.dumps(error_frame(error), ensure_ascii=False).encode("utf-8")


def assert_decoded_values_are_safe(value: Any, depth: int = 1) -> None:
    assert depth <= MAX_JSON_DEPTH
    if isinstance(value, str):
        assert is_clean_text(value)
    elif isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, int):
        assert abs(value) <= MAX_JSON_INTEGER
    elif isinstance(value, float):
        assert math.isfinite(value)
    elif isinstance(value, list):
        for item in value:
            assert_decoded_values_are_safe(item, depth + 1)
    else:
        assert isinstance(value, dict)
        for key, item in value.items():
            assert is_clean_text(key)
            assert_decoded_values_are_safe(item, depth + 1)


def none(_literal: str) -> None:
    return None


def declared_id(raw: str | bytes) -> str | None:
    """The frame's ``id`` as a lenient decoder sees it (numbers read as None, never refused)."""
    try:
        payload = json.loads(raw, parse_int=none, parse_float=none, parse_constant=none)
    except (ValueError, RecursionError):
        return None
    return readable_client_id(payload) if isinstance(payload, dict) else None


def check_error_id(error: ProtocolError, raw: str | bytes) -> None:
    """An error names the frame's id exactly when the frame could be decoded and had one."""
    assert_reportable(error)
    if error.client_id is not None:
        assert error.client_id == declared_id(raw)
    elif error.code not in ("invalid_json", "too_large"):
        assert declared_id(raw) is None


def check_user_frame(frame: UserFrame) -> None:
    assert frame.kind in USER_FRAME_TYPES
    if frame.kind == "typing":
        assert frame.client_id is None
        return
    assert frame.client_id is not None and CLIENT_ID_PATTERN.fullmatch(frame.client_id)
    if frame.kind == "message":
        assert frame.text == frame.text.strip() and 0 < len(frame.text) <= LIMIT
        assert is_clean_text(frame.text)
    if frame.kind == "feedback":
        assert frame.in_reply_to is not None and CLIENT_ID_PATTERN.fullmatch(frame.in_reply_to)


def check_agent_frame(frame: AgentFrame) -> None:
    fields = AGENT_FRAME_FIELDS[frame.kind]
    assert (frame.client_id is not None) == ("id" in fields)
    if frame.client_id is not None:
        assert CLIENT_ID_PATTERN.fullmatch(frame.client_id)
    if "conversation_id" in fields:  # a websocket user's id or a REST sender
        assert 0 < len(frame.conversation_id.strip()) <= len(frame.conversation_id) <= 255
        assert is_clean_text(frame.conversation_id)
    if frame.kind == "reply":
        assert 0 < len(frame.text) <= LIMIT and is_clean_text(frame.text)
        assert frame.response_name is None or (
            0 < len(frame.response_name) <= MAX_RESPONSE_NAME_CHARS
            and is_clean_text(frame.response_name)
        )
    if frame.kind == "label":
        assert 1 <= frame.message_id <= MAX_MESSAGE_ID and type(frame.message_id) is int
        assert 0 < len(frame.intent) <= MAX_NAME_CHARS and is_clean_text(frame.intent)
    if frame.kind == "transfer" and frame.to is not None:
        assert 0 < len(frame.to) <= MAX_NAME_CHARS and is_clean_text(frame.to)
    if frame.kind == "presence":
        assert frame.status in ("online", "away")


def check_rest_message(message: RestMessage) -> None:
    assert 0 < len(message.sender) <= MAX_SENDER_CHARS and is_clean_text(message.sender)
    assert 0 < len(message.text) <= LIMIT and is_clean_text(message.text)
    assert message.client_id is None or CLIENT_ID_PATTERN.fullmatch(message.client_id)
    assert message.metadata is None or isinstance(message.metadata, dict)
    assert_decoded_values_are_safe(message.metadata)


def parse_user_or_error(raw: str | bytes) -> None:
    try:
        frame = parse_user_frame(raw, max_text_chars=LIMIT)
    except ProtocolError as error:
        event(f"user: {error.code}")
        check_error_id(error, raw)
    else:
        event(f"user: accepted {frame.kind}")
        check_user_frame(frame)


def parse_agent_or_error(raw: str | bytes) -> None:
    try:
        frame = parse_agent_frame(raw, max_text_chars=LIMIT)
    except ProtocolError as error:
        event(f"agent: {error.code}")
        check_error_id(error, raw)
    else:
        event(f"agent: accepted {frame.kind}")
        check_agent_frame(frame)


def parse_rest_or_error(raw: bytes) -> None:
    try:
        message = parse_rest_body(raw, max_text_chars=LIMIT)
    except ProtocolError as error:
        event(f"rest: {error.code}")
        assert_reportable(error)
    else:
        event("rest: accepted")
        check_rest_message(message)


@given(wire_inputs)
def test_any_input_gives_a_valid_frame_or_a_documented_error(raw: str | bytes) -> None:
    parse_user_or_error(raw)
    parse_agent_or_error(raw)
    parse_rest_or_error(raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw)
    try:
        payload = decode_json_object(raw)
    except ProtocolError as error:
        assert_reportable(error)
    else:
        assert_decoded_values_are_safe(payload)
    assert peek_client_id(raw) in (None, declared_id(raw))


@given(user_frames, st.booleans())
def test_hostile_user_frames(frame: dict[str, Any], ascii_only: bool) -> None:
    parse_user_or_error(to_json(frame, ascii_only=ascii_only))


@given(agent_frames, st.booleans())
def test_hostile_agent_frames(frame: dict[str, Any], ascii_only: bool) -> None:
    parse_agent_or_error(to_json(frame, ascii_only=ascii_only))


@given(rest_bodies)
def test_hostile_rest_bodies(body: dict[str, Any]) -> None:
    parse_rest_or_error(to_json(body).encode())


texts_up_to_the_limit = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=LIMIT
).filter(lambda text: text.strip() != "")


@given(client_ids, texts_up_to_the_limit, st.booleans())
def test_every_valid_message_is_accepted_as_sent(
    client_id: str, text: str, ascii_only: bool
) -> None:
    raw = to_json({"type": "message", "id": client_id, "text": text}, ascii_only=ascii_only)
    assert parse_user_frame(raw, max_text_chars=LIMIT) == UserFrame(
        "message", client_id, text.strip()
    )


@given(client_ids, conversation_ids, texts_up_to_the_limit)
def test_every_valid_reply_is_accepted_as_sent(
    client_id: str, conversation_id: str, text: str
) -> None:
    raw = to_json(
        {"type": "reply", "id": client_id, "conversation_id": conversation_id, "text": text}
    )
    assert parse_agent_frame(raw, max_text_chars=LIMIT) == AgentFrame(
        "reply", client_id, conversation_id, text.strip()
    )
