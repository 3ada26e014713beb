"""What the rest of the server asks of an assistant, with no Rasa in it.

:class:`AssistantApi` is the whole interface the conversation service (and the web layer) uses
of a loaded model; :class:`handoff.assistant.rasa_assistant.Assistant` implements it on Rasa,
and a fake one in the unit tests speaks it too. It is meant to become the interface between the
server and assistant worker processes, so every request carries plain data only: strings,
JSON-like dicts and :mod:`handoff.assistant.tracker_changes` values.

The requests:

``parse(text)``
    NLU only: ``{"text", "intent": {"name", "confidence"}, "intent_ranking": [...],
    "entities": [...]}``. Stores nothing; the service runs it once per user message in a
    bot-answered conversation and decides on the handoff from it (:func:`handoff.core.triggers.
    decide`).
``respond(conversation_id, text, *, input_channel, message_id, metadata, parse_data)``
    Log the user message in the conversation's tracker, predict and run the bot's actions
    (custom ones on the action server), and return a :class:`BotTurn`: the bot's messages in
    order (dicts with ``text`` and optionally ``buttons``, ``image``, ``custom``), the actions
    run with what they changed, the slots after the turn, whether an action handed off
    (returned ``ConversationPaused``) and which actions failed. With ``parse_data`` (the
    :meth:`~AssistantApi.parse` result) NLU is not run again.
``log_without_answer(conversation_id, text, *, input_channel, message_id, metadata, then,
parse_data)``
    Log the user message in the tracker without predicting an answer (as in a paused
    conversation), then append the ``then`` changes after it (e.g. :class:`BotPaused` when
    this message hands off). Returns the message's parse data.
``preview(conversation_id, text, *, parse_data, undo_last_turn)``
    What the bot would answer to ``text`` now, saving nothing and running no custom action
    (a :class:`BotTurn` whose ``actions`` name the action a preview stopped at, if any): the
    bot's answer as a draft for a person (an agent in a handoff, a corrected held answer).
``append_to_tracker(conversation_id, changes)``
    Record pause, resume or an agent's reply (:data:`TrackerChange`) in the tracker, in order.
    Returns the bot's messages this caused, usually none: a hand-back (``BotResumed`` with
    ``outcome="handed_back"``) into an active form asks the form's next question again.
``is_paused(conversation_id)``
    Whether the tracker says the bot is paused (a hand-back on another process may not have
    reached it yet).
``intent_names()`` / ``responses()``
    The model's intents, and its responses by name (their text variations). Cheap: no I/O.
``info``
    :class:`ModelInfo` of the loaded model.

Calls about one conversation must be applied in the order they are made (the service queues
them per conversation); calls about different conversations are independent.
:class:`AssistantHolder` is the server's handle on the assistant while it loads or swaps.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol

from typing_extensions import TypeVar

from handoff.assistant.tracker_changes import TrackerChange
from handoff.core.errors import HandoffError

__all__ = [
    "AssistantApi",
    "AssistantHolder",
    "AssistantNotReadyError",
    "AssistantRuntime",
    "BotTurn",
    "ModelInfo",
]


@dataclass(frozen=True)
class ModelInfo:
    """What is known about the loaded model, for /health and the logs."""

    name: str
    path: Path
    fallback_threshold: float | None
    """The FallbackClassifier's confidence threshold in force (None: the model has none)."""
    load_seconds: float


@dataclass(frozen=True)
class BotTurn:
    """What the assistant did with one user message (the result of ``respond``)."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    """The bot's messages, in order."""
    actions: list[dict[str, Any]] = field(default_factory=list)
    """The actions run other than listening and plain responses (custom actions, forms,
    Rasa's built-in ones), in order: ``{"name", "events": [...]}``, each event summarised as
    ``{"slot": name, "value": v}``, ``{"active_loop": name or None}``, ``{"paused": True}``,
    ``{"rejected": True}`` or ``{"followup": action}`` (Rasa's bookkeeping events are left
    out)."""
    slots: dict[str, Any] = field(default_factory=dict)
    """The slots that have a value after the turn."""
    active_loop: str | None = None
    """The form (or other loop) active after the turn."""
    handed_off_by: str | None = None
    """The action that handed the conversation to a person (it returned
    ``ConversationPaused``): Rasa's tracker is paused already."""
    failed_actions: list[dict[str, str]] = field(default_factory=list)
    """Actions that failed (``{"name", "error"}``): what they were to do is not done."""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BotTurn:
        return cls(
            messages=list(data.get("messages") or []),
            actions=list(data.get("actions") or []),
            slots=dict(data.get("slots") or {}),
            active_loop=data.get("active_loop"),
            handed_off_by=data.get("handed_off_by"),
            failed_actions=list(data.get("failed_actions") or []),
        )

    def detail(self) -> dict[str, Any] | None:
        """What agents are shown of the turn beside its messages (None: nothing to show)."""
        if not (self.actions or self.slots or self.failed_actions):
            return None
        detail: dict[str, Any] = {"actions": self.actions, "slots": self.slots}
        if self.active_loop:
            detail["active_loop"] = self.active_loop
        if self.failed_actions:
            detail["failed_actions"] = self.failed_actions
        return detail


class AssistantApi(Protocol):
    """A loaded assistant, as the service uses it (see the module docstring for each call)."""

    @property
    def info(self) -> ModelInfo: ...

    async def parse(self, text: str) -> dict[str, Any]:
        """NLU only: intent, intent_ranking, entities. Stores nothing."""
        ...

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
        """Answer one user message: the bot's messages and what its actions did."""
        ...

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
        """Log a user message with no answer, then ``then``; its parse data."""
        ...

    async def preview(
        self,
        conversation_id: str,
        text: str,
        *,
        parse_data: dict[str, Any],
        undo_last_turn: bool = False,
    ) -> BotTurn:
        """What the bot would answer now, saving nothing and running no custom action."""
        ...

    async def append_to_tracker(
        self, conversation_id: str, changes: Sequence[TrackerChange]
    ) -> list[dict[str, Any]]:
        """Record ``changes`` in the conversation's tracker, in order; the bot messages that
        causes (a resumed form asks again), usually none."""
        ...

    async def is_paused(self, conversation_id: str) -> bool:
        """Whether the conversation's tracker has the bot paused."""
        ...

    def intent_names(self) -> list[str]:
        """The intents the model knows."""
        ...

    def responses(self) -> dict[str, list[str]]:
        """The model's responses by name: their text variations."""
        ...


class AssistantRuntime(Protocol):
    """Where the assistant runs and how its model changes: worker processes
    (:class:`handoff.assistant.workers.AssistantWorkers`) or the server process itself
    (:class:`handoff.assistant.in_process.InProcessAssistant`)."""

    @property
    def api(self) -> AssistantApi:
        """What serves requests now (after :meth:`start`)."""
        ...

    async def start(self, model: Path) -> None:
        """Load ``model`` and serve it; returns when requests can be answered."""
        ...

    async def swap(self, model: Path) -> None:
        """Serve ``model`` instead, without refusing or stalling requests meanwhile."""
        ...

    async def close(self) -> None:
        """Stop, after what is in flight."""
        ...

    def health(self) -> dict[str, Any]:
        """What ``/health`` shows of it: ``workers`` (0: in the server process), and for
        workers their ``pids`` (None while one restarts) and ``restarts`` since start."""
        ...


class AssistantNotReadyError(HandoffError, RuntimeError):
    """The model is still loading (or failed to load); the message says which."""

    code = "not_ready"


A = TypeVar("A", bound=AssistantApi, default=AssistantApi)
"""What the holder holds: any :class:`AssistantApi` unless the owner says which (the server's
model loader holds the Rasa ``Assistant`` it swaps)."""


class AssistantHolder(Generic[A]):
    """The server's handle on the assistant while it loads in the background.

    Created before the model is loaded; request handlers ``await holder.get()``.
    """

    def __init__(self) -> None:
        self._assistant: A | None = None
        self._loaded = asyncio.Event()
        self.load_error: str | None = None

    @property
    def current(self) -> A | None:
        """The loaded assistant, or None while loading or after a failed load."""
        return self._assistant

    def set(self, assistant: A) -> None:
        """Serve ``assistant`` from now on. Messages already being answered finish with the
        assistant they started with."""
        self._assistant = assistant
        self.load_error = None
        self._loaded.set()

    def fail(self, error: str) -> None:
        self.load_error = error
        self._loaded.set()

    async def get(self, timeout: float | None = None) -> A:
        """Wait (up to ``timeout`` seconds) for the model; raise AssistantNotReadyError."""
        if not self._loaded.is_set():
            try:
                await asyncio.wait_for(self._loaded.wait(), timeout)
            except asyncio.TimeoutError:
                raise AssistantNotReadyError("the assistant's model is still loading") from None
        if self._assistant is None:
            raise AssistantNotReadyError(f"the assistant's model failed to load: {self.load_error}")
        return self._assistant
