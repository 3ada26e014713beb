"""Who answers a conversation: the routing state machine. Pure: no I/O, no clock, no Rasa.

:func:`transition` takes a :class:`Conversation` and a command and returns the new conversation
and the effects the I/O layer must carry out, in order. An illegal command raises
:class:`IllegalTransition` (or its subclass :class:`NotAssignedToAgent`) and changes nothing.

States::

    BOT --HandoffRequested--> QUEUED --AgentClaimed--> ASSIGNED --HandedBack--> BOT
                                ^                         |  \\--Closed--> CLOSED --UserSaid--> BOT
                                +--Transferred(to=None)---+  (Transferred(to=agent) stays ASSIGNED)

In BOT an uncertain answer may wait for an agent's approval before it is sent; that is not a
state of its own (the conversation stays with the bot): see :mod:`handoff.core.approvals`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum

from handoff.core.errors import HandoffError

__all__ = [
    "AgentClaimed",
    "AgentReplied",
    "AssignmentChanged",
    "Closed",
    "Command",
    "Conversation",
    "DeliverToAgent",
    "DeliverToUser",
    "Effect",
    "ForwardToBot",
    "HandedBack",
    "HandoffReason",
    "HandoffRequested",
    "IllegalTransition",
    "NotAssignedToAgent",
    "NotifyUser",
    "PauseBot",
    "QueueChanged",
    "RecordWhilePaused",
    "ResumeBot",
    "State",
    "Transferred",
    "UserSaid",
    "transition",
    "why_agent_may_not_act",
]


class State(str, Enum):
    BOT = "bot"
    """The assistant answers."""
    QUEUED = "queued"
    """Handed off, waiting for an agent; the assistant is paused."""
    ASSIGNED = "assigned"
    """An agent answers; the assistant is paused."""
    CLOSED = "closed"
    """An agent closed the conversation; the next user message starts over with the bot."""


@dataclass(frozen=True)
class Conversation:
    id: str
    state: State = State.BOT
    agent_id: int | None = None
    """The agent it is assigned to (only in ASSIGNED)."""
    handoff_reason: str | None = None
    """Why the current or last handoff happened (a :class:`HandoffReason` value)."""


class HandoffReason(str, Enum):
    LOW_CONFIDENCE = "low_confidence"
    USER_ASKED = "user_asked"
    ALWAYS_HUMAN_INTENT = "always_human_intent"
    REPEATED_FALLBACK = "repeated_fallback"
    UNHELPFUL_ANSWER = "unhelpful_answer"
    ACTION = "action"
    """A custom action of the assistant handed off (it returned ``ConversationPaused``)."""
    ACTION_FAILED = "action_failed"
    """A custom action failed (e.g. the action server is unreachable): what the user asked for
    is not done, so a person takes over."""


# Commands ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class UserSaid:
    text: str


@dataclass(frozen=True)
class HandoffRequested:
    reason: HandoffReason


@dataclass(frozen=True)
class AgentClaimed:
    agent_id: int


@dataclass(frozen=True)
class AgentReplied:
    agent_id: int
    text: str


@dataclass(frozen=True)
class Transferred:
    agent_id: int
    to_agent_id: int | None
    """The agent who takes over, or None to put the conversation back in the queue."""


@dataclass(frozen=True)
class HandedBack:
    agent_id: int


@dataclass(frozen=True)
class Closed:
    agent_id: int


Command = (
    UserSaid | HandoffRequested | AgentClaimed | AgentReplied | Transferred | HandedBack | Closed
)


# Effects ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ForwardToBot:
    """Let the assistant answer the user's message."""


@dataclass(frozen=True)
class RecordWhilePaused:
    """Log and parse the user's message in the paused Rasa conversation; no bot answer."""


@dataclass(frozen=True)
class PauseBot:
    """Append Rasa's ``pause`` event."""


@dataclass(frozen=True)
class ResumeBot:
    """Append Rasa's ``resume`` event."""


@dataclass(frozen=True)
class DeliverToAgent:
    """Show the user's message to the assigned agent, or to everyone watching the queue."""

    agent_id: int | None


@dataclass(frozen=True)
class DeliverToUser:
    """Send the agent's reply to the user and log it as a bot utterance by that agent."""

    agent_id: int
    text: str


@dataclass(frozen=True)
class NotifyUser:
    """Tell the user about the handoff: ``queued``, ``agent_joined``, ``handed_back``,
    ``closed``."""

    event: str
    agent_id: int | None = None


@dataclass(frozen=True)
class QueueChanged:
    """The set of queued conversations changed: refresh every agent's queue view."""


@dataclass(frozen=True)
class AssignmentChanged:
    """The conversation was given to ``agent_id`` (None: taken away from ``previous``)."""

    agent_id: int | None
    previous_agent_id: int | None


Effect = (
    ForwardToBot
    | RecordWhilePaused
    | PauseBot
    | ResumeBot
    | DeliverToAgent
    | DeliverToUser
    | NotifyUser
    | QueueChanged
    | AssignmentChanged
)


class IllegalTransition(HandoffError):
    """The command is not allowed in the conversation's current state. Nothing changed.

    The message is ``why``, in words for the person who tried (no command or state names);
    ``conversation_id``, ``state`` and ``command`` say the rest."""

    code = "illegal_transition"

    def __init__(self, conversation: Conversation, command: Command, why: str) -> None:
        super().__init__(why)
        self.conversation_id = conversation.id
        self.state = conversation.state
        self.command = command


class NotAssignedToAgent(IllegalTransition):
    """An agent acted on a conversation that is not assigned to them."""

    code = "not_assigned"

    def __init__(self, conversation: Conversation, command: Command, why: str) -> None:
        super().__init__(conversation, command, f"this conversation is not assigned to you: {why}")


def why_agent_may_not_act(conversation: Conversation, agent_id: int) -> str | None:
    """Why ``agent_id`` may not act on ``conversation`` (reply, label, type, read it), or None
    if they may: the one assignment rule, for commands here and for the service's other
    agent actions."""
    if conversation.state is not State.ASSIGNED:
        return "it is not assigned to any agent"
    if conversation.agent_id != agent_id:
        return "it is assigned to another agent"
    return None


def transition(conversation: Conversation, command: Command) -> tuple[Conversation, list[Effect]]:
    """Apply ``command``; return the new conversation and the effects to carry out, in order."""
    state = conversation.state
    replace = dataclasses.replace

    if isinstance(command, UserSaid):
        if state in (State.BOT, State.CLOSED):
            return replace(conversation, state=State.BOT, agent_id=None), [ForwardToBot()]
        return conversation, [DeliverToAgent(conversation.agent_id), RecordWhilePaused()]

    if isinstance(command, HandoffRequested):
        if state not in (State.BOT, State.CLOSED):
            raise IllegalTransition(
                conversation, command, "this conversation is already handed off to a person"
            )
        queued = replace(
            conversation, state=State.QUEUED, agent_id=None, handoff_reason=command.reason.value
        )
        return queued, [PauseBot(), NotifyUser("queued"), QueueChanged()]

    if isinstance(command, AgentClaimed):
        if state is State.ASSIGNED:
            raise IllegalTransition(conversation, command, "another agent claimed it first")
        if state is not State.QUEUED:
            raise IllegalTransition(
                conversation, command, "this conversation is not waiting for an agent"
            )
        assigned = replace(conversation, state=State.ASSIGNED, agent_id=command.agent_id)
        return assigned, [
            AssignmentChanged(command.agent_id, None),
            NotifyUser("agent_joined", command.agent_id),
            QueueChanged(),
        ]

    # Every remaining command is an assigned agent acting on their conversation.
    why_not = why_agent_may_not_act(conversation, command.agent_id)
    if why_not is not None:
        raise NotAssignedToAgent(conversation, command, why_not)

    if isinstance(command, AgentReplied):
        return conversation, [DeliverToUser(command.agent_id, command.text)]

    if isinstance(command, Transferred):
        if command.to_agent_id == command.agent_id:
            raise IllegalTransition(
                conversation, command, "this conversation is already assigned to that agent"
            )
        if command.to_agent_id is None:
            requeued = replace(conversation, state=State.QUEUED, agent_id=None)
            return requeued, [
                AssignmentChanged(None, command.agent_id),
                NotifyUser("queued"),
                QueueChanged(),
            ]
        moved = replace(conversation, agent_id=command.to_agent_id)
        return moved, [
            AssignmentChanged(command.to_agent_id, command.agent_id),
            NotifyUser("agent_joined", command.to_agent_id),
        ]

    if isinstance(command, HandedBack):
        back = replace(conversation, state=State.BOT, agent_id=None)
        return back, [
            ResumeBot(),
            AssignmentChanged(None, command.agent_id),
            NotifyUser("handed_back"),
        ]

    closed = replace(conversation, state=State.CLOSED, agent_id=None)
    return closed, [ResumeBot(), AssignmentChanged(None, command.agent_id), NotifyUser("closed")]
