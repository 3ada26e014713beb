"""Which relayed messages still wait for Rasa's intent guesses, so NLU never lags without bound.

A message relayed to an agent is logged in Rasa's paused tracker a moment later, with Rasa's
NLU for its intent guesses. When NLU falls behind (a burst of users, a slow machine), a
conversation's older messages still waiting when a newer one arrives are logged *without*
NLU: the agent sees "no guesses" for them and the newest message is guessed next. No message
is parsed twice. Pure bookkeeping: the caller passes the clock.
"""

from __future__ import annotations

from typing import Any

__all__ = ["IntentGuesses", "unguessed_parse_data"]


def unguessed_parse_data(text: str) -> dict[str, Any]:
    """Parse data for a message logged in Rasa's tracker without NLU (no intent, no entities)."""
    return {"text": text, "intent": {"name": None, "confidence": 0.0}, "entities": []}


class IntentGuesses:
    """Relayed messages waiting for their guesses, per conversation."""

    def __init__(self) -> None:
        self._newest: dict[str, int] = {}
        self._waiting_since: dict[int, float] = {}
        self.skipped = 0
        """Messages logged without NLU because a newer one of their conversation waited."""

    def relayed(self, conversation_id: str, message_id: int, now: float) -> None:
        """``message_id`` was relayed at ``now`` and waits for its guesses."""
        self._newest[conversation_id] = message_id
        self._waiting_since[message_id] = now

    def superseded(self, conversation_id: str, message_id: int) -> bool:
        """Whether a newer message of the conversation waits too (then skip this one's NLU)."""
        newest = self._newest.get(conversation_id)
        superseded = newest is not None and newest != message_id
        if superseded:
            self.skipped += 1
        return superseded

    def done(self, conversation_id: str, message_id: int) -> None:
        """``message_id`` was logged in Rasa's tracker (guessed or not)."""
        self._waiting_since.pop(message_id, None)
        if self._newest.get(conversation_id) == message_id:
            del self._newest[conversation_id]

    def lag_seconds(self, now: float) -> float:
        """How long the oldest message still waiting has waited (0 when none waits)."""
        return max(0.0, now - min(self._waiting_since.values())) if self._waiting_since else 0.0
