"""Rasa tracker work in order per conversation, off the relay path.

NLU of relayed messages, pauses, resumes and agents' utterances reach Rasa's tracker in the
order they happened in the conversation, but nobody waits for them: each job runs after the
ones queued before it for the same conversation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

__all__ = ["TrackerOrder"]

logger = logging.getLogger(__name__)


class TrackerOrder:
    """A chain of tracker jobs per conversation (in-process: with several processes,
    Rasa's lock store orders what each process sends)."""

    def __init__(self) -> None:
        self._tail: dict[str, asyncio.Task[None]] = {}

    def then(self, conversation_id: str, job: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Run ``job`` after the jobs queued before it for ``conversation_id``; a failing job
        is logged and does not stop the ones after it."""
        previous = self._tail.get(conversation_id)

        async def run() -> None:
            if previous is not None:
                await asyncio.wait([previous])
            try:
                await job()
            except Exception:
                logger.exception("Rasa tracker update of %s failed", conversation_id)

        task = asyncio.create_task(run())
        self._tail[conversation_id] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._tail.get(conversation_id) is done:
                del self._tail[conversation_id]

        task.add_done_callback(forget)
        return task

    async def drain(self, timeout: float) -> None:
        """Wait (up to ``timeout`` s) for every queued job, e.g. before shutting down."""
        tails = list(self._tail.values())
        if tails:
            await asyncio.wait(tails, timeout=timeout)

    async def caught_up(self, conversation_id: str) -> None:
        """Wait until every job queued so far for ``conversation_id`` has run."""
        tail = self._tail.get(conversation_id)
        if tail is not None:
            await asyncio.wait([tail])
