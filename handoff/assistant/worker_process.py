"""An assistant worker process: one loaded Rasa model answering the server process's requests.

Started by :mod:`handoff.assistant.workers`, never by hand::

    python -m handoff.assistant.worker_process --fd N --model PATH --tracker-database URL
        [--fallback-threshold X] [--redis-url URL --redis-namespace NS] [--name NAME]
        [--endpoints FILE]

It loads the model (and Rasa's tracker store and lock store), answers one test parse so that
TensorFlow has built its prediction functions, then says ``ready`` on the socket ``--fd`` and
serves the requests of :mod:`handoff.assistant.worker_protocol` until the server asks it to shut
down or goes away (end of stream: it finishes what it holds, then exits).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from handoff.assistant.worker_protocol import (
    OPS,
    FrameError,
    decode_changes,
    read_frame,
    write_frame,
)
from handoff.operator_output import quiet_dependencies, quiet_library_loggers
from handoff.settings import PROJECT_ROOT

__all__ = [
    "EXIT_LOAD_FAILED",
    "NICENESS",
    "WorkerServer",
    "connect",
    "main",
    "ready_frame",
    "say_failed",
    "serve_ready",
]

logger = logging.getLogger(__name__)

EXIT_LOAD_FAILED = 3
"""Exit status of a worker whose model could not be loaded (it said ``failed`` first)."""

NICENESS = 5
"""How much lower than the server's a worker's CPU priority is. When the cores are busy, the
relay between people (cheap, and someone is waiting on each message) goes before Rasa's
work, most of which is intent guesses that may lag and skip (the kernel then gives a worker
about a third of a busy core's time against the server). On an idle machine it changes
nothing."""


class WorkerServer:
    """Answers requests from one connection with one loaded assistant (any
    :class:`~handoff.assistant.interface.AssistantApi`: Rasa's in the worker, a fake in tests).
    """

    def __init__(self, assistant: Any, writer: asyncio.StreamWriter) -> None:
        self.assistant = assistant
        self.writer = writer
        self._in_flight: set[asyncio.Task[None]] = set()

    async def serve(self, reader: asyncio.StreamReader) -> None:
        """Answer frames until ``shutdown`` or end of stream; then wait for what is in flight."""
        shutdown_id: int | None = None
        while True:
            try:
                frame = await read_frame(reader)
            except (FrameError, asyncio.IncompleteReadError, ConnectionError) as error:
                logger.error("Dropping the server connection: %s", error)
                frame = None
            if frame is None:
                break
            if frame.get("op") == "shutdown":
                shutdown_id = frame.get("id")
                break
            task = asyncio.create_task(self._answer(frame))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
        if self._in_flight:
            await asyncio.wait(set(self._in_flight))
        if shutdown_id is not None:
            self._send({"id": shutdown_id, "result": None})
            await self.writer.drain()

    async def _answer(self, frame: dict[str, Any]) -> None:
        request_id = frame.get("id")
        try:
            result = await self._call(frame.get("op"), frame.get("args") or {})
        except Exception as error:  # the caller gets it; this worker stays up
            if not isinstance(error, (FrameError, ValueError, TypeError)):
                logger.exception("Request %s failed", frame.get("op"))
            self._send(
                {"id": request_id, "error": {"type": type(error).__name__, "message": str(error)}}
            )
            return
        self._send({"id": request_id, "result": result})

    async def _call(self, op: Any, args: dict[str, Any]) -> Any:
        assistant = self.assistant
        if op not in OPS:
            raise FrameError(f"unknown request {op!r}")
        if op == "parse":
            return await assistant.parse(args["text"])
        if op == "respond":
            return (await assistant.respond(**args)).as_dict()
        if op == "preview":
            return (await assistant.preview(**args)).as_dict()
        if op == "log_without_answer":
            then = decode_changes(args.pop("then", []))
            return await assistant.log_without_answer(**args, then=then)
        if op == "append_to_tracker":
            changes = decode_changes(args["changes"])
            return await assistant.append_to_tracker(args["conversation_id"], changes)
        if op == "is_paused":
            return await assistant.is_paused(args["conversation_id"])
        raise AssertionError(op)

    def _send(self, message: dict[str, Any]) -> None:
        if not self.writer.is_closing():
            write_frame(self.writer, message)


async def connect(fd: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Streams over the socket the server handed this worker as file descriptor ``fd``."""
    return await asyncio.open_unix_connection(sock=socket.socket(fileno=fd))


async def say_failed(writer: asyncio.StreamWriter, why: str) -> None:
    """Tell the server this worker could not load its model (then exit with
    :data:`EXIT_LOAD_FAILED`)."""
    write_frame(writer, {"id": 0, "failed": why})
    await writer.drain()


async def serve_ready(
    assistant: Any, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Say ``ready`` for ``assistant``, then answer requests until shutdown or end of stream."""
    write_frame(writer, ready_frame(assistant))
    await writer.drain()
    await WorkerServer(assistant, writer).serve(reader)


def ready_frame(assistant: Any) -> dict[str, Any]:
    """The frame that says the worker serves ``assistant``'s model."""
    info = assistant.info
    return {
        "id": 0,
        "ready": {
            "name": info.name,
            "path": str(info.path),
            "fallback_threshold": info.fallback_threshold,
            "load_seconds": info.load_seconds,
            "intents": assistant.intent_names(),
            "responses": assistant.responses(),
        },
    }


async def _run(args: argparse.Namespace) -> int:
    reader, writer = await connect(args.fd)
    from handoff.assistant.endpoints import read_endpoints
    from handoff.assistant.heap import tune_collector_for_serving
    from handoff.assistant.rasa_assistant import Assistant, redis_lock_store

    try:
        lock_store = (
            redis_lock_store(args.redis_url, args.redis_namespace) if args.redis_url else None
        )
        assistant = await Assistant.load(
            args.model,
            args.tracker_database,
            args.fallback_threshold,
            lock_store=lock_store,
            endpoints=read_endpoints(args.endpoints),
        )
        await assistant.parse("hello")  # the first prediction builds TensorFlow's functions
    except Exception as error:
        logger.exception("Could not load the model from %s", args.model)
        await say_failed(writer, f"{type(error).__name__}: {error}")
        return EXIT_LOAD_FAILED
    tune_collector_for_serving()
    await serve_ready(assistant, reader, writer)
    await assistant.close()
    writer.close()
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m handoff.assistant.worker_process",
        description="An assistant worker, started by `handoff serve` (not run by hand).",
    )
    parser.add_argument("--fd", type=int, required=True, help="the inherited socket to serve")
    parser.add_argument("--model", type=Path, required=True, help="model archive or folder")
    parser.add_argument("--tracker-database", required=True, help="SQLAlchemy URL of trackers")
    parser.add_argument("--fallback-threshold", type=float, help="override the model's")
    parser.add_argument("--redis-url", help="Rasa's lock store in Redis (several servers)")
    parser.add_argument("--redis-namespace", default="handoff")
    parser.add_argument("--name", default="assistant", help="name in log lines")
    parser.add_argument("--endpoints", type=Path, help="Rasa's endpoints.yml of the project")
    parser.add_argument("--log-level", default="INFO")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    quiet_dependencies(str(PROJECT_ROOT))
    logging.basicConfig(
        level=args.log_level,
        format=f"%(asctime)s %(levelname)s [{args.name} pid {os.getpid()}] %(name)s: %(message)s",
    )
    quiet_library_loggers()
    from handoff.assistant.rasa_logging import configure_rasa_logging

    configure_rasa_logging(args.log_level)
    # Ctrl-C in a terminal reaches the whole process group; the server decides when its
    # workers stop (it still sends them tracker work while it drains).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.nice(NICENESS)
    return asyncio.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())
