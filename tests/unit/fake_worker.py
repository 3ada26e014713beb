"""A fake assistant worker: the real :class:`~handoff.assistant.worker_process.WorkerServer`
serving a scripted :class:`~tests.unit.fake_assistant.FakeAssistant`, with no Rasa import, so
that unit tests can start worker processes in a fraction of a second::

    python -m tests.unit.fake_worker --fd N --model PATH --tracker-database URL ...

(the command line of :mod:`handoff.assistant.worker_process`; ``WorkerSpec(module=...)``).

Test hooks:

- The model file's name is the model name in the ready frame. A model whose file name starts
  with ``fail`` (or that does not exist) is refused: ``failed`` frame, exit status 3.
- ``parse`` results and every bot message of ``respond`` carry ``worker_pid``, the process id
  of the worker that answered.
- Parsing (also inside ``respond`` and ``log_without_answer``) of ``"die"`` ends the process
  at once with status 9, as a crash mid-call; ``"die-once"`` does so only the first time in
  the directory named by ``FAKE_WORKER_STATE`` (it leaves a marker there), so a replacement
  answers; ``"slow"`` answers after 1 s; ``"error"`` raises ``ValueError`` (an error answer).
- While a file :data:`START_HOLD` exists in ``FAKE_WORKER_STATE``, a starting worker waits
  before it says ready (it looks every 10 ms), so a test controls when a replacement is ready;
  it exits if the server goes away meanwhile.
- With ``FAKE_WORKER_STATE`` set, each record added to a conversation's tracker is appended to
  :data:`TRACKER_JOURNAL` in that directory as one JSON line (see :func:`read_journal`).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from handoff.assistant.interface import BotTurn, ModelInfo
from handoff.assistant.tracker_changes import TrackerChange
from handoff.assistant.worker_process import EXIT_LOAD_FAILED, connect, say_failed, serve_ready
from handoff.core.triggers import FALLBACK_INTENT
from tests.unit.fake_assistant import FALLBACK_THRESHOLD, FakeAssistant

__all__ = [
    "ANSWERS",
    "DIE_ONCE_MARKER",
    "EXIT_CRASHED",
    "NLU",
    "START_HOLD",
    "STATE_ENV",
    "TRACKER_JOURNAL",
    "WorkerAssistant",
    "main",
    "read_journal",
]

STATE_ENV = "FAKE_WORKER_STATE"
"""Environment variable: the directory the fake keeps its marker and journal in."""
DIE_ONCE_MARKER = "died-once"
TRACKER_JOURNAL = "tracker.jsonl"
START_HOLD = "hold-start"
EXIT_CRASHED = 9
"""Exit status of a worker told to ``die``."""

NLU = {
    "hello": [("greet", 0.97), ("check_balance", 0.01)],
    "what is my balance": [("check_balance", 0.95), ("greet", 0.03)],
}
ANSWERS = {
    "greet": [{"text": "Hello! How can I help?"}],
    "check_balance": [{"text": "Your balance is 100 EUR."}],
    FALLBACK_INTENT: [{"text": "Sorry, I didn't get that."}],
}


class WorkerAssistant(FakeAssistant):
    """The scripted assistant of :data:`NLU` and :data:`ANSWERS`, with the module's hooks."""

    def __init__(self, model: Path, fallback_threshold: float | None, state: Path | None) -> None:
        threshold = FALLBACK_THRESHOLD if fallback_threshold is None else fallback_threshold
        super().__init__(NLU, ANSWERS, intents=["check_balance", "greet"])
        self.info = ModelInfo(model.name, model, threshold, load_seconds=0.0)
        self.state = state

    async def parse(self, text: str) -> dict[str, Any]:
        if text == "die":
            os._exit(EXIT_CRASHED)
        if text == "die-once":
            if self.state is None:
                raise ValueError(f"die-once needs {STATE_ENV}")
            marker = self.state / DIE_ONCE_MARKER
            if not marker.exists():
                marker.touch()
                os._exit(EXIT_CRASHED)
        if text == "slow":
            await asyncio.sleep(1.0)
        if text == "error":
            raise ValueError("scripted error")
        result = await super().parse(text)
        result["worker_pid"] = os.getpid()
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
        before = len(self.tracker[conversation_id])
        turn = await super().respond(
            conversation_id,
            text,
            input_channel=input_channel,
            message_id=message_id,
            metadata=metadata,
            parse_data=parse_data,
        )
        self._journal(conversation_id, before)
        messages = [{**reply, "worker_pid": os.getpid()} for reply in turn.messages]
        return dataclasses.replace(turn, messages=messages)

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
        before = len(self.tracker[conversation_id])
        result = await super().log_without_answer(
            conversation_id,
            text,
            input_channel=input_channel,
            message_id=message_id,
            metadata=metadata,
            then=then,
            parse_data=parse_data,
        )
        self._journal(conversation_id, before)
        return result

    async def append_to_tracker(
        self, conversation_id: str, changes: Sequence[TrackerChange]
    ) -> list[dict[str, Any]]:
        before = len(self.tracker[conversation_id])
        said = await super().append_to_tracker(conversation_id, changes)
        self._journal(conversation_id, before)
        return said

    def _journal(self, conversation_id: str, before: int) -> None:
        """Append the records added to the tracker since it had ``before`` of them."""
        if self.state is None:
            return
        lines = []
        for record in self.tracker[conversation_id][before:]:
            fields = {k: v for k, v in dataclasses.asdict(record).items() if k != "parse_data"}
            entry = {"pid": os.getpid(), "conversation_id": conversation_id}
            lines.append(json.dumps({**entry, "record": type(record).__name__, **fields}) + "\n")
        with (self.state / TRACKER_JOURNAL).open("a", encoding="utf-8") as journal:
            journal.write("".join(lines))


def read_journal(state: Path) -> list[dict[str, Any]]:
    """The tracker records every fake worker using ``state`` wrote, in order: dicts with
    ``pid``, ``conversation_id``, ``record`` (``UserLogged``, ``BotPaused``...) and its fields."""
    path = state / TRACKER_JOURNAL
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _loads(model: Path) -> bool:
    return model.exists() and not model.name.startswith("fail")


async def _run(args: argparse.Namespace) -> int:
    reader, writer = await connect(args.fd)
    model: Path = args.model
    if not _loads(model):
        await say_failed(writer, f"scripted load failure of {model.name}")
        writer.close()
        await writer.wait_closed()
        return EXIT_LOAD_FAILED
    state = Path(os.environ[STATE_ENV]) if os.environ.get(STATE_ENV) else None
    while state is not None and (state / START_HOLD).exists():
        if reader.at_eof():  # the server went away while this one was held
            writer.close()
            return 0
        await asyncio.sleep(0.01)
    assistant = WorkerAssistant(model, args.fallback_threshold, state)
    await serve_ready(assistant, reader, writer)
    writer.close()
    await writer.wait_closed()
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tests.unit.fake_worker")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--tracker-database", required=True)
    parser.add_argument("--fallback-threshold", type=float)
    parser.add_argument("--redis-url")
    parser.add_argument("--redis-namespace", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--log-level", required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(_run(_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
