"""The Rasa assistant as the server uses it: load a trained model, answer one user message.

Thin I/O around ``rasa.core.agent.Agent``: loading runs in a worker thread (it takes tens of
seconds of TensorFlow graph building), every call into Rasa runs on the Rasa thread (see
:mod:`handoff.assistant.rasa_thread`), the tracker store is ours (see
:mod:`handoff.assistant.tracker_store`), and
Rasa's per-conversation lock serialises messages of one conversation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rasa.core.actions.action import (
    ActionBotResponse,
    ActionDeactivateLoop,
    action_for_name_or_text,
)
from rasa.core.agent import Agent
from rasa.core.brokers.broker import EventBroker
from rasa.core.channels.channel import CollectingOutputChannel, UserMessage
from rasa.core.lock_store import LockStore, RedisLockStore
from rasa.core.policies.policy import PolicyPrediction
from rasa.nlu.classifiers.fallback_classifier import (
    AMBIGUITY_THRESHOLD_KEY,
    THRESHOLD_KEY,
    FallbackClassifier,
)
from rasa.shared.constants import REQUIRED_SLOTS_KEY
from rasa.shared.core.constants import (
    ACTION_DEACTIVATE_LOOP_NAME,
    ACTION_LISTEN_NAME,
    REQUESTED_SLOT,
)
from rasa.shared.core.events import (
    ActionExecuted,
    ActiveLoop,
    BotUttered,
    ConversationPaused,
    ConversationResumed,
    Event,
    LoopInterrupted,
    SlotSet,
    UserUtteranceReverted,
)
from rasa.shared.core.trackers import DialogueStateTracker

from handoff.assistant.bot_turns import (
    bot_turn,
    collected,
    install_failure_probe,
    recording_failures,
    turn_start,
)
from handoff.assistant.endpoints import RasaEndpoints
from handoff.assistant.interface import (  # re-exported: they lived here before
    AssistantHolder as AssistantHolder,
)
from handoff.assistant.interface import (
    AssistantNotReadyError as AssistantNotReadyError,
)
from handoff.assistant.interface import BotTurn, ModelInfo
from handoff.assistant.model_files import (  # re-exported: they lived here before
    ModelNotFoundError as ModelNotFoundError,
)
from handoff.assistant.model_files import read_operating_threshold, resolve_model_path
from handoff.assistant.rasa_thread import RasaWorker, shared_worker
from handoff.assistant.tracker_changes import (
    AgentSaid,
    BotPaused,
    BotResumed,
    TrackerChange,
    TurnReverted,
)
from handoff.assistant.tracker_store import (
    ThreadedSQLTrackerStore,
    cache_event_types,
    unwrap_fail_safe,
)

__all__ = [
    "Assistant",
    "AssistantHolder",
    "AssistantNotReadyError",
    "ModelNotFoundError",
    "apply_fallback_threshold",
    "disable_fallback",
    "redis_lock_store",
    "resolve_model_path",
    "to_rasa_events",
]

logger = logging.getLogger(__name__)

PREVIEW_MAX_ACTIONS = 10
"""Actions a preview runs at most (Rasa's own circuit breaker stops loops too)."""
PREVIEW_SAFE_ACTIONS = (ActionBotResponse, ActionDeactivateLoop)
"""What a preview may run: responses (the default fallback is one) and ending a form; never
a custom action, a form or anything else that could change the world."""
HANDOFF_POLICY = "handoff"
"""The "policy" named in Rasa's tracker for actions the handoff runs itself (a form asked
again after a hand-back, ended after a close)."""


class Assistant:
    """A loaded Rasa agent plus the tracker store it writes to. Build with :meth:`load`."""

    def __init__(self, agent: Agent, info: ModelInfo, worker: RasaWorker | None = None) -> None:
        self.agent = agent
        self.info = info
        self.worker = worker or shared_worker()

    @classmethod
    async def load(
        cls,
        model_path: Path,
        database_url: str,
        fallback_threshold: float | None = None,
        shared_with: Assistant | None = None,
        lock_store: LockStore | None = None,
        endpoints: RasaEndpoints | None = None,
    ) -> Assistant:
        """Load the model at ``model_path`` (file or folder) with its tracker store on
        ``database_url``. Raises :class:`ModelNotFoundError` when there is no model.

        ``fallback_threshold``: the handoff threshold; None: the one ``handoff train`` chose
        for the model (:func:`~handoff.assistant.model_files.read_operating_threshold`), else
        the model's own. ``shared_with``: the assistant this one replaces; the new one shares
        its lock store, so a conversation's messages stay serialised across a model swap.
        ``lock_store``: Rasa's lock store for a first load (Rasa's in-memory one by default;
        Redis across processes). ``endpoints``: the project's endpoints.yml (custom actions,
        NLG server, event broker; see :mod:`handoff.assistant.endpoints`)."""
        started = time.perf_counter()
        model_file = resolve_model_path(model_path)
        cache_event_types()
        install_failure_probe()
        endpoints = endpoints or RasaEndpoints(None)
        worker = shared_worker()
        # Created on the Rasa thread's loop, where the tracker store will publish to it.
        broker = await worker.run(EventBroker.create(endpoints.event_broker))
        # A tracker store of its own: Rasa sets the store's domain while loading, which must
        # not change under the assistant still serving.
        store = await asyncio.to_thread(ThreadedSQLTrackerStore, database_url, event_broker=broker)
        if shared_with is not None:
            lock_store = shared_with.agent.lock_store
        agent = await asyncio.to_thread(
            Agent.load,
            str(model_file),
            tracker_store=store,
            lock_store=lock_store,
            action_endpoint=endpoints.action,
            generator=endpoints.nlg,
        )
        assert agent.processor is not None  # Agent.load always builds a processor
        # Agent wraps any store in FailSafeTrackerStore, which silently swaps in an in-memory
        # store on database errors; we want such errors to surface instead.
        agent.tracker_store = unwrap_fail_safe(agent.tracker_store)
        agent.processor.tracker_store = agent.tracker_store
        if fallback_threshold is None:  # an explicit setting wins over the chosen one
            fallback_threshold = read_operating_threshold(model_file)
        threshold = apply_fallback_threshold(agent, fallback_threshold)
        info = ModelInfo(
            name=model_file.name,
            path=model_file,
            fallback_threshold=threshold,
            load_seconds=time.perf_counter() - started,
        )
        logger.info("Loaded model %s in %.1f s", info.name, info.load_seconds)
        return cls(agent, info, worker)

    async def close(self) -> None:
        """Release the tracker store's database connection and the event broker (after the
        last message)."""
        store = self.agent.tracker_store
        if store.event_broker is not None:
            await self.worker.run(store.event_broker.close())
        if isinstance(store, ThreadedSQLTrackerStore):
            await asyncio.to_thread(store.engine.dispose)

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
        """Run one user message through Rasa: the bot's messages, in order (dicts with
        ``text`` and optionally ``buttons``, ``image``, ``custom``), and what its actions did
        (:class:`~handoff.assistant.interface.BotTurn`).

        ``parse_data``: the message's :meth:`parse` result, if the caller has it (NLU is then
        not run again).
        """
        collector = CollectingOutputChannel()
        message = UserMessage(
            text=text,
            output_channel=collector,
            sender_id=conversation_id,
            input_channel=input_channel,
            message_id=message_id,
            metadata=metadata,
            parse_data=parse_data,
        )
        return await self.worker.run(self._respond(message, collector))

    async def _respond(self, message: UserMessage, collector: CollectingOutputChannel) -> BotTurn:
        """Rasa's ``Agent.handle_message``, keeping the tracker to read the turn off it."""
        processor = self.agent.processor
        assert processor is not None
        async with self.agent.lock_store.lock(message.sender_id):
            with recording_failures() as failures:
                tracker = await processor.log_message(message, should_save_tracker=False)
                start = turn_start(tracker)
                tracker = await processor.run_action_extract_slots(collector, tracker)
                await processor._run_prediction_loop(collector, tracker)
                await processor.run_anonymization_pipeline(tracker)
                await processor.save_tracker(tracker)
        return bot_turn(tracker, start, collector.messages, failures)

    async def parse(self, text: str) -> dict[str, Any]:
        """NLU only: intent, intent_ranking, entities. Stores nothing."""
        parsed: dict[str, Any] = await self.worker.run(self.agent.parse_message(text))
        return parsed

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
        """Parse and log a user message in the tracker without predicting a bot answer
        (as Rasa does in a paused conversation); append ``then`` events after it.
        Returns the message's parse data (with ``intent_ranking``); ``parse_data`` as in
        :meth:`respond`."""
        message = UserMessage(
            text=text,
            output_channel=CollectingOutputChannel(),
            sender_id=conversation_id,
            input_channel=input_channel,
            message_id=message_id,
            metadata=metadata,
            parse_data=parse_data,
        )
        events = [event for change in then for event in to_rasa_events(change)]
        return await self.worker.run(self._log_without_answer(message, events))

    async def _log_without_answer(
        self, message: UserMessage, then: Sequence[Event]
    ) -> dict[str, Any]:
        assert self.agent.processor is not None
        conversation_id = message.sender_id
        async with self.agent.lock_store.lock(conversation_id):
            tracker = await self.agent.processor.log_message(message, should_save_tracker=False)
            for event in then:
                tracker.update(event)
            await self.agent.processor.save_tracker(tracker)
        return dict(tracker.latest_message.parse_data) if tracker.latest_message else {}

    async def preview(
        self,
        conversation_id: str,
        text: str,
        *,
        parse_data: dict[str, Any],
        undo_last_turn: bool = False,
    ) -> BotTurn:
        """What the bot would answer to ``text`` (parsed as ``parse_data``) in this
        conversation now, saving nothing: on a copy of the tracker (``undo_last_turn``: the
        last user message and what followed it taken back first; a paused conversation
        resumed). Only responses are run: at the first other action (a custom action, a form)
        the preview stops, naming it in ``actions``."""
        collector = CollectingOutputChannel()
        message = UserMessage(
            text=text,
            output_channel=collector,
            sender_id=conversation_id,
            input_channel="preview",
            parse_data=parse_data,
        )
        return await self.worker.run(self._preview(message, collector, undo_last_turn))

    async def _preview(
        self, message: UserMessage, collector: CollectingOutputChannel, undo_last_turn: bool
    ) -> BotTurn:
        processor = self.agent.processor
        assert processor is not None
        async with self.agent.lock_store.lock(message.sender_id):
            tracker = await processor.fetch_tracker_and_update_session(message.sender_id, collector)
        if undo_last_turn:
            for event in to_rasa_events(TurnReverted()):
                tracker.update(event)
        if tracker.is_paused():
            tracker.update(ConversationResumed())
        if tracker.latest_action_name != ACTION_LISTEN_NAME:  # e.g. user messages of a handoff
            tracker.update(ActionExecuted(ACTION_LISTEN_NAME))
        await processor._handle_message_with_tracker(message, tracker)
        tracker = await processor.run_action_extract_slots(collector, tracker)
        stopped_at: list[dict[str, Any]] = []
        for _ in range(PREVIEW_MAX_ACTIONS):
            action, prediction = processor.predict_next_with_tracker_if_should(tracker)
            if action.name() == ACTION_LISTEN_NAME:
                break
            if not isinstance(action, PREVIEW_SAFE_ACTIONS):
                stopped_at.append({"name": action.name(), "events": []})
                break
            if not await processor._run_action(
                action, tracker, collector, processor.nlg, prediction
            ):
                break
        return BotTurn(
            messages=collected(collector.messages),
            actions=stopped_at,
        )

    async def append_to_tracker(
        self, conversation_id: str, changes: Sequence[TrackerChange]
    ) -> list[dict[str, Any]]:
        """Record ``changes`` (pause, resume, an agent's reply) in the conversation's tracker.

        A hand-back (:class:`BotResumed`, outcome ``handed_back``) into an active form runs
        the form once without reading the messages said to the agent, so it asks its next
        question again; those are the bot messages returned. A close (outcome ``closed``)
        ends an active form and clears its slots."""
        collector = CollectingOutputChannel()
        await self.worker.run(self._append_to_tracker(conversation_id, changes, collector))
        return collected(collector.messages)

    async def _append_to_tracker(
        self,
        conversation_id: str,
        changes: Sequence[TrackerChange],
        collector: CollectingOutputChannel,
    ) -> None:
        processor = self.agent.processor
        assert processor is not None
        async with self.agent.lock_store.lock(conversation_id):
            tracker = await processor.fetch_tracker_and_update_session(conversation_id, collector)
            for change in changes:
                for event in to_rasa_events(change):
                    tracker.update(event)
            last = changes[-1] if changes else None
            if isinstance(last, BotResumed) and tracker.active_loop_name:
                with recording_failures():
                    if last.outcome == "handed_back":
                        await self._ask_again(tracker, collector)
                    else:
                        self._end_form(tracker)
            await processor.save_tracker(tracker)

    async def _ask_again(
        self, tracker: DialogueStateTracker, collector: CollectingOutputChannel
    ) -> None:
        """Run the active form as after an interruption (no validation of what the user said
        to the agent): it asks for its next slot; then let Rasa predict until it listens."""
        processor = self.agent.processor
        assert processor is not None and self.agent.domain is not None
        name = tracker.active_loop_name
        assert name is not None
        tracker.update(LoopInterrupted(True))
        action = action_for_name_or_text(name, self.agent.domain, processor.action_endpoint)
        prediction = PolicyPrediction.for_action_name(self.agent.domain, name, HANDOFF_POLICY)
        if await processor._run_action(action, tracker, collector, processor.nlg, prediction):
            await processor._run_prediction_loop(collector, tracker)

    def _end_form(self, tracker: DialogueStateTracker) -> None:
        """End the active form and clear what it asked for (as ``action_deactivate_loop``,
        plus its required slots): the conversation is over."""
        assert self.agent.domain is not None
        name = tracker.active_loop_name
        form = self.agent.domain.forms.get(name or "", {}) if name else {}
        tracker.update(ActionExecuted(ACTION_DEACTIVATE_LOOP_NAME, policy=HANDOFF_POLICY))
        tracker.update(ActiveLoop(None))
        tracker.update(SlotSet(REQUESTED_SLOT, None))
        for slot in form.get(REQUIRED_SLOTS_KEY, []) or []:
            tracker.update(SlotSet(slot, None))

    async def is_paused(self, conversation_id: str) -> bool:
        assert self.agent.processor is not None
        tracker = await self.worker.run(self.agent.processor.get_tracker(conversation_id))
        return bool(tracker.is_paused())

    def intent_names(self) -> list[str]:
        """The intents the model knows, as in the domain."""
        assert self.agent.domain is not None
        return list(self.agent.domain.intents)

    def responses(self) -> dict[str, list[str]]:
        """The domain's responses by name: their text variations."""
        assert self.agent.domain is not None
        return {
            name: [v["text"] for v in variations if v.get("text")]
            for name, variations in self.agent.domain.responses.items()
        }


def to_rasa_events(change: TrackerChange) -> list[Event]:
    """The Rasa events that record ``change`` (pause and resume say why in their metadata,
    which reaches the event broker)."""
    if isinstance(change, BotPaused):
        return [ConversationPaused(metadata={"handoff": {"reason": change.reason}})]
    if isinstance(change, BotResumed):
        return [ConversationResumed(metadata={"handoff": {"outcome": change.outcome}})]
    if isinstance(change, AgentSaid):
        return [BotUttered(change.text, metadata=change.metadata)]
    if isinstance(change, TurnReverted):
        # Rasa's rewind also takes back the listen before the message; Rasa listens again
        # after one (as after its default fallback), so the next message reads as answered.
        return [UserUtteranceReverted(), ActionExecuted(ACTION_LISTEN_NAME)]
    raise TypeError(f"not a tracker change: {change!r}")


def redis_lock_store(url: str, namespace: str) -> RedisLockStore:
    """Rasa's Redis lock store on ``url`` (``redis://[:password@]host:port/db``)."""
    from urllib.parse import urlparse

    parts = urlparse(url)
    return RedisLockStore(
        host=parts.hostname or "localhost",
        port=parts.port or 6379,
        db=int(parts.path.lstrip("/") or 0),
        password=parts.password,
        use_ssl=parts.scheme == "rediss",
        key_prefix="".join(c for c in namespace if c.isalnum()) or None,  # Rasa: alphanumeric
    )


def _fallback_classifiers(agent: Agent) -> list[FallbackClassifier]:
    assert agent.processor is not None
    nodes = agent.processor.graph_runner._instantiated_nodes.values()
    return [node._component for node in nodes if isinstance(node._component, FallbackClassifier)]


def apply_fallback_threshold(agent: Agent, threshold: float | None) -> float | None:
    """Set the FallbackClassifier threshold of a loaded model; return the one in force.

    Rasa keeps the threshold in the component's config inside the model; this reaches into the
    prediction graph of Rasa 3.6 (pinned) to change it without retraining.
    """
    classifiers = _fallback_classifiers(agent)
    if not classifiers:
        if threshold is not None:
            logger.warning("The model has no FallbackClassifier; fallback_threshold is ignored.")
        return None
    for classifier in classifiers:
        if threshold is not None:
            classifier.component_config[THRESHOLD_KEY] = threshold
    return float(classifiers[0].component_config[THRESHOLD_KEY])


def disable_fallback(agent: Agent) -> float:
    """Switch off the FallbackClassifier of a loaded model (its threshold and ambiguity
    threshold to 0), so that parses give the classifier's own top intent; return the
    ambiguity threshold the model had (0 without a FallbackClassifier)."""
    classifiers = _fallback_classifiers(agent)
    if not classifiers:
        return 0.0
    ambiguity = float(classifiers[0].component_config.get(AMBIGUITY_THRESHOLD_KEY, 0.0))
    for classifier in classifiers:
        classifier.component_config[THRESHOLD_KEY] = 0.0
        classifier.component_config[AMBIGUITY_THRESHOLD_KEY] = 0.0
    return ambiguity
