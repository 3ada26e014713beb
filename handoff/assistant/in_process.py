"""The assistant inside the server process (``HANDOFF_ASSISTANT_WORKERS=0``).

What Rasa's own HTTP API needs (its handlers call the agent directly), and the baseline the
worker processes are measured against. The model loads and swaps in the server's interpreter,
so a hot swap slows every reply while it lasts; with workers it does not.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from handoff.assistant.endpoints import read_endpoints
from handoff.assistant.heap import freeze_heap
from handoff.assistant.rasa_assistant import Assistant, redis_lock_store

__all__ = ["RETIRED_MODEL_GRACE_SECONDS", "InProcessAssistant"]

logger = logging.getLogger(__name__)

RETIRED_MODEL_GRACE_SECONDS = 60.0
"""How long a swapped-out model keeps its database connection for messages it still answers."""


class InProcessAssistant:
    """Loads and swaps Rasa models in this process; :attr:`api` is the one serving."""

    def __init__(
        self,
        tracker_database_url: str,
        fallback_threshold: float | None,
        redis_url: str | None = None,
        redis_namespace: str = "handoff",
        endpoints: Path | None = None,
    ) -> None:
        """``endpoints``: the project's endpoints.yml (read at each load)."""
        self.tracker_database_url = tracker_database_url
        self.endpoints = endpoints
        self.fallback_threshold = fallback_threshold
        self.redis_url, self.redis_namespace = redis_url, redis_namespace
        self._current: Assistant | None = None
        self._retiring: set[asyncio.Task[Any]] = set()

    @property
    def api(self) -> Assistant:
        """The assistant serving now (after :meth:`start`)."""
        if self._current is None:
            raise RuntimeError("InProcessAssistant.api before start()")
        return self._current

    @property
    def agent(self) -> Any:
        """Rasa's agent serving now, for Rasa's HTTP API."""
        return self.api.agent

    async def start(self, model: Path) -> None:
        lock_store = (
            redis_lock_store(self.redis_url, self.redis_namespace) if self.redis_url else None
        )
        self._current = await Assistant.load(
            model,
            self.tracker_database_url,
            self.fallback_threshold,
            lock_store=lock_store,
            endpoints=read_endpoints(self.endpoints),
        )
        freeze_heap()

    async def swap(self, model: Path) -> None:
        """Load ``model`` next to the serving one, then serve it. Messages being answered
        finish on the old model; nothing is refused meanwhile."""
        current = self.api
        new = await Assistant.load(
            model,
            self.tracker_database_url,
            self.fallback_threshold,
            shared_with=current,
            endpoints=read_endpoints(self.endpoints),
        )
        await new.parse("hello")  # the first prediction builds TensorFlow functions: not on a user
        self._current = new

        async def retire() -> None:
            await asyncio.sleep(RETIRED_MODEL_GRACE_SECONDS)
            await current.close()
            freeze_heap()  # the new model's objects; the old model's cycles are collected first

        task = asyncio.create_task(retire())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def health(self) -> dict[str, Any]:
        return {"workers": 0}

    async def close(self) -> None:
        for task in self._retiring:
            task.cancel()
        if self._current is not None:
            await self._current.close()
