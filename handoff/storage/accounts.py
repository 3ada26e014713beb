"""Agent accounts and their sign-in sessions: the :class:`Accounts` part of
:class:`handoff.storage.store.Store` (use it through ``Store``, which mixes it in)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from handoff.storage import schema
from handoff.storage.records import Agent, agent_from_row

__all__ = ["Accounts"]


class Accounts:
    """Agents and sessions, each method one transaction on ``self.engine`` (set by
    :class:`~handoff.storage.store.Store`)."""

    engine: AsyncEngine

    async def add_agent(
        self, username: str, display_name: str, password_hash: str, role: str
    ) -> Agent:
        async with self.engine.begin() as db:
            result = await db.execute(
                schema.agents.insert().values(
                    username=username,
                    display_name=display_name,
                    password_hash=password_hash,
                    role=role,
                    disabled=False,
                    created_at=time.time(),
                )
            )
            agent_id = result.inserted_primary_key[0]
            row = (
                await db.execute(schema.agents.select().where(schema.agents.c.id == agent_id))
            ).one()
        return agent_from_row(row)

    async def agent_by_username(self, username: str) -> Agent | None:
        async with self.engine.connect() as db:
            row = (
                await db.execute(schema.agents.select().where(schema.agents.c.username == username))
            ).first()
        return agent_from_row(row) if row else None

    async def agent_by_id(self, agent_id: int) -> Agent | None:
        async with self.engine.connect() as db:
            row = (
                await db.execute(schema.agents.select().where(schema.agents.c.id == agent_id))
            ).first()
        return agent_from_row(row) if row else None

    async def list_agents(self) -> list[Agent]:
        async with self.engine.connect() as db:
            rows = await db.execute(schema.agents.select().order_by(schema.agents.c.username))
        return [agent_from_row(row) for row in rows]

    async def update_agent(self, agent_id: int, **values: Any) -> None:
        """Change ``display_name``, ``password_hash``, ``role`` or ``disabled``. Disabling the
        account or changing its role ends its sessions (a session keeps the rights it was
        signed in with)."""
        allowed = {"display_name", "password_hash", "role", "disabled"}
        if not set(values) <= allowed:
            raise ValueError(f"cannot update {sorted(set(values) - allowed)}")
        async with self.engine.begin() as db:
            role = (
                await db.execute(
                    sa.select(schema.agents.c.role).where(schema.agents.c.id == agent_id)
                )
            ).scalar()
            await db.execute(
                schema.agents.update().where(schema.agents.c.id == agent_id).values(**values)
            )
            if values.get("disabled") or values.get("role", role) != role:
                await db.execute(
                    schema.agent_sessions.delete().where(
                        schema.agent_sessions.c.agent_id == agent_id
                    )
                )

    async def add_session(self, token_hash: str, agent_id: int, expires_at: float) -> None:
        async with self.engine.begin() as db:
            await db.execute(
                schema.agent_sessions.insert().values(
                    token_hash=token_hash,
                    agent_id=agent_id,
                    created_at=time.time(),
                    expires_at=expires_at,
                )
            )

    async def session_agent(self, token_hash: str, now: float) -> Agent | None:
        """The enabled agent of an unexpired session, else None."""
        query = (
            sa.select(schema.agents)
            .join(schema.agent_sessions, schema.agent_sessions.c.agent_id == schema.agents.c.id)
            .where(
                schema.agent_sessions.c.token_hash == token_hash,
                schema.agent_sessions.c.expires_at > now,
                schema.agents.c.disabled.is_(False),
            )
        )
        async with self.engine.connect() as db:
            row = (await db.execute(query)).first()
        return agent_from_row(row) if row else None

    async def account_states(
        self, token_hashes: Sequence[str], now: float
    ) -> tuple[dict[int, Agent], set[str]]:
        """Every account as stored now (by id), and which of ``token_hashes`` are sessions
        still open (unexpired): one query, for the sweep of open agent sockets."""
        sessions = schema.agent_sessions
        query = sa.select(schema.agents, sessions.c.token_hash).select_from(
            schema.agents.outerjoin(
                sessions,
                sa.and_(
                    sessions.c.agent_id == schema.agents.c.id,
                    sessions.c.token_hash.in_(list(token_hashes)),
                    sessions.c.expires_at > now,
                ),
            )
        )
        async with self.engine.connect() as db:
            rows = (await db.execute(query)).all()
        agents = {row.id: agent_from_row(row) for row in rows}
        return agents, {row.token_hash for row in rows if row.token_hash is not None}

    async def delete_session(self, token_hash: str) -> None:
        async with self.engine.begin() as db:
            await db.execute(
                schema.agent_sessions.delete().where(
                    schema.agent_sessions.c.token_hash == token_hash
                )
            )
