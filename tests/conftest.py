"""Shared fixtures: the trained bundled model and a real server process on a free port.

Heavy libraries (Rasa, TensorFlow) never load in the pytest process: training and serving run
in subprocesses through the ``handoff`` command, exactly as a user runs them.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hypothesis
import pytest

# Property-based tests: "ci" (the default) is reproducible and sized for CI; run
# `pytest --hypothesis-profile=thorough` for a long local search (examples saved in .hypothesis/).
hypothesis.settings.register_profile(
    "ci", max_examples=200, deadline=None, derandomize=True, database=None, print_blob=True
)
hypothesis.settings.register_profile("thorough", max_examples=10_000, deadline=None)
hypothesis.settings.load_profile("ci")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BIN_DIR = Path(sys.executable).parent
HANDOFF = str(BIN_DIR / "handoff")
MODELS_DIR = PROJECT_ROOT / "models"
SERVER_START_TIMEOUT_S = 600.0
"""A loaded 2-core machine has taken over 200 s to load the model."""
RASA_API_TOKEN = "test-token-3f9a"
STRICT_INTENT = "close_account"
"""The session server hands this intent off unless the model is 99.99% sure (never)."""
"""The session server mounts Rasa's HTTP API under this token."""

TEST_ENV = {
    **os.environ,
    "RASA_TELEMETRY_ENABLED": "false",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "PYTHONUNBUFFERED": "1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_json(
    method: str,
    url: str,
    body: bytes | None = None,
    timeout: float = 30.0,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """Send one HTTP request; return (status, decoded JSON body or None)."""
    request = urllib.request.Request(
        url,
        data=body,
        method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw) if raw else None
    except json.JSONDecodeError:
        return status, raw.decode("utf-8", "replace")


@dataclass(frozen=True)
class TrainingRun:
    model: Path
    database: Path
    """A SQLite database whose model registry has ``model`` live, with its held-out scores."""
    output: str


@pytest.fixture(scope="session")
def training_run(tmp_path_factory: pytest.TempPathFactory) -> TrainingRun:
    """``handoff train`` of the bundled assistant (reused if bot/ and data/ are unchanged),
    evaluated and promoted in a registry of its own."""
    database = tmp_path_factory.mktemp("registry") / "registry.db"
    result = subprocess.run(
        [HANDOFF, "train", "--out", str(MODELS_DIR)],
        env={**TEST_ENV, "HANDOFF_DATABASE_URL": f"sqlite:///{database}"},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"handoff train failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    match = re.search(r"(\S+\.tar\.gz)", result.stdout.splitlines()[-1])
    assert match, f"no model path in the output of handoff train:\n{result.stdout[-2000:]}"
    return TrainingRun(Path(match.group(1)), database, result.stdout)


@pytest.fixture(scope="session")
def trained_model(training_run: TrainingRun) -> Path:
    """The bundled assistant's model archive."""
    return training_run.model


@dataclass
class RunningServer:
    port: int
    base_url: str
    ws_url: str
    database_path: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    @property
    def tracker_database_path(self) -> Path:
        """The SQLite file of Rasa's trackers (beside ours: see handoff.assistant.tracker_store)."""
        return self.database_path.with_name(f"{self.database_path.stem}-rasa.db")


def model_loaded(status: int, body: Any) -> bool:
    """``/health`` once the assistant answers (and its action server, if the server runs
    one)."""
    if status != 200 or not isinstance(body, dict):
        return False
    actions = body.get("actions")
    return actions is None or bool(actions.get("ready"))


def endpoints_file(workdir: Path, extra: str = "") -> Path:
    """An endpoints.yml in ``workdir`` as bot/endpoints.yml but on a free port (servers of
    the tests run side by side, each with the action server it starts), plus ``extra``."""
    path = workdir / "endpoints.yml"
    path.write_text(
        f"action_endpoint:\n  url: http://127.0.0.1:{free_port()}/webhook\n{extra}",
        encoding="utf-8",
    )
    return path


def model_failed(status: int, body: Any) -> bool:
    """``/health`` of a server whose model could not load (all but the assistant works)."""
    return status == 503 and isinstance(body, dict) and body.get("status") == "failed"


def start_server(
    model: Path,
    workdir: Path,
    extra_env: dict[str, str] | None = None,
    port: int | None = None,
    ready: Callable[[int, Any], bool] = model_loaded,
) -> RunningServer:
    """Start ``handoff serve`` on a free port; wait until ``ready(status, body)`` holds for
    ``/health`` (by default: the model is loaded and the action server answers). Unless
    ``extra_env`` names an endpoints file or a project, the server gets the bundled bot's
    endpoints on a port of its own (:func:`endpoints_file`) and a demo card database in
    ``workdir``."""
    port = port or free_port()
    database_path = workdir / "handoff.db"
    log_path = workdir / "server.log"
    env = {
        **TEST_ENV,
        "HANDOFF_DATABASE_URL": f"sqlite:///{database_path}",
        "LARKSPUR_CARDS_DATABASE_URL": f"sqlite:///{workdir / 'cards.db'}",
        **(extra_env or {}),
    }
    if "HANDOFF_ENDPOINTS_FILE" not in env and "HANDOFF_PROJECT_DIR" not in env:
        env["HANDOFF_ENDPOINTS_FILE"] = str(endpoints_file(workdir))
    with log_path.open("ab") as log_file:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [HANDOFF, "serve", "--port", str(port), "--model", str(model)],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = RunningServer(
        port=port,
        base_url=f"http://127.0.0.1:{port}",
        ws_url=f"ws://127.0.0.1:{port}",
        database_path=database_path,
        process=process,
        log_path=log_path,
    )
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log_tail()}")
        try:
            status, body = http_json("GET", f"{server.base_url}/health", timeout=2)
        except OSError:
            status, body = 0, None
        if ready(status, body):
            return server
        time.sleep(0.5)
    stop_server(server)
    raise RuntimeError(f"server not ready after {SERVER_START_TIMEOUT_S} s:\n{server.log_tail()}")


def stop_server(server: RunningServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="session")
def server(
    trained_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """One real server for the session, on its own SQLite database, with the default one
    assistant worker process."""
    running = start_server(
        trained_model,
        tmp_path_factory.mktemp("server"),
        extra_env={"HANDOFF_INTENT_THRESHOLDS": f"{STRICT_INTENT}=0.9999"},
    )
    yield running
    stop_server(running)


# Clients ------------------------------------------------------------------------------------


class FrameClient:
    """A websocket client that buffers frames so tests can wait for the one they expect."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.buffer: list[dict[str, Any]] = []
        self.last_error: dict[str, Any] = {}

    async def send(self, frame: dict[str, Any] | str) -> None:
        await self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def _receive(self, timeout: float) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        frame: dict[str, Any] = json.loads(raw)
        return frame

    async def expect(
        self,
        type_: str,
        timeout: float = 30.0,
        **fields: Any,
    ) -> dict[str, Any]:
        """The first frame (buffered or new) of ``type_`` whose fields match ``fields``."""
        return await self.expect_any((type_,), timeout, **fields)

    async def expect_any(
        self,
        types: tuple[str, ...],
        timeout: float = 30.0,
        **fields: Any,
    ) -> dict[str, Any]:
        """The first frame of any of ``types`` whose fields match ``fields``."""
        type_ = "/".join(types)

        def matches(frame: dict[str, Any]) -> bool:
            return frame.get("type") in types and all(frame.get(k) == v for k, v in fields.items())

        for index, frame in enumerate(self.buffer):
            if matches(frame):
                if frame["type"] == "error":
                    self.last_error = frame
                return self.buffer.pop(index)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"no {type_} frame {fields} within {timeout} s; got {self.buffer}"
                )
            try:
                frame = await self._receive(remaining)
            except asyncio.TimeoutError:
                continue
            if matches(frame):
                if frame["type"] == "error":
                    self.last_error = frame
                return frame
            self.buffer.append(frame)

    async def drain(self, quiet: float = 0.5) -> list[dict[str, Any]]:
        """Everything received until ``quiet`` seconds pass without a frame."""
        frames, self.buffer = self.buffer, []
        while True:
            try:
                frames.append(await self._receive(quiet))
            except asyncio.TimeoutError:
                return frames

    async def close(self) -> None:
        await self.ws.close()


ANSWER_TYPES = ("bot", "handoff", "agent")
"""Frames that answer a user's message."""


class UserClient(FrameClient):
    def __init__(self, ws: Any, ready: dict[str, Any]) -> None:
        super().__init__(ws)
        self.ready = ready
        self.conversation_id: str = ready["conversation_id"]

    async def say(
        self, text: str, client_id: str | None = None, answered: bool = True
    ) -> list[dict[str, Any]]:
        """Send ``text``; return the frames that answer it (bot messages or handoff notices).

        With ``answered`` (the default) this waits up to a minute for the first answer, so a
        slow first prediction on a loaded machine is not mistaken for silence; pass
        ``answered=False`` for a message that should get no answer (one the bot holds while
        the conversation waits for an agent).
        """
        client_id = client_id or uuid.uuid4().hex
        await self.send({"type": "message", "id": client_id, "text": text})
        await self.expect("ack", id=client_id)
        first = [await self.expect_any(ANSWER_TYPES, timeout=60.0)] if answered else []
        frames = first + await self.drain(1.0)
        answers = [f for f in frames if f["type"] in ANSWER_TYPES]
        self.buffer.extend(f for f in frames if f not in answers)
        return answers

    async def bot_texts(self, text: str) -> list[str]:
        frames = await self.say(text)
        assert frames and all(f["type"] == "bot" for f in frames), frames
        return [f["text"] for f in frames]


async def connect_user(
    server: RunningServer, conversation_id: str | None = None, last_event_id: int | None = None
) -> UserClient:
    from websockets.client import connect

    params = {}
    if conversation_id:
        params["conversation_id"] = conversation_id
    if last_event_id is not None:
        params["last_event_id"] = str(last_event_id)
    query = ("?" + urllib.parse.urlencode(params)) if params else ""
    ws = await connect(f"{server.ws_url}/ws/user{query}")
    client = FrameClient(ws)
    ready = await client.expect("ready")
    user = UserClient(ws, ready)
    user.buffer = client.buffer
    return user


class AgentClient(FrameClient):
    def __init__(self, ws: Any, hello: dict[str, Any], token: str) -> None:
        super().__init__(ws)
        self.hello = hello
        self.token = token

    async def act(self, type_: str, **fields: Any) -> dict[str, Any]:
        """Send an action frame; return its ack, or raise AssertionError with the error."""
        client_id = uuid.uuid4().hex
        await self.send({"type": type_, "id": client_id, **fields})
        return await self.expect("ack", id=client_id)

    async def act_expecting_error(self, type_: str, **fields: Any) -> dict[str, Any]:
        client_id = uuid.uuid4().hex
        await self.send({"type": type_, "id": client_id, **fields})
        return await self.expect("error", id=client_id)


def login(server: RunningServer, username: str, password: str) -> str:
    status, body = http_json(
        "POST",
        f"{server.base_url}/api/login",
        json.dumps({"username": username, "password": password}).encode(),
        headers={"Origin": server.base_url},
    )
    assert status == 200, body
    token: str = body["token"]
    return token


async def connect_agent(
    server: RunningServer, username: str, last_event_id: int | None = None
) -> AgentClient:
    from websockets.client import connect

    token = login(server, username, PASSWORD)
    query = f"?last_event_id={last_event_id}" if last_event_id is not None else ""
    ws = await connect(
        f"{server.ws_url}/ws/agent{query}",
        origin=server.base_url,  # type: ignore[arg-type]
        extra_headers={"Authorization": f"Bearer {token}"},
    )
    client = FrameClient(ws)
    hello = await client.expect("hello")
    agent = AgentClient(ws, hello, token)
    agent.buffer = client.buffer
    return agent


PASSWORD = "correct-horse-battery"


def agents_command(
    database_url: str, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``handoff agents ARGS`` against ``database_url``, as a maintainer at a terminal."""
    return subprocess.run(
        [HANDOFF, "agents", *args],
        input=stdin,
        env={**TEST_ENV, "HANDOFF_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def add_agent(
    server: RunningServer,
    username: str,
    name: str,
    role: str = "agent",
    database_url: str | None = None,
) -> None:
    """Create an account in the server's database (``database_url`` if not its SQLite file)."""
    result = agents_command(
        database_url or f"sqlite:///{server.database_path}",
        *("add", username, "--name", name, "--role", role, "--password-stdin"),
        stdin=PASSWORD + "\n",
    )
    assert result.returncode == 0 or "is taken" in result.stderr, result.stderr


# Browser ------------------------------------------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
"""Debian's Chromium on a machine with no internet (see the README's Development section)."""
HAVE_CHROMIUM = CHROMIUM.exists()


@pytest.fixture
async def page(server: RunningServer) -> AsyncIterator[Any]:
    """A page in headless Chromium; the test fails if the page breaks its own
    Content-Security-Policy (the browser reports each violation on the console)."""
    async with browser_page() as opened:
        yield opened


async def sign_in_to_console(page: Any, server: RunningServer, username: str) -> None:
    """Open the console in ``page`` and sign in as ``username`` (password :data:`PASSWORD`);
    returns once its websocket is connected."""
    await page.goto(f"{server.base_url}/console")
    await page.fill("#username", username)
    await page.fill("#password", PASSWORD)
    await page.click("#signin-form button[type=submit]")
    await page.wait_for_selector("#connection:text('connected')")


@asynccontextmanager
async def browser_page() -> AsyncIterator[Any]:
    """A page in headless Chromium (see the ``page`` fixture), for any server."""
    if not HAVE_CHROMIUM:
        pytest.skip("Debian's chromium is not installed (make install installs it as root)")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        new_page = await context.new_page()
        violations: list[str] = []
        new_page.on(
            "console",
            lambda message: (
                violations.append(message.text)
                if "Content Security Policy" in message.text
                else None
            ),
        )
        yield new_page
        await browser.close()
        assert violations == [], "the pages must work under their Content-Security-Policy"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A new, empty database on the local PostgreSQL server, dropped afterwards."""
    from tests.services import fresh_database

    with fresh_database() as url:
        yield url
