"""The agent websockets open on this process, so that an account change can close them at once.

:class:`AgentConnections` knows each open ``/ws/agent`` socket with the account, role and
session it was opened with. :meth:`AgentConnections.close_agent` ends an agent's sockets here;
:func:`sign_out_event` asks every process to do the same through the hub (a ``control``
event, never stored), and :meth:`AgentConnections.follow` is the task that obeys it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from sanic.server.websockets.impl import WebsocketImplProtocol

from handoff.realtime.hub import CONTROL_AUDIENCE, Hub, ephemeral_event
from handoff.storage.records import Agent, Event

__all__ = [
    "ACCOUNT_DISABLED",
    "ROLE_CHANGED",
    "SESSION_ENDED",
    "AgentConnection",
    "AgentConnections",
    "SignOut",
    "sign_out_event",
]

logger = logging.getLogger(__name__)

SIGN_OUT = "sign_out"
"""Type of the control event that closes an agent's sockets on every process."""
CLOSE_GRACE_S = 2.0
"""How long a closed socket's handler may take to finish a frame it was handling."""


@dataclass(frozen=True)
class SignOut:
    """Why a socket is closed: its websocket close code and reason (see docs/protocol.md)."""

    code: int
    reason: str


ACCOUNT_DISABLED = SignOut(4001, "account_disabled")
ROLE_CHANGED = SignOut(4002, "role_changed")
SESSION_ENDED = SignOut(4003, "session_ended")
SIGN_OUTS = {s.code: s for s in (ACCOUNT_DISABLED, ROLE_CHANGED, SESSION_ENDED)}


@dataclass(eq=False)
class AgentConnection:
    """One open agent socket, as it was when it was opened."""

    agent_id: int
    role: str
    token_hash: str
    ws: WebsocketImplProtocol
    handler: asyncio.Task[object]
    """The task serving the socket (sanic's websocket handler)."""


def sign_out_event(agent_id: int, sign_out: SignOut) -> Event:
    """The control event that closes ``agent_id``'s sockets on every process (publish it)."""
    return ephemeral_event(
        CONTROL_AUDIENCE, SIGN_OUT, agent_id, None, code=sign_out.code, reason=sign_out.reason
    )


class AgentConnections:
    def __init__(self) -> None:
        self._open: set[AgentConnection] = set()

    def add(self, agent: Agent, token_hash: str, ws: WebsocketImplProtocol) -> AgentConnection:
        """Register the socket served by the current task; :meth:`remove` it when it ends."""
        handler = asyncio.current_task()
        assert handler is not None, "call from the task that serves the socket"
        connection = AgentConnection(agent.id, agent.role, token_hash, ws, handler)
        self._open.add(connection)
        return connection

    def remove(self, connection: AgentConnection) -> None:
        self._open.discard(connection)

    def snapshot(self) -> list[AgentConnection]:
        return list(self._open)

    async def close_agent(self, agent_id: int, sign_out: SignOut) -> int:
        """Close every socket of ``agent_id`` on this process; return how many there were."""
        return await self.close([c for c in self._open if c.agent_id == agent_id], sign_out)

    async def close(self, connections: Iterable[AgentConnection], sign_out: SignOut) -> int:
        """Close these sockets with ``sign_out``'s code and reason: no frame of theirs is read
        after this (even from a client that ignores the close), and each handler finishes."""
        closing = [c for c in connections if c in self._open]
        self._open.difference_update(closing)
        await asyncio.gather(*(_end(c, sign_out) for c in closing))
        if closing:
            logger.info(
                "Closed %d socket(s) of agent %d: %s",
                len(closing),
                closing[0].agent_id,
                sign_out.reason,
            )
        return len(closing)

    async def follow(self, hub: Hub) -> None:
        """Until cancelled: close the sockets that sign-out control events name."""
        subscription = hub.subscribe([CONTROL_AUDIENCE])
        try:
            while True:
                event = await subscription.get()
                sign_out = SIGN_OUTS.get(event.payload.get("code", 0))
                if event.type != SIGN_OUT or sign_out is None or event.agent_id is None:
                    logger.warning("Ignored an unknown control event %s", event.type)
                    continue
                try:
                    await self.close_agent(event.agent_id, sign_out)
                except Exception:
                    logger.exception("Could not close the sockets of agent %d", event.agent_id)
        finally:
            subscription.close()


async def _end(connection: AgentConnection, sign_out: SignOut) -> None:
    ws = connection.ws
    # Stops reading at once and sends the close frame (sanic's own immediate close).
    ws.end_connection(sign_out.code, sign_out.reason)
    if ws.recv_cancel is not None:  # waiting for a frame: end now, as on a client's close
        ws.recv_cancel.cancel()
    done, _ = await asyncio.wait([connection.handler], timeout=CLOSE_GRACE_S)
    if not done:  # it was handling a frame, then waited for one that cannot come
        connection.handler.cancel()
