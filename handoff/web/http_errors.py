"""Errors sanic raises on the JSON APIs, answered in the documented shape.

On ``/api/*`` and ``/webhooks/*`` every error that reaches sanic (an over-size body, an unknown
route or method, a request sanic could not read, an exception a handler did not catch) is
answered ``{"error": {"code", "message"}}`` with the matching status, like the errors our
handlers return themselves. Other paths (the chat page, the console) keep sanic's own pages.
"""

from __future__ import annotations

import logging
from typing import Any

from sanic import Request, response
from sanic.exceptions import SanicException
from sanic.handlers import ErrorHandler
from sanic.response import HTTPResponse

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

UNREAD_REQUEST_METHOD = "NONE"
"""The method of the placeholder request sanic makes when it cannot parse a request's head:
whatever failed then is the client's fault."""


class JsonApiErrorHandler(ErrorHandler):
    """Give the JSON APIs JSON errors; pass everything else to sanic's default pages."""

    def default(self, request: Request, exception: Exception) -> HTTPResponse:
        if not request.path.startswith(JSON_API_PREFIXES):
            return super().default(request, exception)  # type: ignore[no-any-return]
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
