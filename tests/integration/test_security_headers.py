"""Security headers on every page, file, API answer and error; HEAD wherever GET works."""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request

import pytest

from tests.conftest import RunningServer

pytestmark = pytest.mark.slow

EXPECTED = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def fetch(method: str, url: str, body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, dict(answer.headers.items()), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers.items()), error.read()


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/chat", 200),
        ("GET", "/console", 200),
        ("GET", "/console/console.js", 200),
        ("GET", "/static/chat.css", 200),
        ("GET", "/health", 200),
        ("GET", "/api/me", 401),
        ("GET", "/no/such/page", 404),
        ("POST", "/webhooks/rest/webhook", 400),
    ],
)
def test_every_answer_carries_the_security_headers(
    server: RunningServer, method: str, path: str, status: int
) -> None:
    body = b"{" if method == "POST" else None
    got, headers, _ = fetch(method, server.base_url + path, body)
    assert got == status
    for name, value in EXPECTED.items():
        assert headers.get(name) == value, (path, name, headers)
    policy = headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "'unsafe-inline'" not in policy
    assert "'unsafe-eval'" not in policy


def raw_request(server: RunningServer, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    """One request, redirects not followed (urllib turns a redirected HEAD into a GET)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request(method, path)
        answer = connection.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read()
    finally:
        connection.close()


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/chat",
        "/console",
        "/console/console.js",
        "/health",
        "/api/me",
        "/api/agents",
        "/api/review",
        "/api/models",
        "/metrics",
        "/webhooks/rest",
    ],
)
def test_head_is_answered_where_get_is(server: RunningServer, path: str) -> None:
    get_status, get_headers, get_body = raw_request(server, "GET", path)
    head_status, head_headers, head_body = raw_request(server, "HEAD", path)
    assert head_status == get_status
    assert head_body == b""
    assert head_headers.get("Content-Type") == get_headers.get("Content-Type")
    assert head_headers.get("Location") == get_headers.get("Location")
    if get_status == 200:
        assert get_body
