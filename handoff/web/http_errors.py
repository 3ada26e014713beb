"""Errors sanic raises on the JSON APIs, answered in the documented shape.

On ``/api/*`` and ``/webhooks/*`` every error that reaches sanic (an over-size body, an unknown
route or method, a request sanic could not read, an exception a handler did not catch) is
answered ``{"error": {"code", "message"}}`` with the matching status, like the errors our
handlers return themselves. Other paths (the chat page, the console) keep sanic's own pages.

Our own errors (:class:`~handoff.core.errors.HandoffError`) get their status and body here
too, in :func:`http_error`: handlers answer with :func:`error_response`, and one that escapes
a handler is answered the same way.
"""

from __future__ import annotations

import logging
from typing import Any

from sanic import Request, response
from sanic.exceptions import SanicException
from sanic.handlers import ErrorHandler
from sanic.response import HTTPResponse

from handoff.core.errors import HandoffError
from handoff.web.sign_in_throttle import retry_after_header

__all__ = ["JsonApiErrorHandler", "error_response", "http_error", "json_error"]

logger = logging.getLogger(__name__)

JSON_API_PREFIXES = ("/api/", "/webhooks/")

ERROR_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "too_large",
    417: "expectation_failed",
    500: "internal",
    503: "unavailable",
}
"""The ``code`` for each status sanic raises; any other status gets ``http_error``."""

STATUS_BY_CODE = {
    "unauthenticated": 401,
    "bad_credentials": 401,
    "forbidden": 403,
    "origin_not_allowed": 403,
    "unknown_agent": 404,
    "not_found": 404,
    "not_reviewable": 409,
    "not_pending": 409,
    "concurrent_update": 409,
    "throttled": 429,
    "internal": 500,
    "busy": 503,
    "not_ready": 503,
    "conversation_busy": 503,
}
"""The HTTP status of each :class:`HandoffError` code; any other code is the client's fault
(400). Codes are the stable part: the status follows the code, whatever class carries it."""

UNREAD_REQUEST_METHOD = "NONE"
"""The method of the placeholder request sanic makes when it cannot parse a request's head:
whatever failed then is the client's fault."""


class JsonApiErrorHandler(ErrorHandler):
    """Give the JSON APIs JSON errors; pass everything else to sanic's default pages."""

    def default(self, request: Request, exception: Exception) -> HTTPResponse:
        if not request.path.startswith(JSON_API_PREFIXES):
            return super().default(request, exception)  # type: ignore[no-any-return]
        if isinstance(exception, HandoffError):
            reply = error_response(exception)
            if reply.status >= 500:
                logger.error("%s %s failed", request.method, request.path, exc_info=exception)
            return reply
        status = exception.status_code if isinstance(exception, SanicException) else 500
        if status == 500 and request.method == UNREAD_REQUEST_METHOD:
            status = 400  # the request head could not be read (e.g. Content-Length: many)
        code = ERROR_CODES.get(status, "http_error")
        if status >= 500:
            logger.error("%s %s failed", request.method, request.path, exc_info=exception)
        reply = response.json(
            {"error": {"code": code, "message": _message(request, exception, status)}},
            status=status,
        )
        headers: dict[str, Any] = getattr(exception, "headers", None) or {}
        reply.headers.update(headers)
        return reply


def http_error(error: HandoffError) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON body that report ``error``: the one place our errors become
    HTTP answers. The body is ``{"error": {"code", "message"}}``."""
    status = STATUS_BY_CODE.get(error.code, 400)
    return status, {"error": {"code": error.code, "message": error.message}}


def error_response(error: HandoffError) -> HTTPResponse:
    """:func:`http_error` as a response, with ``Retry-After`` when ``error`` has a
    ``retry_after`` (seconds)."""
    status, body = http_error(error)
    reply = response.json(body, status=status)
    retry_after: float | None = getattr(error, "retry_after", None)
    if retry_after is not None:
        reply.headers["Retry-After"] = retry_after_header(retry_after)
    return reply


def json_error(code: str, message: str) -> HTTPResponse:
    """The error answer for ``code``, as :func:`error_response` gives it: the status follows
    the code (see :data:`STATUS_BY_CODE`)."""
    return error_response(HandoffError(message, code=code))


def _message(request: Request, exception: Exception, status: int) -> str:
    if status == 413:
        limit = request.app.config.REQUEST_MAX_SIZE
        return f"the request is over the limit of {limit} bytes; send a smaller body"
    if status == 404:
        return f"no such address: {request.path}; see docs/protocol.md for the API"
    if status == 405:
        allowed = getattr(exception, "headers", {}).get("Allow", "")
        return (
            f"{request.method} is not allowed on {request.path}; use {allowed or 'another method'}"
        )
    if status >= 500:
        return "the server failed on this request; retry it, and report it if it keeps failing"
    return f"{exception}" or "the request could not be processed"
