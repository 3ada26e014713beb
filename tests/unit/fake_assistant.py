"""A scripted assistant that speaks :class:`handoff.assistant.interface.AssistantApi`, no model.

NLU is a table of exact texts to intent rankings (anything else gets a low-confidence ranking,
which the fallback threshold turns into ``nlu_fallback`` as Rasa's FallbackClassifier does);
answers are a table of intent to bot messages. Every call that Rasa would record in the
conversation's tracker is recorded in :attr:`FakeAssistant.tracker`, in order, so a test can
check that Rasa's transcript would be complete.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from handoff.assistant.interface import ModelInfo
from handoff.assistant.tracker_changes import AgentSaid, BotPaused, BotResumed, TrackerChange
from handoff.core.triggers import FALLBACK_INTENT

FALLBACK_THRESHOLD = 0.5
UNKNOWN_RANKING = (("greet", 0.2), ("check_balance", 0.1))
"""What an unscripted text parses to: below the fallback threshold."""


@dataclass(frozen=True)
class UserLogged:
    """A user message in the tracker; ``answered``: Rasa predicted the bot's answer to it."""

    text: str
    message_id: str | None
    intent: str | None
    answered: bool
    parse_data: dict[str, Any] = field(compare=False, repr=False)


@dataclass(frozen=True)
class BotAnswered:
    """A bot message the assistant produced (``BotUttered`` of the bot itself)."""

    text: str


TrackerRecord = UserLogged | BotAnswered | BotPaused | BotResumed | AgentSaid


class FakeAssistant:
    """The assistant boundary, scripted. ``nlu``: exact text -> ``[(intent, confidence)]``;
    ``answers``: intent -> bot messages (dicts with ``text``); ``intents``: what the model knows
    (default: every scripted intent)."""

    def __init__(
        self,
        nlu: Mapping[str, Sequence[tuple[str, float]]],
        answers: Mapping[str, Sequence[dict[str, Any]]],
        intents: Sequence[str] | None = None,
        fallback_threshold: float = FALLBACK_THRESHOLD,
    ) -> None:
        self.nlu = dict(nlu)
        self.answers = dict(answers)
        known = {name for ranking in self.nlu.values() for name, _ in ranking}
        self._intents = list(intents) if intents is not None else sorted(known)
        self.info = ModelInfo(
            name="fake.tar.gz",
            path=Path("fake.tar.gz"),
            fallback_threshold=fallback_threshold,
            load_seconds=0.0,
        )
        self.tracker: dict[str, list[TrackerRecord]] = defaultdict(list)
        """Each conversation's tracker as Rasa would hold it, in order."""
        self.parsed: list[str] = []
        """Every text NLU ran on (by :meth:`parse`, or by logging a message without parse data)."""

    # AssistantApi -----------------------------------------------------------------------------

    async def parse(self, text: str) -> dict[str, Any]:
        self.parsed.append(text)
        ranking: list[dict[str, Any]] = [
            {"name": name, "confidence": confidence}
            for name, confidence in self.nlu.get(text, UNKNOWN_RANKING)
        ]
        threshold = self.info.fallback_threshold or 0.0
        if ranking[0]["confidence"] < threshold:
            ranking.insert(0, {"name": FALLBACK_INTENT, "confidence": threshold})
        return {"text": text, "intent": ranking[0], "intent_ranking": ranking, "entities": []}

    async def respond(
        self,
        conversation_id: str,
        text: str,
        *,
        input_channel: str,
        message_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        parse_data: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        parse_data = parse_data if parse_data is not None else await self.parse(text)
        paused = await self.is_paused(conversation_id)
        self._log(conversation_id, text, message_id, parse_data, answered=not paused)
        if paused:  # Rasa predicts nothing in a paused conversation
            return []
        replies = [dict(reply) for reply in self.answers.get(parse_data["intent"]["name"], [])]
        self.tracker[conversation_id] += [BotAnswered(reply.get("text", "")) for reply in replies]
        return replies

    async def log_without_answer(
        self,
        conversation_id: str,
        text: str,
        *,
        input_channel: str,
        message_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        then: Sequence[TrackerChange] = (),
        parse_data: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        parse_data = parse_data if parse_data is not None else await self.parse(text)
        self._log(conversation_id, text, message_id, parse_data, answered=False)
        self.tracker[conversation_id] += list(then)
        return parse_data

    async def append_to_tracker(
        self, conversation_id: str, changes: Sequence[TrackerChange]
    ) -> None:
        self.tracker[conversation_id] += list(changes)

    async def is_paused(self, conversation_id: str) -> bool:
        return self.paused(conversation_id)

    def intent_names(self) -> list[str]:
        return list(self._intents)

    def responses(self) -> dict[str, list[str]]:
        return {
            f"utter_{intent}": [reply["text"] for reply in replies if reply.get("text")]
            for intent, replies in self.answers.items()
        }

    # For tests ------------------------------------------------------------------------------

    def paused(self, conversation_id: str) -> bool:
        """Whether the last pause or resume in the tracker is a pause (as Rasa decides)."""
        for record in reversed(self.tracker.get(conversation_id, [])):
            if isinstance(record, (BotPaused, BotResumed)):
                return isinstance(record, BotPaused)
        return False

    def changes(self, conversation_id: str) -> list[TrackerRecord]:
        """The tracker of ``conversation_id`` (empty if it has none)."""
        return list(self.tracker.get(conversation_id, []))

    def _log(
        self,
        conversation_id: str,
        text: str,
        message_id: str | None,
        parse_data: dict[str, Any],
        answered: bool,
    ) -> None:
        intent = (parse_data.get("intent") or {}).get("name")
        self.tracker[conversation_id].append(
            UserLogged(text, message_id, intent, answered, parse_data)
        )
