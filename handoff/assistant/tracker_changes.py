"""What the conversation service records in Rasa's transcript, in the project's own terms.

The service never builds Rasa events itself: it says what happened (the bot was paused or
resumed, an agent said something) and the assistant turns it into Rasa's events
(:func:`handoff.assistant.rasa_assistant.to_rasa_events`). This module imports no Rasa, so a
fake assistant in tests speaks the same vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["AgentSaid", "BotPaused", "BotResumed", "TrackerChange", "TurnReverted"]


@dataclass(frozen=True)
class BotPaused:
    """The conversation went to a person: Rasa stops predicting (``ConversationPaused``, whose
    metadata says why: ``{"handoff": {"reason": ...}}``)."""

    reason: str = ""


@dataclass(frozen=True)
class BotResumed:
    """The conversation came back to the bot (``ConversationResumed``, metadata
    ``{"handoff": {"outcome": ...}}``). ``outcome`` ``handed_back``: an active form asks its
    next question again; ``closed``: an active form is ended (the conversation is over)."""

    outcome: str = "handed_back"


@dataclass(frozen=True)
class AgentSaid:
    """An agent's reply, kept in Rasa's transcript as a bot utterance (``BotUttered``) whose
    metadata says who wrote it."""

    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TurnReverted:
    """The bot's last turn is undone: the user's last message and everything after it leave
    the tracker (``UserUtteranceReverted``), e.g. before the answer an agent chose instead of
    a held one."""


TrackerChange = BotPaused | BotResumed | AgentSaid | TurnReverted
