"""The server's side of one assistant worker process: start it, call it, see it die.

:class:`WorkerProcess` speaks :mod:`handoff.assistant.worker_protocol` to a worker started with
:meth:`WorkerProcess.start` and implements :class:`~handoff.assistant.interface.AssistantApi`,
so the conversation service cannot tell it from an assistant in its own process. No Rasa is
imported here: the server process never loads TensorFlow.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from handoff.assistant.interface import BotTurn, ModelInfo
from handoff.assistant.tracker_changes import TrackerChange
from handoff.assistant.worker_protocol import (
    FrameError,
    encode_changes,
    encode_frame,
    read_frame,
)
from handoff.core.errors import HandoffError

__all__ = [
    "AssistantWorkerError",
    "WorkerGoneError",
    "WorkerProcess",
    "WorkerSpec",
    "WorkerStartError",
]

logger = logging.getLogger(__name__)

SHUTDOWN_SECONDS = 30.0
"""How long a retiring worker may take to finish what it holds before it is killed."""


class WorkerGoneError(HandoffError, ConnectionError):
    """The worker died (or its connection broke) while the call was in flight, or before."""

    code = "internal"


class WorkerStartError(HandoffError, RuntimeError):
    """A worker exited or failed to load its model before it was ready; the message says why."""

    code = "not_ready"


class AssistantWorkerError(HandoffError, RuntimeError):
    """The worker raised while answering; it stays up. The message is the worker's error."""

    code = "internal"


@dataclass(frozen=True)
class WorkerSpec:
    """How to start workers: everything but the model, which changes with each swap."""

    tracker_database_url: str
    fallback_threshold: float | None = None
    redis_url: str | None = None
    redis_namespace: str = "handoff"
    log_level: str = "INFO"
    python: str = sys.executable
    module: str = "handoff.assistant.worker_process"
    """The module run with ``python -m``; tests put a fake worker here."""
    endpoints: Path | None = None
    """The project's endpoints.yml (custom actions, event broker), if it has one."""

    def command(self, name: str, model: Path, fd: int) -> list[str]:
        command = [self.python, "-m", self.module, "--fd", str(fd), "--model", str(model)]
        command += ["--tracker-database", self.tracker_database_url, "--name", name]
        command += ["--log-level", self.log_level, "--redis-namespace", self.redis_namespace]
        if self.fallback_threshold is not None:
            command += ["--fallback-threshold", str(self.fallback_threshold)]
        if self.redis_url:
            command += ["--redis-url", self.redis_url]
        if self.endpoints is not None:
            command += ["--endpoints", str(self.endpoints)]
        return command


class WorkerProcess:
    """One running worker. Build with :meth:`start`; calls may run concurrently."""

    def __init__(
        self,
        name: str,
        process: asyncio.subprocess.Process,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        ready: dict[str, Any],
    ) -> None:
        self.name = name
        self.process = process
        self._writer = writer
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._outgoing: list[bytes] = []
        """Requests made in this loop iteration, written together by :meth:`_flush`."""
        self.gone = asyncio.Event()
        """Set when the connection ends: the worker exited, was killed or retired."""
        self.info = ModelInfo(
            name=str(ready["name"]),
            path=Path(ready["path"]),
            fallback_threshold=ready.get("fallback_threshold"),
            load_seconds=float(ready["load_seconds"]),
        )
        self._intents = [str(name) for name in ready.get("intents", [])]
        self._responses = {str(k): list(v) for k, v in (ready.get("responses") or {}).items()}
        self._reading = asyncio.create_task(self._read_answers(reader))

    @classmethod
    async def start(cls, spec: WorkerSpec, name: str, model: Path) -> WorkerProcess:
        """Start a worker for ``model`` and wait until it is ready (it has loaded the model and
        answered a test parse: tens of seconds). Raises :class:`WorkerStartError`."""
        ours, theirs = socket.socketpair()
        try:
            process = await asyncio.create_subprocess_exec(
                *spec.command(name, model, theirs.fileno()), pass_fds=(theirs.fileno(),)
            )
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        try:
            first = await read_frame(reader)
        except (FrameError, asyncio.IncompleteReadError, ConnectionError) as error:
            first = {"failed": f"broken first frame ({error})"}
        except BaseException:  # cancelled (the server stops) while the worker loads
            writer.close()
            process.kill()
            await asyncio.shield(process.wait())
            raise
        if first is None or "ready" not in first:
            why = (first or {}).get("failed") or "it exited before it was ready"
            writer.close()
            code = await _reap(process, timeout=10)
            raise WorkerStartError(f"assistant worker {name} did not start: {why} (exit {code})")
        logger.info("Assistant worker %s (pid %d) serves %s", name, process.pid, model.name)
        return cls(name, process, reader, writer, first["ready"])

    @property
    def pid(self) -> int:
        return self.process.pid

    async def _read_answers(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                frame = await read_frame(reader)
                if frame is None:
                    break
                future = self._pending.pop(frame.get("id", -1), None)
                if future is None or future.done():
                    continue
                if "error" in frame:
                    error = frame["error"] or {}
                    future.set_exception(
                        AssistantWorkerError(f"{error.get('type')}: {error.get('message')}")
                    )
                else:
                    future.set_result(frame.get("result"))
        except (FrameError, asyncio.IncompleteReadError, ConnectionError) as error:
            logger.error("Connection to assistant worker %s broke: %s", self.name, error)
        finally:
            self.gone.set()
            self._writer.close()
            pending, self._pending = self._pending, {}
            for future in pending.values():
                if not future.done():
                    future.set_exception(WorkerGoneError(f"assistant worker {self.name} is gone"))

    async def call(self, op: str, **args: Any) -> Any:
        """Send one request and wait for its answer. Raises :class:`WorkerGoneError` if the
        worker is gone before it answers, :class:`AssistantWorkerError` if it raised."""
        if self.gone.is_set():
            raise WorkerGoneError(f"assistant worker {self.name} is gone")
        request_id = next(self._ids)
        frame = encode_frame({"id": request_id, "op": op, "args": args})
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending[request_id] = future
        if not self._outgoing:
            loop.call_soon(self._flush)
        self._outgoing.append(frame)
        try:
            return await future
        finally:
            self._pending.pop(request_id, None)

    def _flush(self) -> None:
        """One socket write for the requests of a loop iteration (a burst of relayed messages
        is one system call, not one each)."""
        frames, self._outgoing = self._outgoing, []
        if not self._writer.is_closing():
            self._writer.write(b"".join(frames))

    async def shutdown(self, timeout: float = SHUTDOWN_SECONDS) -> int | None:
        """Let the worker finish what it holds and exit (killed after ``timeout`` seconds);
        its exit status."""
        with contextlib.suppress(WorkerGoneError, asyncio.TimeoutError):
            await asyncio.wait_for(self.call("shutdown"), timeout)
        return await _reap(self.process, timeout=5)

    def kill(self) -> None:
        """SIGKILL the worker (if it still runs)."""
        if self.process.returncode is None:
            self.process.kill()

    # AssistantApi ------------------------------------------------------------------------------

    async def parse(self, text: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("parse", text=text)
        return result

    async def respond(
        self,
        conversation_id: str,
        text: str,
        *,
        input_channel: str,
        message_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        parse_data: dict[str, Any] | None = None,
    ) -> BotTurn:
        result: dict[str, Any] = await self.call(
            "respond",
            conversation_id=conversation_id,
            text=text,
            input_channel=input_channel,
            message_id=message_id,
            metadata=metadata,
            parse_data=parse_data,
        )
        return BotTurn.from_dict(result)

    async def preview(
        self,
        conversation_id: str,
        text: str,
        *,
        parse_data: dict[str, Any],
        undo_last_turn: bool = False,
    ) -> BotTurn:
        result: dict[str, Any] = await self.call(
            "preview",
            conversation_id=conversation_id,
            text=text,
            parse_data=parse_data,
            undo_last_turn=undo_last_turn,
        )
        return BotTurn.from_dict(result)

    async def log_without_answer(
        self,
        conversation_id: str,
        text: str,
        *,
        input_channel: str,
        message_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        then: Sequence[TrackerChange] = (),
        parse_data: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self.call(
            "log_without_answer",
            conversation_id=conversation_id,
            text=text,
            input_channel=input_channel,
            message_id=message_id,
            metadata=metadata,
            then=encode_changes(then),
            parse_data=parse_data,
        )
        return result

    async def append_to_tracker(
        self, conversation_id: str, changes: Sequence[TrackerChange]
    ) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = await self.call(
            "append_to_tracker", conversation_id=conversation_id, changes=encode_changes(changes)
        )
        return messages

    async def is_paused(self, conversation_id: str) -> bool:
        return bool(await self.call("is_paused", conversation_id=conversation_id))

    def intent_names(self) -> list[str]:
        return list(self._intents)

    def responses(self) -> dict[str, list[str]]:
        return {name: list(texts) for name, texts in self._responses.items()}


async def _reap(process: asyncio.subprocess.Process, timeout: float) -> int | None:
    """Wait for ``process`` to exit (SIGKILL after ``timeout`` s); its exit status."""
    try:
        return await asyncio.wait_for(process.wait(), timeout)
    except asyncio.TimeoutError:
        process.kill()
        return await process.wait()
