"""The one error root: every error class of the project is a ``HandoffError`` with a stable
snake_case code, drawn in the tree of :mod:`handoff.core.errors`, and reaches clients through
one HTTP mapping and one websocket frame mapping."""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
import warnings
from typing import cast

import pytest
from sanic import Request, Sanic
from sanic.compat import Header
from sanic.models.protocol_types import TransportProtocol

import handoff
from handoff.assistant.interface import AssistantNotReadyError
from handoff.conversations.service import ActionError
from handoff.core import errors
from handoff.core.errors import HandoffError, InternalError
from handoff.core.protocol import error_frame
from handoff.core.routing import (
    AgentClaimed,
    AgentReplied,
    Closed,
    Command,
    Conversation,
    HandedBack,
    HandoffReason,
    HandoffRequested,
    IllegalTransition,
    State,
    Transferred,
    UserSaid,
    transition,
)
from handoff.core.safe_json import ProtocolError
from handoff.realtime.locks import LockTimeout
from handoff.storage.learning_store import NotFoundError
from handoff.web.auth import AuthError, ServerBusy, SignInThrottled
from handoff.web.http_errors import JsonApiErrorHandler, error_response, http_error

SNAKE_CASE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
CAMEL_CASE = re.compile(r"\b[A-Z][a-z0-9]+[A-Z][A-Za-z0-9]*\b")
"""An identifier like ``HandoffRequested`` or ``NotAssignedToAgent``: a class name."""
TREE_ENTRY = re.compile(r"[├└]── (\w+)")
"""A class in the docstring tree; its column gives its depth (5 characters a level)."""


def every_subclass() -> set[type[HandoffError]]:
    """All subclasses of HandoffError, after importing every module of the project."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Rasa's and TensorFlow's imports warn
        for module in pkgutil.walk_packages(handoff.__path__, "handoff."):
            importlib.import_module(module.name)
    found: set[type[HandoffError]] = set()
    todo = [HandoffError]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in found and sub.__module__.startswith("handoff."):
                found.add(sub)
                todo.append(sub)
    return found


def drawn_tree() -> dict[str, str]:
    """Each class of the docstring tree of :mod:`handoff.core.errors` -> its drawn parent."""
    parents: dict[str, str] = {}
    last_at_depth = {0: "HandoffError"}
    for line in (errors.__doc__ or "").splitlines():
        match = TREE_ENTRY.search(line)
        if match:
            depth = (match.start() - 5) // 5 + 1
            parents[match.group(1)] = last_at_depth[depth - 1]
            last_at_depth[depth] = match.group(1)
    return parents


def test_every_error_class_has_a_snake_case_code_and_is_drawn_under_its_parent() -> None:
    subclasses = every_subclass()
    assert len(subclasses) >= 18, "the modules of the project define at least these"
    for cls in subclasses:
        assert SNAKE_CASE.fullmatch(cls.code), (cls, cls.code)
    assert drawn_tree() == {cls.__name__: cls.__bases__[0].__name__ for cls in subclasses}


def test_a_code_is_the_class_default_unless_the_raiser_picks_one() -> None:
    assert LockTimeout("busy").code == "conversation_busy"
    picked = HandoffError("no agent 'x'", code="unknown_agent")
    assert (picked.code, picked.message) == ("unknown_agent", "no agent 'x'")
    assert HandoffError.code == "handoff_error", "an instance's code does not leak to the class"
    assert ProtocolError("too_large", "m").code == "too_large"
    assert isinstance(ProtocolError("too_large", "m"), ValueError), "callers catch ValueError"


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (ProtocolError("invalid_json", "not valid JSON"), 400, "invalid_json"),
        (ActionError("unknown_agent", "no agent 'x'"), 404, "unknown_agent"),
        (AuthError("wrong username or password"), 401, "bad_credentials"),
        (SignInThrottled(2.5), 429, "throttled"),
        (ServerBusy(), 503, "busy"),
        (AssistantNotReadyError("still loading"), 503, "not_ready"),
        (NotFoundError("no candidate 7"), 404, "not_found"),
        (InternalError("the server failed"), 500, "internal"),
    ],
)
def test_http_error_gives_the_status_and_the_documented_body(
    error: HandoffError, status: int, code: str
) -> None:
    assert http_error(error) == (status, {"error": {"code": code, "message": str(error)}})


def test_an_error_with_retry_after_says_when_to_retry() -> None:
    reply = error_response(SignInThrottled(2.5))
    assert reply.status == 429
    assert reply.headers["Retry-After"] == "3"
    assert "Retry-After" not in error_response(AuthError("no")).headers


def test_an_error_that_escapes_a_json_handler_is_answered_by_the_same_mapping() -> None:
    app = Sanic.get_app("errors-test", force_create=True)
    no_transport = cast(TransportProtocol, None)  # the handler never writes to it
    request = Request(b"/api/review", Header(), "1.1", "POST", no_transport, app)
    reply = JsonApiErrorHandler().default(request, NotFoundError("no candidate 7"))
    assert reply.status == 404
    assert json.loads(reply.body or b"") == {
        "error": {"code": "not_found", "message": "no candidate 7"}
    }


def test_error_frame_has_the_documented_shape() -> None:
    refused = ActionError("not_assigned", "this conversation is not assigned to you")
    assert error_frame(refused, "c7") == {
        "type": "error",
        "code": "not_assigned",
        "message": "this conversation is not assigned to you",
        "id": "c7",
    }
    assert "id" not in error_frame(refused)
    invalid = ProtocolError("invalid_field", "field 'text' must not be empty", "m1")
    assert error_frame(invalid)["id"] == "m1", "a protocol error carries the id it could read"
    assert error_frame(invalid, "m2")["id"] == "m2"


STATES = [
    Conversation("c1"),
    Conversation("c1", State.QUEUED),
    Conversation("c1", State.ASSIGNED, agent_id=1),
    Conversation("c1", State.CLOSED),
]
COMMANDS: list[Command] = [
    UserSaid("hi"),
    HandoffRequested(HandoffReason.USER_ASKED),
    AgentClaimed(1),
    AgentClaimed(2),
    AgentReplied(2, "x"),
    Transferred(1, 1),
    Transferred(2, None),
    HandedBack(2),
    Closed(2),
]


def test_an_illegal_transition_says_what_happened_without_class_names() -> None:
    messages = set()
    for conversation in STATES:
        for command in COMMANDS:
            try:
                transition(conversation, command)
            except IllegalTransition as error:
                messages.add(error.message)
    assert len(messages) >= 5, messages
    for message in messages:
        assert not CAMEL_CASE.search(message), message
        assert message.startswith(("this conversation", "another agent")), message
