"""An assistant worker with no model, for measuring the server process alone.

Speaks :mod:`handoff.assistant.worker_protocol` like the real worker but answers at once and
imports no Rasa: every text parses to ``human_handoff`` with confidence 1.0 (so every
conversation is handed off at its first message), the bot never answers, tracker work is
dropped. Used by ``benchmarks.relay_load --no-assistant`` through
``HANDOFF_ASSISTANT_WORKER_MODULE=benchmarks.null_worker``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from handoff.assistant.interface import ModelInfo
from handoff.assistant.tracker_changes import TrackerChange
from handoff.assistant.worker_process import connect, serve_ready

__all__ = ["NullAssistant", "main"]

INTENT = "human_handoff"


class NullAssistant:
    """An AssistantApi that does no work (see the module docstring)."""

    def __init__(self, model: Path) -> None:
        self.info = ModelInfo(model.name, model, None, 0.0)

    async def parse(self, text: str) -> dict[str, Any]:
        intent = {"name": INTENT, "confidence": 1.0}
        return {"text": text, "intent": intent, "intent_ranking": [intent], "entities": []}

    async def respond(self, conversation_id: str, text: str, **_: Any) -> list[dict[str, Any]]:
        return []

    async def log_without_answer(
        self, conversation_id: str, text: str, *, parse_data: Any = None, **_: Any
    ) -> dict[str, Any]:
        return dict(parse_data) if parse_data else await self.parse(text)

    async def append_to_tracker(
        self, conversation_id: str, changes: Sequence[TrackerChange]
    ) -> None:
        return None

    async def is_paused(self, conversation_id: str) -> bool:
        return False

    def intent_names(self) -> list[str]:
        return [INTENT]

    def responses(self) -> dict[str, list[str]]:
        return {}


async def _run(fd: int, model: Path) -> int:
    reader, writer = await connect(fd)
    await serve_ready(NullAssistant(model), reader, writer)
    writer.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--model", type=Path, required=True)
    args, _ = parser.parse_known_args(argv)  # the real worker's other options are ignored
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return asyncio.run(_run(args.fd, args.model))


if __name__ == "__main__":
    sys.exit(main())
