"""The rows :class:`handoff.storage.store.Store` returns, as frozen dataclasses, the events it
is given to append, its one error, and the functions that build records from result rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from handoff.core.errors import HandoffError
from handoff.core.routing import Conversation, State
from handoff.storage import schema

__all__ = [
    "Agent",
    "ConcurrentUpdate",
    "Event",
    "Message",
    "NewEvent",
    "QueuedConversation",
    "StoredConversation",
    "agent_from_row",
    "event_from_row",
    "message_from_row",
    "stored_from_row",
]


class ConcurrentUpdate(HandoffError):
    """Someone else changed the conversation first (e.g. two agents claiming at once)."""

    code = "concurrent_update"

    def __init__(self, conversation_id: str) -> None:
        super().__init__("someone else changed this conversation first; try again")
        self.conversation_id = conversation_id


@dataclass(frozen=True)
class Agent:
    id: int
    username: str
    display_name: str
    role: str
    disabled: bool
    password_hash: str

    @property
    def is_maintainer(self) -> bool:
        return self.role == "maintainer"


@dataclass(frozen=True)
class StoredConversation:
    conversation: Conversation
    version: int
    handoff_id: int | None
    fallback_streak: int
    updated_at: float


@dataclass(frozen=True)
class Message:
    id: int
    conversation_id: str
    handoff_id: int | None
    sender: str
    agent_id: int | None
    client_message_id: str | None
    text: str
    intent_ranking: list[dict[str, Any]] | None
    response_name: str | None
    created_at: float
    turn: dict[str, Any] | None = None
    """On a user message the bot answered: what its actions did and the slots after it."""


@dataclass(frozen=True)
class QueuedConversation:
    conversation_id: str
    reason: str | None
    queued_at: float
    last_message: Message | None
    """The last thing the user said, with its intent ranking."""


@dataclass(frozen=True)
class Event:
    id: int
    audience: str
    conversation_id: str | None
    agent_id: int | None
    type: str
    payload: dict[str, Any]
    created_at: float


@dataclass(frozen=True)
class NewEvent:
    """An event to append in the same transaction as the change it reports."""

    audience: str  # "user" or "agents"
    type: str
    payload: dict[str, Any]
    conversation_id: str | None = None
    agent_id: int | None = None


def agent_from_row(row: Any) -> Agent:
    """An :class:`Agent` from a row of ``agents`` (or a select with all its columns)."""
    return Agent(
        id=row.id,
        username=row.username,
        display_name=row.display_name,
        role=row.role,
        disabled=bool(row.disabled),
        password_hash=row.password_hash,
    )


def message_from_row(row: Any) -> Message:
    """A :class:`Message` from a row of ``messages``."""
    return Message(**{column.name: row._mapping[column.name] for column in schema.messages.c})


def event_from_row(row: Any) -> Event:
    """An :class:`Event` from a row of ``events``."""
    return Event(**{column.name: row._mapping[column.name] for column in schema.events.c})


def stored_from_row(row: Any) -> StoredConversation:
    """A :class:`StoredConversation` from a row of ``conversations``."""
    return StoredConversation(
        conversation=Conversation(
            id=row.id,
            state=State(row.state),
            agent_id=row.agent_id,
            handoff_reason=row.handoff_reason,
        ),
        version=row.version,
        handoff_id=row.handoff_id,
        fallback_streak=row.fallback_streak,
        updated_at=row.updated_at,
    )
