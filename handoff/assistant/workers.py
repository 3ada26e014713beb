"""The assistant as ``HANDOFF_ASSISTANT_WORKERS`` worker processes, seen as one AssistantApi.

:class:`AssistantWorkers` starts the workers (:mod:`handoff.assistant.worker_client`), pins
each conversation to one of them by a stable hash of its id (so Rasa's per-conversation order
holds with Rasa's in-memory lock store, which is per process), watches them and restarts one
that dies, and swaps models blue/green.

What callers can rely on:

- A worker that dies (SIGKILL, out of memory) is restarted with the same model; the server
  stays up. Calls for its conversations go to the next live worker meanwhile (its
  conversations' calls still come one at a time, so Rasa's order holds), or with none live wait
  for the replacement (up to :data:`RESTART_WAIT_SECONDS`: a model load). A call that was in
  flight when it died is sent once more, with the same data: parses, bot turns and the tracker
  work the dead worker held (intent rankings of relayed messages, agents' utterances, pause and
  resume); what it had acknowledged is in Rasa's tracker store already, and what the service
  had not sent yet goes to the live worker. So Rasa's transcript stays complete. A call that
  fails twice raises :class:`WorkerGoneError`. A worker killed after Rasa saved a turn but
  before its answer reached us makes that turn appear twice in Rasa's tracker; nothing of ours
  is lost or doubled.
- :meth:`AssistantWorkers.swap` starts a full new set of workers on the new model while the old
  ones keep answering; traffic switches once each new worker has answered a test parse; the
  old ones finish what they hold and exit. No call waits for a model load.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import zlib
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from handoff.assistant.interface import AssistantNotReadyError, BotTurn, ModelInfo
from handoff.assistant.tracker_changes import TrackerChange
from handoff.assistant.worker_client import (
    WorkerGoneError,
    WorkerProcess,
    WorkerSpec,
    WorkerStartError,
)

__all__ = ["RESTART_WAIT_SECONDS", "AssistantWorkers", "worker_index"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

RESTART_WAIT_SECONDS = 300.0
"""How long a call waits for a dead worker's replacement (a model load) before it fails."""

RESTART_BACKOFF_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)
"""Pauses between failed restarts of one worker (the last one repeats)."""


def worker_index(conversation_id: str, count: int) -> int:
    """The worker a conversation is pinned to: the same in every server process and run."""
    return zlib.crc32(conversation_id.encode("utf-8", "surrogatepass")) % count


class _Slot:
    """One position in the pool: the worker serving it now, or none while it restarts."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.name = f"assistant-{index + 1}"
        self.worker: WorkerProcess | None = None
        self.model: Path | None = None
        self.ready = asyncio.Event()

    def serve(self, worker: WorkerProcess, model: Path) -> None:
        self.worker, self.model = worker, model
        self.ready.set()

    async def current(self) -> WorkerProcess:
        """The live worker, waiting (bounded) while it restarts."""
        while True:
            try:
                await asyncio.wait_for(self.ready.wait(), RESTART_WAIT_SECONDS)
            except asyncio.TimeoutError:
                raise AssistantNotReadyError(
                    f"assistant worker {self.name} is restarting; send the message again later"
                ) from None
            worker = self.worker
            if worker is not None and not worker.gone.is_set():
                return worker
            self.ready.clear()  # its watcher sets it again when the replacement is ready


class AssistantWorkers:
    """Worker processes serving one model. Build, then ``await start(model)``."""

    def __init__(self, spec: WorkerSpec, count: int) -> None:
        if count < 1:
            raise ValueError("AssistantWorkers needs at least one worker")
        self.spec = spec
        self._slots = [_Slot(i) for i in range(count)]
        self._round_robin = itertools.cycle(range(count))
        self._watchers: set[asyncio.Task[None]] = set()
        self._retiring: set[asyncio.Task[int | None]] = set()
        self._closing = False
        self.restarts = 0
        """Workers restarted after dying, since start."""
        self.info: ModelInfo = ModelInfo("", Path(), None, 0.0)
        """The model served (the newest one after a swap)."""
        self._intents: list[str] = []
        self._responses: dict[str, list[str]] = {}

    @property
    def api(self) -> AssistantWorkers:
        """The pool itself: it routes each call to a worker."""
        return self

    @property
    def count(self) -> int:
        return len(self._slots)

    def pids(self) -> list[int | None]:
        """The process id serving each slot (None while it restarts)."""
        return [
            slot.worker.pid if slot.worker and not slot.worker.gone.is_set() else None
            for slot in self._slots
        ]

    def health(self) -> dict[str, Any]:
        return {"workers": self.count, "pids": self.pids(), "restarts": self.restarts}

    async def start(self, model: Path) -> None:
        """Start every worker on ``model`` and wait until all are ready."""
        workers = await self._start_all(model)
        for slot, worker in zip(self._slots, workers, strict=True):
            self._serve(slot, worker, model)
        self._adopt(workers[0])

    async def swap(self, model: Path) -> None:
        """Serve ``model`` instead, blue/green (see the module docstring). If a new worker
        fails to start, the old ones keep serving and this raises."""
        new = await self._start_all(model)
        try:
            await asyncio.gather(*(worker.parse("hello") for worker in new))
        except Exception:
            await asyncio.gather(*(worker.shutdown() for worker in new))
            raise
        old = [slot.worker for slot in self._slots]
        for slot, worker in zip(self._slots, new, strict=True):
            self._serve(slot, worker, model)
        self._adopt(new[0])
        for retired in old:
            if retired is not None:
                self._retire(retired)

    async def close(self) -> None:
        """Shut every worker down (each finishes what it holds first)."""
        self._closing = True
        workers = [slot.worker for slot in self._slots if slot.worker is not None]
        await asyncio.gather(*(worker.shutdown() for worker in workers), *self._retiring)
        for task in self._watchers:
            task.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)

    async def _start_all(self, model: Path) -> list[WorkerProcess]:
        results = await asyncio.gather(
            *(WorkerProcess.start(self.spec, slot.name, model) for slot in self._slots),
            return_exceptions=True,
        )
        started = [r for r in results if isinstance(r, WorkerProcess)]
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            await asyncio.gather(*(worker.shutdown() for worker in started))
            raise failures[0]
        return started

    def _adopt(self, worker: WorkerProcess) -> None:
        self.info = worker.info
        self._intents = worker.intent_names()
        self._responses = worker.responses()

    def _serve(self, slot: _Slot, worker: WorkerProcess, model: Path) -> None:
        slot.serve(worker, model)
        watcher = asyncio.create_task(self._watch(slot, worker))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)

    def _retire(self, worker: WorkerProcess) -> None:
        task = asyncio.create_task(worker.shutdown())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _watch(self, slot: _Slot, worker: WorkerProcess) -> None:
        """Restart ``slot``'s worker if it dies while it still serves there."""
        await worker.gone.wait()
        code = await worker.process.wait()
        if self._closing or slot.worker is not worker:
            return  # shut down or retired on purpose
        slot.ready.clear()
        self.restarts += 1
        logger.error(
            "Assistant worker %s (pid %d) exited with status %s; restarting it",
            slot.name,
            worker.pid,
            code,
        )
        for attempt in itertools.count():
            model = slot.model
            assert model is not None
            try:
                replacement = await WorkerProcess.start(self.spec, slot.name, model)
            except WorkerStartError as error:
                pause = RESTART_BACKOFF_SECONDS[min(attempt, len(RESTART_BACKOFF_SECONDS) - 1)]
                logger.error("%s; trying again in %.0f s", error, pause)
                await asyncio.sleep(pause)
                continue
            if self._closing:
                await replacement.shutdown()
                return
            if slot.model != model:  # swapped meanwhile: the new set already serves here
                await replacement.shutdown()
                return
            self._serve(slot, replacement, model)
            logger.warning("Assistant worker %s is back (pid %d)", slot.name, replacement.pid)
            return

    async def _on(self, slot: _Slot, call: Callable[[WorkerProcess], Awaitable[T]]) -> T:
        """``call`` on ``slot``'s worker (or a live sibling while it restarts); sent once more
        if that worker dies with it in flight."""
        try:
            return await call(await self._worker_for(slot))
        except WorkerGoneError:
            logger.warning(
                "Assistant worker %s died with a request in flight; sending it again", slot.name
            )
        return await call(await self._worker_for(slot))

    async def _worker_for(self, slot: _Slot) -> WorkerProcess:
        """``slot``'s live worker; while it restarts, the next live one (the conversation's
        calls still come one at a time from the service, so Rasa's order holds); with none
        live, wait for ``slot``'s replacement."""
        for candidate in self._slots[slot.index :] + self._slots[: slot.index]:
            worker = candidate.worker
            if candidate.ready.is_set() and worker is not None and not worker.gone.is_set():
                return worker
        return await slot.current()

    def _slot(self, conversation_id: str) -> _Slot:
        return self._slots[worker_index(conversation_id, len(self._slots))]

    # AssistantApi ------------------------------------------------------------------------------

    async def parse(self, text: str) -> dict[str, Any]:
        slot = self._slots[next(self._round_robin)]
        return await self._on(slot, lambda worker: worker.parse(text))

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
        return await self._on(
            self._slot(conversation_id),
            lambda worker: worker.respond(
                conversation_id,
                text,
                input_channel=input_channel,
                message_id=message_id,
                metadata=metadata,
                parse_data=parse_data,
            ),
        )

    async def preview(
        self,
        conversation_id: str,
        text: str,
        *,
        parse_data: dict[str, Any],
        undo_last_turn: bool = False,
    ) -> BotTurn:
        return await self._on(
            self._slot(conversation_id),
            lambda worker: worker.preview(
                conversation_id, text, parse_data=parse_data, undo_last_turn=undo_last_turn
            ),
        )

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
        return await self._on(
            self._slot(conversation_id),
            lambda worker: worker.log_without_answer(
                conversation_id,
                text,
                input_channel=input_channel,
                message_id=message_id,
                metadata=metadata,
                then=then,
                parse_data=parse_data,
            ),
        )

    async def append_to_tracker(
        self, conversation_id: str, changes: Sequence[TrackerChange]
    ) -> list[dict[str, Any]]:
        return await self._on(
            self._slot(conversation_id),
            lambda worker: worker.append_to_tracker(conversation_id, changes),
        )

    async def is_paused(self, conversation_id: str) -> bool:
        return await self._on(
            self._slot(conversation_id), lambda worker: worker.is_paused(conversation_id)
        )

    def intent_names(self) -> list[str]:
        return list(self._intents)

    def responses(self) -> dict[str, list[str]]:
        return {name: list(texts) for name, texts in self._responses.items()}
