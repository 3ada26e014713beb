"""Security headers on every HTTP answer: pages, static files, APIs and errors.

The chat page and the agent console load only their own scripts and styles (no inline script
or style, nothing from another host) and talk only to this server, so the policy allows
exactly that. ``frame-ancestors 'none'`` and ``X-Frame-Options`` keep the console out of
other sites' frames (clickjacking). A page that needs more must change the policy here, on
purpose.
"""

from __future__ import annotations

from sanic import Request, Sanic
from sanic.response import BaseHTTPResponse

__all__ = ["CONTENT_SECURITY_POLICY", "SECURITY_HEADERS", "add_security_headers"]

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",  # CSP 3: 'self' covers ws:// and wss:// to this host
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
"""Set on every response that does not already carry the header."""


def add_security_headers(app: Sanic) -> None:
    """Register the response middleware that adds :data:`SECURITY_HEADERS`."""

    @app.on_response
    async def security_headers(request: Request, response: BaseHTTPResponse) -> None:
        for name, value in SECURITY_HEADERS.items():
            if name not in response.headers:
                response.headers[name] = value
