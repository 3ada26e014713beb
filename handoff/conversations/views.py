"""What agents are shown of conversations: messages, transcripts, the queue. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from handoff.storage.records import Message, QueuedConversation, StoredConversation

__all__ = ["message_view", "queue_view", "transcript_view"]

QUEUE_INTENTS = 3
"""Intent guesses shown per queued conversation."""


def message_view(message: Message) -> dict[str, Any]:
    """A stored message as the console shows it."""
    return {
        "message_id": message.id,
        "sender": message.sender,
        "text": message.text,
        "intents": message.intent_ranking,
        "agent_id": message.agent_id,
        "response_name": message.response_name,
        "created_at": message.created_at,
        "turn": message.turn,
    }


def transcript_view(
    stored: StoredConversation, messages: Sequence[Message], labels: Mapping[int, Any]
) -> dict[str, Any]:
    """Everything said in a conversation, with intents, what the bot's actions did and
    agents' labels; ``slots`` and ``active_loop``: as the bot's last turn left them."""
    last_turn = next((m.turn for m in reversed(messages) if m.turn is not None), None) or {}
    return {
        "conversation_id": stored.conversation.id,
        "state": stored.conversation.state.value,
        "handoff_reason": stored.conversation.handoff_reason,
        "slots": last_turn.get("slots", {}),
        "active_loop": last_turn.get("active_loop"),
        "messages": [{**message_view(m), "label": labels.get(m.id)} for m in messages],
    }


def queue_view(queue: Sequence[QueuedConversation]) -> list[dict[str, Any]]:
    """The waiting conversations, first come first, as agents see the queue."""
    return [
        {
            "conversation_id": item.conversation_id,
            "position": position,
            "reason": item.reason,
            "queued_at": item.queued_at,
            "last_message": item.last_message.text if item.last_message else None,
            "intents": (item.last_message.intent_ranking or [])[:QUEUE_INTENTS]
            if item.last_message
            else [],
        }
        for position, item in enumerate(queue, start=1)
    ]
