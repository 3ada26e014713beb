"""The JSON APIs' error shape for what sanic raises, without a server: a real fault is 500
``internal`` with a logged traceback (no input of a client should reach it, so the
integration tests cannot trigger it)."""

from __future__ import annotations

import json
import logging
from typing import cast

import pytest
from sanic import Request, Sanic
from sanic.compat import Header
from sanic.exceptions import NotFound
from sanic.models.protocol_types import TransportProtocol

from handoff.web.http_errors import JsonApiErrorHandler


def make_request(path: str, method: str = "GET") -> Request:
    app = Sanic.get_app("http-errors-test", force_create=True)
    no_transport = cast(TransportProtocol, None)  # the handler never writes to it
    return Request(path.encode(), Header(), "1.1", method, no_transport, app)


def test_a_fault_is_500_internal_and_logged_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError as error:
        fault = error
    with caplog.at_level(logging.ERROR, logger="handoff.web.http_errors"):
        reply = JsonApiErrorHandler().default(make_request("/api/review"), fault)
    assert reply.status == 500
    assert json.loads(reply.body or b"")["error"]["code"] == "internal"
    assert "boom" not in (reply.body or b"").decode(), "no internals in the answer"
    assert caplog.records and caplog.records[0].exc_info is not None


def test_an_unreadable_request_head_is_the_clients_fault() -> None:
    reply = JsonApiErrorHandler().default(
        make_request("/webhooks/rest/webhook", "NONE"), ValueError()
    )
    assert reply.status == 400
    assert json.loads(reply.body or b"")["error"]["code"] == "bad_request"


def test_sanic_errors_get_their_status_and_code() -> None:
    reply = JsonApiErrorHandler().default(make_request("/api/nothing"), NotFound("x"))
    assert reply.status == 404
    assert json.loads(reply.body or b"")["error"]["code"] == "not_found"
