"""What an account change does at once, on every server process.

- Disabled (``PATCH /api/agents/<username>`` or ``handoff agents disable``): its sessions end
  (:meth:`Store.update_agent`), its agent sockets close with ``4001 account_disabled``, and
  its conversations go back to the queue, the user told ``queued`` / ``agent_unavailable``.
- Role changed: its sessions end and its sockets close with ``4002 role_changed`` (a
  session keeps the rights it was signed in with); its conversations stay assigned.
- A socket whose session ended otherwise (signed out, expired) closes with
  ``4003 session_ended``.

The API calls :func:`apply_account_change`: it acts on its own process and tells the others
over the hub. The command line shares only the database, so every process also runs
:class:`AccountSweep`, which finds such changes within :data:`SWEEP_INTERVAL_S`.
"""

from __future__ import annotations

import asyncio
import logging
import time

from handoff.conversations.service import ConversationService
from handoff.realtime.agent_connections import (
    ACCOUNT_DISABLED,
    ROLE_CHANGED,
    SESSION_ENDED,
    AgentConnection,
    AgentConnections,
    SignOut,
    sign_out_event,
)
from handoff.realtime.hub import Hub
from handoff.storage.records import Agent
from handoff.storage.store import Store

__all__ = ["AccountSweep", "apply_account_change", "sign_out_for"]

logger = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 2.0
"""How often each process checks the accounts of its open agent sockets (changes made from
the command line take effect within this)."""
REQUEUE_REASON = "agent_unavailable"
"""``reason`` of the ``queued`` notice a disabled agent's users get."""


def sign_out_for(opened_as_role: str, account: Agent | None) -> SignOut | None:
    """Why a socket opened with role ``opened_as_role`` must close now that the account is
    ``account`` (None: deleted), or None if it may stay open."""
    if account is None or account.disabled:
        return ACCOUNT_DISABLED
    if account.role != opened_as_role:
        return ROLE_CHANGED
    return None


async def apply_account_change(
    before: Agent,
    after: Agent,
    connections: AgentConnections,
    hub: Hub,
    service: ConversationService,
) -> None:
    """Carry out a stored account change (its sessions already ended): close its sockets here
    and, through the hub, on the other processes; requeue a disabled agent's conversations."""
    sign_out = sign_out_for(before.role, after)
    if sign_out is None:
        return
    hub.publish([sign_out_event(after.id, sign_out)])
    await connections.close_agent(after.id, sign_out)
    if after.disabled:
        await service.requeue_all(after, REQUEUE_REASON)


class AccountSweep:
    """Closes this process's agent sockets whose account or session changed, and requeues
    the conversations of accounts found newly disabled (all processes may do it at once:
    :meth:`ConversationService.requeue_all` is idempotent)."""

    def __init__(
        self, connections: AgentConnections, store: Store, service: ConversationService
    ) -> None:
        self.connections = connections
        self.store = store
        self.service = service
        self._disabled: set[int] | None = None
        """Accounts disabled at the last sweep (None: no sweep yet, so all are new)."""

    async def run(self) -> None:
        """Sweep every :data:`SWEEP_INTERVAL_S` until cancelled."""
        while True:
            try:
                await self.sweep()
            except Exception:
                logger.exception("Could not check the accounts of signed-in agents")
            await asyncio.sleep(SWEEP_INTERVAL_S)

    async def sweep(self) -> None:
        """One pass: a single query over the accounts and this process's open sessions."""
        open_ = self.connections.snapshot()
        agents, live_sessions = await self.store.account_states(
            [c.token_hash for c in open_], time.time()
        )
        for connection in open_:
            sign_out = _sign_out_of(connection, agents.get(connection.agent_id), live_sessions)
            if sign_out is not None:
                await self.connections.close([connection], sign_out)
        disabled = {agent.id for agent in agents.values() if agent.disabled}
        newly = disabled - (self._disabled or set())
        for agent_id in sorted(newly):
            requeued = await self.service.requeue_all(agents[agent_id], REQUEUE_REASON)
            if requeued:
                logger.info("Requeued %d conversation(s) of disabled agent %d", requeued, agent_id)
        self._disabled = disabled


def _sign_out_of(
    connection: AgentConnection, agent: Agent | None, live_sessions: set[str]
) -> SignOut | None:
    account_change = sign_out_for(connection.role, agent)
    if account_change is None and connection.token_hash not in live_sessions:
        return SESSION_ENDED
    return account_change
