"""Hypothesis strategies of hostile client input, shared by the parser and the server fuzz tests.

Values are built as Python objects and written as JSON text by :func:`to_json`, which also
writes what ``json.dumps`` cannot or will not: integers of thousands of digits, ``NaN``,
``1e999`` and nesting far beyond the server's limit (as :class:`RawJson` fragments).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from handoff.core.protocol import AGENT_FRAME_FIELDS, CONVERSATION_ID_PATTERN, USER_FRAME_TYPES
from handoff.core.safe_json import CLIENT_ID_PATTERN, MAX_JSON_DEPTH


@dataclass(frozen=True)
class RawJson:
    """A JSON fragment written as is (a number token, a constant, a deep nest)."""

    text: str


def to_json(value: Any, *, ascii_only: bool = True) -> str:
    """``value`` as JSON text. With ``ascii_only`` every character outside ASCII is escaped
    (lone surrogates included, so the text always encodes as UTF-8); without it they are
    written as they are, and the text may hold lone surrogate characters."""
    if isinstance(value, RawJson):
        return value.text
    if isinstance(value, dict):
        items = (
            f"{to_json(k, ascii_only=ascii_only)}: {to_json(v, ascii_only=ascii_only)}"
            for k, v in value.items()
        )
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(to_json(v, ascii_only=ascii_only) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


def nested(depth: int, kind: str) -> RawJson:
    """Arrays (``kind`` "[") or objects ("{") nested ``depth`` levels deep."""
    if kind == "[":
        return RawJson("[" * depth + "]" * depth)
    return RawJson('{"a": ' * depth + "1" + "}" * depth)


UNACCEPTABLE_CHARS = ["\x00", "\ud800", "\udbff", "\udc00", "\udfff", "\ud83d"]
"""NUL and lone surrogates (the last is half of an emoji's pair)."""

TRICKY_STRINGS = [
    "",
    " ",
    "\n\t ",
    "a\n",
    "٣",
    "²",
    "12",
    "x" * 64,
    "x" * 65,
    "x" * 128,
    "x" * 129,
    "x" * 256,
    "caf\u00e9",
    "\U0001f600",
    "<script>alert(1)</script>",
    "message",
    "utter_greet",
    "online",
]

unacceptable_texts = st.builds(
    lambda before, bad, after: before + bad + after,
    st.text(max_size=8),
    st.sampled_from(UNACCEPTABLE_CHARS),
    st.text(max_size=8),
)
any_characters = st.text(
    alphabet=st.characters(codec=None, categories=["L", "N", "P", "Z", "Cc", "Cs", "So"]),
    max_size=12,
)
long_texts = st.builds(lambda n, c: c * n, st.integers(1_900, 20_000), st.sampled_from("yé😀"))

hostile_texts = st.one_of(
    st.text(max_size=30),
    st.sampled_from(TRICKY_STRINGS),
    unacceptable_texts,
    any_characters,
)

hostile_numbers = st.one_of(
    st.integers(),
    st.floats(),  # NaN and infinities included: json.dumps writes them as NaN / Infinity
    st.sampled_from([0, -1, 1, 2**31 - 1, 2**31, 2**63 - 1, 2**63, -(2**63), 10**30]),
    st.builds(lambda n: RawJson("9" * n), st.integers(1, 6_000)),
    st.builds(lambda n: RawJson("-" + "4" * n), st.integers(15, 400)),
    st.sampled_from(
        [RawJson(t) for t in ("NaN", "Infinity", "-Infinity", "1e999", "-1e400", "1e-999", "1E5")]
    ),
)

deep_values = st.builds(nested, st.integers(MAX_JSON_DEPTH - 3, 3_000), st.sampled_from(["[", "{"]))

hostile_scalars = st.one_of(st.none(), st.booleans(), hostile_numbers, hostile_texts, deep_values)

hostile_values = st.recursive(
    hostile_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(hostile_texts, children, max_size=4)
    ),
    max_leaves=8,
)
"""Any JSON value a hostile client might put in a field."""

client_ids = st.from_regex(CLIENT_ID_PATTERN, fullmatch=True)
conversation_ids = st.from_regex(CONVERSATION_ID_PATTERN, fullmatch=True)
clean_texts = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=20
).filter(lambda text: text.strip() != "")
"""Text every parser accepts: valid UTF-8, no NUL, not blank."""

VALID_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "id": client_ids,
    "conversation_id": conversation_ids,
    "text": clean_texts,
    "typing": st.booleans(),
    "helpful": st.just(False),
    "in_reply_to": client_ids,
    "response_name": st.from_regex(r"utter_[a-z_]{1,20}", fullmatch=True),
    "message_id": st.integers(1, 2**31 - 1),
    "approval_id": st.integers(1, 2**31 - 1),
    "intent": st.from_regex(r"[a-z][a-z0-9_]{1,20}", fullmatch=True),
    "to": st.one_of(st.none(), st.from_regex(r"[a-z0-9][a-z0-9_.-]{1,20}", fullmatch=True)),
    "status": st.sampled_from(["online", "away"]),
    "sender": conversation_ids,
    "message": clean_texts,
    "metadata": st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5)),
}
"""A valid value for each field of the protocol."""

USER_FRAME_FIELDS = {
    "message": ("id", "text"),
    "typing": ("typing",),
    "request_human": ("id",),
    "feedback": ("id", "in_reply_to", "helpful"),
}


def valid_frames(fields_by_type: dict[str, tuple[str, ...]]) -> st.SearchStrategy[dict[str, Any]]:
    """Frames every parser accepts, one type of ``fields_by_type`` at a time."""
    return st.sampled_from(sorted(fields_by_type)).flatmap(
        lambda kind: st.fixed_dictionaries(
            {"type": st.just(kind), **{name: VALID_FIELDS[name] for name in fields_by_type[kind]}},
            optional={"response_name": VALID_FIELDS["response_name"]} if kind == "reply" else {},
        )
    )


@st.composite
def mutated(draw: st.DrawFn, frames: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """A valid frame with at most one field replaced, added or removed: each field's checks
    are reached, and a good share of frames stays valid."""
    frame = dict(draw(frames))
    action = draw(st.sampled_from(["keep", "replace", "replace", "add", "drop"]))
    if action == "replace":
        frame[draw(st.sampled_from(sorted(frame)))] = draw(st.one_of(hostile_values, long_texts))
    elif action == "add":
        frame[draw(hostile_texts)] = draw(hostile_values)
    elif action == "drop":
        del frame[draw(st.sampled_from(sorted(frame)))]
    return frame


def scrambled(fields: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with any of ``fields``, each valid or hostile: several faults at once."""
    return st.fixed_dictionaries(
        {},
        optional={name: st.one_of(VALID_FIELDS[name], hostile_values) for name in fields},
    )


user_frames = st.one_of(
    mutated(valid_frames(USER_FRAME_FIELDS)),
    scrambled(["id", "text", "typing", "helpful", "in_reply_to"]).flatmap(
        lambda frame: st.builds(
            lambda kind: {"type": kind, **frame},
            st.one_of(st.sampled_from(USER_FRAME_TYPES), hostile_values),
        )
    ),
)
"""User frames of the right shape with hostile field values."""

agent_frames = st.one_of(
    mutated(valid_frames(AGENT_FRAME_FIELDS)),
    scrambled(sorted({name for names in AGENT_FRAME_FIELDS.values() for name in names})).flatmap(
        lambda frame: st.builds(
            lambda kind: {"type": kind, **frame},
            st.one_of(st.sampled_from(sorted(AGENT_FRAME_FIELDS)), hostile_values),
        )
    ),
)
"""Agent frames of the right shape with hostile field values."""

_VALID_REST_BODIES = st.fixed_dictionaries(
    {"sender": VALID_FIELDS["sender"], "message": VALID_FIELDS["message"]},
    optional={"metadata": VALID_FIELDS["metadata"], "message_id": client_ids},
)

rest_bodies = st.one_of(
    mutated(_VALID_REST_BODIES),
    st.fixed_dictionaries(
        {},
        optional={
            "sender": st.one_of(VALID_FIELDS["sender"], hostile_values),
            "message": st.one_of(VALID_FIELDS["message"], hostile_values, long_texts),
            "metadata": st.one_of(VALID_FIELDS["metadata"], hostile_values),
            "message_id": st.one_of(client_ids, hostile_values),
        },
    ),
)
"""REST channel bodies with hostile field values."""

json_documents = st.one_of(
    st.builds(to_json, hostile_values),
    st.builds(to_json, user_frames),
    st.builds(to_json, agent_frames),
    st.builds(lambda value: to_json(value, ascii_only=False), hostile_values),
)
"""JSON text, sometimes invalid (lone surrogates written raw, unterminated nests)."""

wire_inputs = st.one_of(
    json_documents,
    st.builds(lambda text: text.encode("utf-8", "surrogatepass"), json_documents),
    st.binary(max_size=200),
    st.text(max_size=200),
)
"""Anything a websocket frame or HTTP body can carry: text or bytes, JSON or not."""
