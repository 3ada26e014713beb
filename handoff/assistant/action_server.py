"""The project's custom-action server (rasa-sdk) as a child of ``handoff serve``.

When endpoints.yml's ``action_endpoint`` is on this machine (``localhost``, ``127.0.0.1``,
``::1``) with a port, the project has its actions (``actions/`` or ``actions.py`` in the bot
folder) and ``HANDOFF_ACTION_SERVER`` is ``auto``, the server runs ``python -m rasa_sdk
--actions actions --port PORT`` in the bot folder, with this interpreter and environment,
listening on the endpoint's address only:
:func:`plan_action_server` decides, :class:`ActionServer` starts it, restarts it if it exits
(with growing pauses) and stops it with the server. Its log lines go to the server's output.

If something already answers ``/health`` on that port, it is used and nothing is started (for
example a second ``handoff serve`` on the same machine): say ``HANDOFF_ACTION_SERVER=off``
to make that explicit. An action server elsewhere is never started here.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["ActionServer", "ActionServerPlan", "plan_action_server"]

logger = logging.getLogger(__name__)

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
START_TIMEOUT_S = 120.0
"""How long a starting action server may take to answer ``/health`` (imports of the actions)."""
RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
STOP_TIMEOUT_S = 10.0
HEALTH_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class ActionServerPlan:
    """An action server to run: rasa-sdk's ``--actions MODULE --port PORT`` in ``folder``
    (through :mod:`handoff.assistant.run_actions`)."""

    folder: Path
    module: str
    port: int
    url: str
    host: str = "127.0.0.1"
    """The interface it listens on: the endpoint's own (rasa-sdk's default is every
    interface, and anyone who reaches an action server can run its actions)."""

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "handoff.assistant.run_actions",  # rasa_sdk's own main, with our operator output
            "--actions",
            self.module,
            "--port",
            str(self.port),
        ]


def plan_action_server(
    action_url: str | None, bot_dir: Path, mode: str
) -> tuple[ActionServerPlan | None, str]:
    """Whether to run the project's action server, and one line that says why (for the
    start-up output)."""
    if action_url is None:
        if _actions_module(bot_dir) is not None:
            return None, (
                f"{bot_dir} has custom actions but endpoints.yml names no action_endpoint: "
                "they will fail (add action_endpoint: url: http://127.0.0.1:5055/webhook)"
            )
        return None, "no action_endpoint: custom actions are off"
    parts = urlsplit(action_url)
    if mode == "off":
        return None, f"custom actions at {action_url} (HANDOFF_ACTION_SERVER=off: run it yourself)"
    if parts.hostname not in LOCAL_HOSTS or parts.port is None:
        return None, f"custom actions at {action_url} (not on this machine: not started here)"
    module = _actions_module(bot_dir)
    if module is None:
        return None, (
            f"custom actions at {action_url}, but {bot_dir} has no actions/ package or "
            "actions.py to start there: run your action server yourself"
        )
    host = "127.0.0.1" if parts.hostname == "localhost" else str(parts.hostname)
    return ActionServerPlan(bot_dir, module, parts.port, action_url, host), (
        f"custom actions at {action_url} (action server started from {bot_dir / module})"
    )


def _actions_module(bot_dir: Path) -> str | None:
    if (bot_dir / "actions" / "__init__.py").is_file() or (bot_dir / "actions.py").is_file():
        return "actions"
    return None


class ActionServer:
    """Runs one :class:`ActionServerPlan` until :meth:`close`. Build, then ``await run()`` in
    a task (it returns only when closed)."""

    def __init__(self, plan: ActionServerPlan) -> None:
        self.plan = plan
        self.process: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.external = False
        """Something else already answered on the port; it is used, not started."""
        self.ready = asyncio.Event()
        self._closing = False

    def health(self) -> dict[str, Any]:
        """What ``/health`` shows of it."""
        return {
            "url": self.plan.url,
            "ready": self.ready.is_set(),
            "pid": None if self.external or self.process is None else self.process.pid,
            "restarts": self.restarts,
            "external": self.external,
        }

    async def run(self) -> None:
        """Start the action server and keep it running (restarted after an exit, with growing
        pauses) until :meth:`close`."""
        if await answers_health(self.plan.port, self.plan.host):
            self.external = True
            self.ready.set()
            logger.warning(
                "An action server already answers on port %d; using it (not started here)",
                self.plan.port,
            )
            return
        for attempt in itertools.count():
            if self._closing:
                return
            code = await self._run_once()
            if self._closing:
                return
            self.ready.clear()
            self.restarts += 1
            pause = RESTART_BACKOFF_S[min(attempt, len(RESTART_BACKOFF_S) - 1)]
            logger.error(
                "The action server exited with status %s; starting it again in %.0f s "
                "(custom actions fail meanwhile: conversations that need one go to a person)",
                code,
                pause,
            )
            await asyncio.sleep(pause)

    async def _run_once(self) -> int | None:
        # A session of its own: Ctrl-C reaches the server, which stops it in order.
        process = await asyncio.create_subprocess_exec(
            *self.plan.command(),
            cwd=str(self.plan.folder),
            env={
                **os.environ,
                "SANIC_HOST": self.plan.host,  # rasa-sdk's listen address
                "SANIC_ACCESS_LOG": "false",  # a line per action call: noise in our log
            },
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self.process = process
        waiting = asyncio.create_task(process.wait())
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S
        try:
            while not waiting.done() and not await answers_health(self.plan.port, self.plan.host):
                if asyncio.get_running_loop().time() > deadline:
                    logger.error(
                        "The action server did not answer within %.0f s; stopping it",
                        START_TIMEOUT_S,
                    )
                    await _stop(process)
                    break
                await asyncio.wait([waiting], timeout=0.25)
            if not waiting.done():
                self.ready.set()
                logger.info("Action server (pid %d) ready at %s", process.pid, self.plan.url)
            return await waiting
        except asyncio.CancelledError:
            await _stop(process)
            raise

    async def close(self) -> None:
        """Stop the action server (SIGTERM, then SIGKILL after a few seconds)."""
        self._closing = True
        if self.process is not None and not self.external:
            await _stop(self.process)


def _die_with_parent() -> None:
    """In the child, before it runs: on Linux, get SIGTERM when ``handoff serve`` dies
    (even by SIGKILL), so no action server outlives it holding the port."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
    except asyncio.TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


async def answers_health(port: int, host: str = "127.0.0.1") -> bool:
    """Whether an HTTP server on ``host:port`` answers ``GET /health`` with 200."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port), HEALTH_TIMEOUT_S
        )
    except (OSError, asyncio.TimeoutError):
        return False
    try:
        writer.write(f"GET /health HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n".encode())
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), HEALTH_TIMEOUT_S)
        return status.split(b" ")[1:2] == [b"200"]
    except (OSError, asyncio.TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
