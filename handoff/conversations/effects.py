"""Carrying out the routing state machine's effects: one handler per effect type.

:func:`plan` turns the effects :func:`handoff.core.routing.transition` returned into a
:class:`Plan`: the events each side is told (stored, then published), what Rasa's tracker
hears, the assignment to record, and whether the queue changed. Pure: the service writes the
plan in one transaction and does the I/O it names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from handoff.assistant.tracker_changes import AgentSaid, BotPaused, BotResumed, TrackerChange
from handoff.core.notices import notice
from handoff.core.routing import (
    AssignmentChanged,
    Closed,
    Command,
    DeliverToAgent,
    DeliverToUser,
    Effect,
    ForwardToBot,
    HandoffRequested,
    NotifyUser,
    PauseBot,
    QueueChanged,
    RecordWhilePaused,
    ResumeBot,
)
from handoff.storage.records import NewEvent

__all__ = ["Circumstances", "Plan", "agent_event", "plan", "user_event"]


def user_event(conversation_id: str, type_: str, **payload: Any) -> NewEvent:
    """An event for the user's socket; a ``handoff`` event gets its notice ``text``."""
    if type_ == "handoff":
        payload["text"] = notice(payload["status"], payload.get("agent", ""), payload.get("reason"))
    return NewEvent("user", type_, payload, conversation_id=conversation_id)


def agent_event(
    agent_id: int | None, type_: str, conversation_id: str | None = None, **payload: Any
) -> NewEvent:
    """An event for one agent's socket (``agent_id``) or for every agent (None)."""
    if conversation_id is not None:
        payload["conversation_id"] = conversation_id
    return NewEvent("agents", type_, payload, conversation_id=conversation_id, agent_id=agent_id)


@dataclass(frozen=True)
class Circumstances:
    """What the effects of one command need beyond the state machine."""

    conversation_id: str
    command: Command
    names: Mapping[int, str] = field(default_factory=dict)
    """Display names of the agents the command involves."""
    reason: str | None = None
    """Why the conversation is queued, or why its agent was unassigned."""
    agents_online: int = 1
    client_id: str | None = None
    """The client id of the message the command carries (a user's or an agent's)."""
    message: dict[str, Any] | None = None
    """The user's stored message, as agents see it (for :class:`DeliverToAgent`)."""
    response_name: str | None = None
    """The canned response an agent's reply came from, if any."""


@dataclass
class Plan:
    """What carrying out a command's effects stores and does."""

    events: list[NewEvent] = field(default_factory=list)
    tracker: list[TrackerChange] = field(default_factory=list)
    assignment: tuple[int | None, int | None] | None = None
    """(new agent, previous agent), to record with the conversation."""
    queue_changed: bool = False
    bot_answers: bool = False
    """The assistant answers the user's message."""
    record_while_paused: bool = False
    """Rasa logs and parses the user's message without answering (off the relay path)."""


def plan(effects: list[Effect], circumstances: Circumstances) -> Plan:
    """The plan that carries out ``effects``, in their order."""
    result = Plan()
    for effect in effects:
        HANDLERS[type(effect)](effect, circumstances, result)
    return result


def _forward_to_bot(_: Any, __: Circumstances, result: Plan) -> None:
    result.bot_answers = True


def _record_while_paused(_: Any, __: Circumstances, result: Plan) -> None:
    result.record_while_paused = True


def _pause_bot(_: Any, c: Circumstances, result: Plan) -> None:
    result.tracker.append(BotPaused(c.reason or ""))


def _resume_bot(_: Any, c: Circumstances, result: Plan) -> None:
    result.tracker.append(BotResumed("closed" if isinstance(c.command, Closed) else "handed_back"))


def _deliver_to_agent(effect: DeliverToAgent, c: Circumstances, result: Plan) -> None:
    if effect.agent_id is not None:  # a queued conversation's message waits in the queue view
        result.events.append(
            agent_event(effect.agent_id, "user_message", c.conversation_id, message=c.message)
        )


def _deliver_to_user(effect: DeliverToUser, c: Circumstances, result: Plan) -> None:
    name = c.names[effect.agent_id]
    result.events += [
        user_event(c.conversation_id, "agent", text=effect.text, agent=name),
        agent_event(
            effect.agent_id, "agent_message", c.conversation_id, id=c.client_id, text=effect.text
        ),
    ]
    metadata: dict[str, Any] = {"agent_id": effect.agent_id, "agent_name": name}
    if c.response_name:
        metadata["response_name"] = c.response_name
    result.tracker.append(AgentSaid(effect.text, {"handoff": metadata}))


def _notify_user(effect: NotifyUser, c: Circumstances, result: Plan) -> None:
    if effect.event == "queued":
        result.events.append(
            user_event(c.conversation_id, "handoff", status="queued", reason=c.reason)
        )
        if isinstance(c.command, HandoffRequested) and c.agents_online == 0:
            result.events.append(user_event(c.conversation_id, "handoff", status="no_agents"))
        return
    # agent_joined names the agent who joined; handed_back and closed the one who acted.
    agent_id = effect.agent_id if effect.agent_id is not None else _actor(c.command)
    name = c.names[agent_id] if agent_id is not None else ""
    result.events.append(user_event(c.conversation_id, "handoff", status=effect.event, agent=name))


def _assignment_changed(effect: AssignmentChanged, c: Circumstances, result: Plan) -> None:
    result.assignment = (effect.agent_id, effect.previous_agent_id)
    if effect.previous_agent_id is not None:
        result.events.append(
            agent_event(effect.previous_agent_id, "unassigned", c.conversation_id, reason=c.reason)
        )
    if effect.agent_id is not None:
        extra = (
            {"transferred_by": c.names[effect.previous_agent_id]}
            if effect.previous_agent_id is not None
            else {}
        )
        result.events.append(agent_event(effect.agent_id, "assigned", c.conversation_id, **extra))


def _queue_changed(_: Any, __: Circumstances, result: Plan) -> None:
    result.queue_changed = True


def _actor(command: Command) -> int | None:
    agent_id = getattr(command, "agent_id", None)
    return agent_id if isinstance(agent_id, int) else None


HANDLERS: dict[type, Callable[[Any, Circumstances, Plan], None]] = {
    ForwardToBot: _forward_to_bot,
    RecordWhilePaused: _record_while_paused,
    PauseBot: _pause_bot,
    ResumeBot: _resume_bot,
    DeliverToAgent: _deliver_to_agent,
    DeliverToUser: _deliver_to_user,
    NotifyUser: _notify_user,
    AssignmentChanged: _assignment_changed,
    QueueChanged: _queue_changed,
}
"""One handler per effect type of :data:`handoff.core.routing.Effect`."""
