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

from handoff.assistant.interface import BotTurn, ModelInfo
from handoff.assistant.tracker_changes import (
    AgentSaid,
    BotPaused,
    BotResumed,
    TrackerChange,
    TurnReverted,
)
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


@dataclass(frozen=True)
class ScriptedAction:
    """What a custom action does when an intent's answer runs it: ``pauses`` (it returns
    ``ConversationPaused``: a handoff by the action), ``fails`` (the action server is
    unreachable), ``slots`` it sets, and ``form``: the form it leaves active (asked again after
    a hand-back with ``ask``)."""

    name: str
    pauses: bool = False
    fails: bool = False
    slots: Mapping[str, Any] = field(default_factory=dict)
    form: str | None = None
    ask: str = ""


@dataclass(frozen=True)
class FormAsked:
    """A form asked its next question again after a hand-back (no user message)."""

    form: str
    text: str


TrackerRecord = UserLogged | BotAnswered | BotPaused | BotResumed | AgentSaid | FormAsked


class FakeAssistant:
    """The assistant boundary, scripted. ``nlu``: exact text -> ``[(intent, confidence)]``;
    ``answers``: intent -> bot messages (dicts with ``text``); ``actions``: intent -> the custom
    action its answer runs after the messages; ``intents``: what the model knows (default: every
    scripted intent)."""

    def __init__(
        self,
        nlu: Mapping[str, Sequence[tuple[str, float]]],
        answers: Mapping[str, Sequence[dict[str, Any]]],
        intents: Sequence[str] | None = None,
        fallback_threshold: float = FALLBACK_THRESHOLD,
        actions: Mapping[str, ScriptedAction] | None = None,
    ) -> None:
        self.nlu = dict(nlu)
        self.answers = dict(answers)
        self.actions = dict(actions or {})
        self.slots: dict[str, dict[str, Any]] = defaultdict(dict)
        self.forms: dict[str, ScriptedAction] = {}
        """The form each conversation has active, and how it asks again."""
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
    ) -> BotTurn:
        parse_data = parse_data if parse_data is not None else await self.parse(text)
        paused = await self.is_paused(conversation_id)
        self._log(conversation_id, text, message_id, parse_data, answered=not paused)
        if paused:  # Rasa predicts nothing in a paused conversation
            return BotTurn()
        intent = parse_data["intent"]["name"]
        replies = [dict(reply) for reply in self.answers.get(intent, [])]
        self.tracker[conversation_id] += [BotAnswered(reply.get("text", "")) for reply in replies]
        action = self.actions.get(intent)
        if action is None:
            return BotTurn(messages=replies, slots=dict(self.slots[conversation_id]))
        if action.fails:
            failure = {"name": action.name, "error": "Failed to execute custom action"}
            return BotTurn(
                messages=replies,
                actions=[{"name": action.name, "events": []}],
                slots=dict(self.slots[conversation_id]),
                failed_actions=[failure],
            )
        self.slots[conversation_id].update(action.slots)
        events: list[dict[str, Any]] = [
            {"slot": name, "value": value} for name, value in action.slots.items()
        ]
        if action.form:
            self.forms[conversation_id] = action
            events.append({"active_loop": action.form})
        if action.pauses:
            self.tracker[conversation_id].append(BotPaused("action"))
            events.append({"paused": True})
        return BotTurn(
            messages=replies,
            actions=[{"name": action.name, "events": events}],
            slots=dict(self.slots[conversation_id]),
            active_loop=action.form,
            handed_off_by=action.name if action.pauses else None,
        )

    async def preview(
        self,
        conversation_id: str,
        text: str,
        *,
        parse_data: dict[str, Any],
        undo_last_turn: bool = False,
    ) -> BotTurn:
        intent = parse_data["intent"]["name"]
        replies = [dict(reply) for reply in self.answers.get(intent, [])]
        action = self.actions.get(intent)
        stopped = [{"name": action.name, "events": []}] if action else []
        return BotTurn(messages=replies, actions=stopped)

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
        self._apply(conversation_id, then)
        return parse_data

    async def append_to_tracker(
        self, conversation_id: str, changes: Sequence[TrackerChange]
    ) -> list[dict[str, Any]]:
        self._apply(conversation_id, changes)
        last = changes[-1] if changes else None
        form = self.forms.get(conversation_id)
        if not isinstance(last, BotResumed) or form is None or form.form is None:
            return []
        if last.outcome != "handed_back":
            del self.forms[conversation_id]  # a close ends the form
            return []
        self.tracker[conversation_id].append(FormAsked(form.form, form.ask))
        return [{"text": form.ask}]

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

    def _apply(self, conversation_id: str, changes: Sequence[TrackerChange]) -> None:
        """Add ``changes`` to the tracker; a :class:`TurnReverted` removes the last user
        message and what followed it, as Rasa's ``UserUtteranceReverted`` does."""
        records = self.tracker[conversation_id]
        for change in changes:
            if isinstance(change, TurnReverted):
                users = [i for i, r in enumerate(records) if isinstance(r, UserLogged)]
                if users:
                    del records[users[-1] :]
            else:
                records.append(change)

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
