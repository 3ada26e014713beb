"""Bot answers held for approval (see :mod:`handoff.core.approvals`): created when the service
holds an answer, settled exactly once. Shares the engine of :class:`~handoff.storage.store.
Store`; each method is one transaction, rows come out as :class:`Approval`."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from handoff.storage import schema

__all__ = ["Approval", "ApprovalStore"]

A = schema.approvals.c


@dataclass(frozen=True)
class Approval:
    id: int
    conversation_id: str
    message_id: int
    client_id: str
    draft: list[dict[str, Any]]
    predicted_intent: str
    confidence: float
    agent_id: int
    status: str
    decided_by: int | None
    intent: str | None
    reply: str | None
    created_at: float
    deadline_at: float
    settled_at: float | None

    @property
    def pending(self) -> bool:
        return self.status == "pending"


def _approval(row: Any) -> Approval:
    return Approval(**{column.name: row._mapping[column.name] for column in schema.approvals.c})


class ApprovalStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def hold(
        self,
        *,
        conversation_id: str,
        message_id: int,
        client_id: str,
        draft: Sequence[dict[str, Any]],
        predicted_intent: str,
        confidence: float,
        agent_id: int,
        timeout_s: float,
    ) -> Approval:
        """Record a held answer, asked of ``agent_id`` until ``timeout_s`` from now."""
        now = time.time()
        values = {
            "conversation_id": conversation_id,
            "message_id": message_id,
            "client_id": client_id,
            "draft": list(draft),
            "predicted_intent": predicted_intent,
            "confidence": confidence,
            "agent_id": agent_id,
            "status": "pending",
            "created_at": now,
            "deadline_at": now + timeout_s,
        }
        async with self.engine.begin() as db:
            result = await db.execute(schema.approvals.insert().values(**values))
            approval_id = int(result.inserted_primary_key[0])
            row = (await db.execute(schema.approvals.select().where(A.id == approval_id))).one()
        return _approval(row)

    async def settle(
        self,
        approval_id: int,
        status: str,
        *,
        decided_by: int | None = None,
        intent: str | None = None,
        reply: str | None = None,
    ) -> Approval | None:
        """End a pending held answer with ``status``; None if it had ended already (another
        decision, the timeout or the user's next message came first: only one wins)."""
        async with self.engine.begin() as db:
            result = await db.execute(
                schema.approvals.update()
                .where(A.id == approval_id, A.status == "pending")
                .values(
                    status=status,
                    decided_by=decided_by,
                    intent=intent,
                    reply=reply,
                    settled_at=time.time(),
                )
            )
            if result.rowcount != 1:
                return None
            row = (await db.execute(schema.approvals.select().where(A.id == approval_id))).one()
        return _approval(row)

    async def get(self, approval_id: int) -> Approval | None:
        async with self.engine.connect() as db:
            row = (await db.execute(schema.approvals.select().where(A.id == approval_id))).first()
        return _approval(row) if row else None

    async def pending(self, conversation_id: str | None = None) -> list[Approval]:
        """Held answers not settled yet (of one conversation, or all), oldest first."""
        query = schema.approvals.select().where(A.status == "pending").order_by(A.id)
        if conversation_id is not None:
            query = query.where(A.conversation_id == conversation_id)
        async with self.engine.connect() as db:
            rows = await db.execute(query)
        return [_approval(row) for row in rows]

    async def pending_per_agent(self) -> Counter[int]:
        """How many held answers wait for each agent."""
        query = (
            sa.select(A.agent_id, sa.func.count()).where(A.status == "pending").group_by(A.agent_id)
        )
        async with self.engine.connect() as db:
            rows = await db.execute(query)
        return Counter({int(agent): int(count) for agent, count in rows})
