"""One action at a time per conversation: in-process locks, or Redis locks shared by several
server processes (a user on one process, their agent on another)."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from handoff.core.errors import HandoffError

__all__ = ["ConversationLocks", "LockTimeout", "RedisConversationLocks"]

logger = logging.getLogger(__name__)

REDIS_LOCK_TTL_S = 30.0
"""A lock whose holder died (SIGKILL) frees itself after this long."""
REDIS_LOCK_WAIT_S = 30.0
REDIS_LOCK_POLL_S = 0.005


class LockTimeout(HandoffError, RuntimeError):
    """A conversation stayed locked by another process for too long; retry the action."""

    code = "conversation_busy"


class ConversationLocks:
    """In-process: an ``asyncio.Lock`` per conversation with work in flight."""

    def __init__(self) -> None:
        # Unused locks are garbage-collected.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    @asynccontextmanager
    async def hold(self, conversation_id: str) -> AsyncIterator[None]:
        lock = self._locks.get(conversation_id)
        if lock is None:
            lock = self._locks[conversation_id] = asyncio.Lock()
        async with lock:
            yield


class RedisConversationLocks(ConversationLocks):
    """Across processes: the in-process lock first (one waiter per process polls Redis), then a
    Redis lock with a time-to-live, so a killed holder cannot block a conversation for ever."""

    def __init__(self, redis: Any, namespace: str) -> None:
        super().__init__()
        self.redis = redis
        self.namespace = namespace

    @asynccontextmanager
    async def hold(self, conversation_id: str) -> AsyncIterator[None]:
        async with super().hold(conversation_id):
            lock = self.redis.lock(
                f"{self.namespace}:lock:{conversation_id}",
                timeout=REDIS_LOCK_TTL_S,
                sleep=REDIS_LOCK_POLL_S,
                blocking_timeout=REDIS_LOCK_WAIT_S,
            )
            if not await lock.acquire():
                raise LockTimeout(f"conversation {conversation_id} is busy; try again")
            try:
                yield
            finally:
                try:
                    await lock.release()
                except Exception:  # expired meanwhile: nothing to release
                    logger.warning("Lock of conversation %s had expired", conversation_id)
