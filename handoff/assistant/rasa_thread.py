"""The thread where all Rasa work runs, so that the server's event loop never waits for it.

Rasa's NLU and policy predictions are synchronous TensorFlow calls of several milliseconds
each, made from inside Rasa's coroutines; on the server's loop they would hold up every
websocket frame behind them. :class:`RasaWorker` runs such coroutines on a second event loop in
its own thread; the caller awaits the result as usual. Rasa work is thereby also serialised on
one thread: the model graph is never run from two threads at once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["RasaWorker", "shared_worker"]

T = TypeVar("T")


class RasaWorker:
    """An event loop in a daemon thread. :meth:`run` awaits a coroutine executed there."""

    def __init__(self, name: str = "rasa") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()

    async def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the worker's loop; cancelling the caller cancels it there."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return await asyncio.wrap_future(future)

    def stop(self) -> None:
        """Stop the loop (pending work is abandoned), wait for the thread, close the loop."""
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()


_shared: RasaWorker | None = None
_shared_lock = threading.Lock()


def shared_worker() -> RasaWorker:
    """The process's Rasa thread, started on first use (all loaded models share it)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = RasaWorker()
        return _shared
