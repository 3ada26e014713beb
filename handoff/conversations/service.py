"""Carries out the routing state machine: stores, relays and tells Rasa what happened.

Every user or agent action goes through one :class:`ConversationService` method, which
serialises actions per conversation, applies :func:`handoff.core.routing.transition`, turns
the effects it returns into a plan (:mod:`.effects`: what each side is told, what Rasa hears,
the assignment), writes the result and its events in one transaction, and then wakes the live
connections through the hub. Assignment rules come from the state machine alone. A user's text
reaches the agent before Rasa parses it: the intent ranking follows in a separate ``intents``
event, so NLU time is never on the relay path (:mod:`.tracker_order`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from handoff.assistant.interface import AssistantHolder, BotTurn
from handoff.assistant.tracker_changes import AgentSaid, BotResumed, TrackerChange, TurnReverted
from handoff.conversations.effects import Circumstances, Plan, agent_event, plan, user_event
from handoff.conversations.intent_guesses import IntentGuesses, unguessed_parse_data
from handoff.conversations.teaching import Teaching
from handoff.conversations.tracker_order import TrackerOrder
from handoff.conversations.views import message_view, queue_view, transcript_view
from handoff.core.approvals import ApprovalRules, choose_agent, in_approval_band, may_hold
from handoff.core.errors import HandoffError
from handoff.core.routing import (
    AgentClaimed,
    AgentReplied,
    Closed,
    Command,
    Conversation,
    HandedBack,
    HandoffReason,
    HandoffRequested,
    IllegalTransition,
    NotAssignedToAgent,
    State,
    Transferred,
    UserSaid,
    transition,
    why_agent_may_not_act,
)
from handoff.core.triggers import FALLBACK_INTENT, HandoffPolicy, decide, top_intent
from handoff.learning.review import INTENT_NAME_PATTERN, INTENT_NAME_RULE
from handoff.realtime.hub import Hub, ephemeral_event
from handoff.realtime.locks import ConversationLocks, RedisConversationLocks
from handoff.realtime.presence import Presence
from handoff.storage.approvals import Approval, ApprovalStore
from handoff.storage.learning_store import LearningStore
from handoff.storage.records import (
    Agent,
    ConcurrentUpdate,
    Event,
    Message,
    NewEvent,
    StoredConversation,
)
from handoff.storage.store import Store

__all__ = ["ActionError", "ConversationService", "UserMessageResult", "approval_view"]

logger = logging.getLogger(__name__)

TOP_INTENTS = 5
SHARED_RESUME_WAIT_S = 5.0
"""With several processes, how long a hand-back waits for Rasa's resume before going on."""


class ActionError(HandoffError):
    """An agent action was refused; ``code`` is stable, ``message`` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)


@dataclass(frozen=True)
class UserMessageResult:
    message: Message
    duplicate: bool


def _ranking(parse_data: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"name": item.get("name"), "confidence": round(float(item.get("confidence") or 0), 4)}
        for item in (parse_data.get("intent_ranking") or [])[:TOP_INTENTS]
    ]


def _chosen(text: str, intent: str) -> dict[str, Any]:
    """Parse data that makes Rasa answer ``text`` as ``intent`` (a person chose it)."""
    chosen = {"name": intent, "confidence": 1.0}
    return {"text": text, "intent": chosen, "intent_ranking": [chosen], "entities": []}


def approval_view(held: Approval, message: dict[str, Any]) -> dict[str, Any]:
    """A held answer as the console shows it (with its ``conversation_id``): the user's
    message (with its intent ranking), the draft, and when it goes out by itself."""
    return {
        "approval_id": held.id,
        "message": message,
        "intent": held.predicted_intent,
        "confidence": round(held.confidence, 4),
        "draft": held.draft,
        "deadline": held.deadline_at,
    }


class ConversationService:
    def __init__(
        self,
        store: Store,
        hub: Hub,
        assistant: AssistantHolder,
        policy: HandoffPolicy,
        presence: Presence,
        learning: LearningStore,
        verification_band: float = 0.0,
        locks: ConversationLocks | None = None,
        approval: ApprovalRules | None = None,
    ) -> None:
        """``verification_band``: bot answers whose confidence is below the handoff threshold
        plus this are queued for verification (0: none). ``locks``: in-process by default;
        Redis locks when several processes serve the same conversations. ``approval``: which
        bot answers wait for a person before they are sent (off by default)."""
        self.store = store
        self.approval = approval or ApprovalRules()
        self.approvals = ApprovalStore(store.engine)
        self._expiries: set[asyncio.Task[None]] = set()
        self.learning = learning
        self.verification_band = verification_band
        self.hub = hub
        self.assistant = assistant
        self.policy = policy
        # An answer in the approval band that could not wait for a person (nobody free) is
        # checked later instead, like any uncertain answer.
        checked_band = max(verification_band, self.approval.band)
        self.teaching = Teaching(store, learning, assistant, policy, checked_band)
        self.presence = presence
        self.locks = locks or ConversationLocks()
        self.shared = isinstance(self.locks, RedisConversationLocks)
        """Other processes serve the same conversations: their tracker work is not in our
        queue."""
        self.tracker_order = TrackerOrder()
        self.intent_guesses = IntentGuesses()

    def _append_to_tracker(
        self,
        conversation_id: str,
        changes: list[TrackerChange],
        say_after: asyncio.Future[bool] | None = None,
    ) -> asyncio.Future[None]:
        """Record ``changes`` in Rasa's tracker, in tracker order, off the relay path; the
        future is done once Rasa's tracker holds them. What the bot says because of them (a
        form asking again after a hand-back) goes to the user before any later tracker work,
        and after ``say_after`` is True (not at all if it is False)."""
        recorded: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def append() -> None:
            try:
                assistant = await self.assistant.get()
                said = await assistant.append_to_tracker(conversation_id, changes)
            finally:
                if not recorded.done():
                    recorded.set_result(None)
            if said and (say_after is None or await say_after):
                await self._say(conversation_id, said, in_reply_to=None)

        self.tracker_order.then(conversation_id, append)
        return recorded

    async def tracker_caught_up(self, conversation_id: str) -> None:
        """Wait until the Rasa tracker holds everything queued for this conversation."""
        await self.tracker_order.caught_up(conversation_id)

    async def drain(self, timeout: float) -> None:
        """Wait (up to ``timeout`` s) for all queued tracker work, e.g. before shutting down."""
        await self.tracker_order.drain(timeout)

    def _lock(self, conversation_id: str) -> AbstractAsyncContextManager[None]:
        """Serialises everything that happens to one conversation (across processes with
        Redis locks)."""
        return self.locks.hold(conversation_id)

    async def _publish(self, events: Sequence[Event]) -> None:
        self.hub.publish(events)

    # Users -----------------------------------------------------------------------------------

    async def user_message(
        self, conversation_id: str, client_id: str, text: str, channel: str
    ) -> UserMessageResult:
        """Handle a user's message: bot answer, handoff, or relay to the agent.

        Sending the same ``client_id`` twice stores and delivers the message once. A resent
        message whose bot turn failed before the assistant parsed it (the user got
        ``internal``, e.g. while a worker restarted) is answered then: a resend is what that
        error asks for.
        """
        async with self._lock(conversation_id):
            if self.approval.on:  # the user went on: a held answer goes out first
                for held in await self.approvals.pending(conversation_id):
                    await self._settle(held, "superseded", None)
            stored = await self.store.conversation(conversation_id)
            command = UserSaid(text)
            after, effects = transition(stored.conversation, command)
            plans: list[Plan] = []

            def relay_events(message: Message) -> list[NewEvent]:
                todo = plan(
                    effects,
                    Circumstances(
                        conversation_id, command, client_id=client_id, message=message_view(message)
                    ),
                )
                plans.append(todo)
                # A relayed message's events go in the message's own transaction; a bot
                # turn's come after the bot's answers.
                return [] if todo.bot_answers else todo.events

            message, created, _ = await self.store.add_message(
                conversation_id,
                "user",
                text,
                handoff_id=stored.handoff_id,
                client_message_id=client_id,
                events=[user_event(conversation_id, "ack", id=client_id)],
                events_for=relay_events,
                publish=self.hub.publish,
            )
            if not created:
                if await self._never_parsed(stored, message):
                    await self._bot_turn(stored, after, message, client_id, channel)
                return UserMessageResult(message, duplicate=True)
            (todo,) = plans
            if todo.bot_answers:
                await self._bot_turn(stored, after, message, client_id, channel)
                if todo.events:
                    await self._publish(await self.store.append_events(todo.events))
            if todo.record_while_paused:
                # NLU after the relay (the agent already has the text), in tracker order.
                agent_id = stored.conversation.agent_id
                self.intent_guesses.relayed(conversation_id, message.id, time.monotonic())
                self.tracker_order.then(
                    conversation_id,
                    lambda: self._log_paused_message(
                        conversation_id, agent_id, message, client_id, channel
                    ),
                )
            return UserMessageResult(message, duplicate=False)

    async def _never_parsed(self, stored: StoredConversation, message: Message) -> bool:
        """Whether ``message`` waits for a bot turn that failed before NLU: the conversation is
        with the bot, the message was not relayed in a handoff, has no intent ranking, and
        nothing came after it."""
        if (
            stored.conversation.state is not State.BOT
            or message.handoff_id is not None
            or message.intent_ranking is not None
        ):
            return False
        latest = await self.store.messages(stored.conversation.id)
        return bool(latest) and latest[-1].id == message.id

    async def _bot_turn(
        self,
        stored: StoredConversation,
        after: Conversation,
        message: Message,
        client_id: str,
        channel: str,
    ) -> None:
        assistant = await self.assistant.get()
        conversation = stored.conversation
        await self.tracker_caught_up(conversation.id)  # e.g. a resume after a hand-back
        if self.shared and await assistant.is_paused(conversation.id):
            # Handed back on another process (or by one that died) before Rasa heard of it.
            await assistant.append_to_tracker(conversation.id, [BotResumed()])
        parse_data = await assistant.parse(message.text)
        decision = decide(parse_data, self.policy, stored.fallback_streak)
        ranking = _ranking(parse_data)
        await self.store.set_intent_ranking(message.id, ranking)
        if decision.reason is None:
            turn = await assistant.respond(
                conversation.id,
                message.text,
                input_channel=channel,
                message_id=client_id,
                parse_data=parse_data,
            )
            threshold = self._threshold(parse_data, assistant.info.fallback_threshold)
            if not await self._hold(message, client_id, parse_data, turn, threshold):
                await self.teaching.queue_if_uncertain(
                    message, parse_data, assistant.info.fallback_threshold
                )
                await self._say(conversation.id, turn.messages, in_reply_to=client_id)
            detail = turn.detail()
            if detail is not None:
                await self.store.set_turn(message.id, detail)
            by_action = self._action_handoff(turn)
            if by_action is None:
                if after != conversation or decision.fallback_streak != stored.fallback_streak:
                    await self.store.save_conversation(
                        stored, after, fallback_streak=decision.fallback_streak
                    )
                return
            await self._hand_off_after_turn(stored, after, by_action)
            return
        else:
            command = HandoffRequested(decision.reason)
            queued, effects = transition(after, command)
            todo = plan(effects, self._handoff_circumstances(conversation.id, command))
            await assistant.log_without_answer(
                conversation.id,
                message.text,
                input_channel=channel,
                message_id=client_id,
                then=todo.tracker,
                parse_data=parse_data,
            )
        _, events = await self.store.save_conversation(
            stored, queued, events=todo.events, fallback_streak=0, new_handoff=True
        )
        await self._publish(events)
        if todo.queue_changed:
            await self._queue_changed()

    async def _hand_off_after_turn(
        self, stored: StoredConversation, after: Conversation, reason: HandoffReason
    ) -> None:
        """An action of the bot's turn handed off, or one failed: a handoff as if a trigger
        had fired (``after``: the conversation as the turn left it)."""
        command = HandoffRequested(reason)
        queued, effects = transition(after, command)
        todo = plan(effects, self._handoff_circumstances(after.id, command))
        if reason is HandoffReason.ACTION_FAILED:
            self._append_to_tracker(after.id, todo.tracker)
        # else: the action paused Rasa's tracker itself
        _, events = await self.store.save_conversation(
            stored, queued, events=todo.events, fallback_streak=0, new_handoff=True
        )
        await self._publish(events)
        if todo.queue_changed:
            await self._queue_changed()

    @staticmethod
    def _action_handoff(turn: BotTurn) -> HandoffReason | None:
        """Why the bot's turn hands off: an action paused the conversation, or one failed
        (what the user asked for is not done: a person takes over)."""
        if turn.handed_off_by is not None:
            return HandoffReason.ACTION
        if turn.failed_actions:
            logger.warning(
                "Custom action(s) failed in a bot turn; handing off: %s",
                "; ".join(f"{f['name']}: {f['error']}" for f in turn.failed_actions),
            )
            return HandoffReason.ACTION_FAILED
        return None

    async def _say(
        self, conversation_id: str, messages: Sequence[dict[str, Any]], in_reply_to: str | None
    ) -> None:
        """Store and deliver the bot's ``messages`` to the user, in order."""
        for reply in messages:
            await self.store.add_message(
                conversation_id,
                "bot",
                reply.get("text") or "",
                events=[user_event(conversation_id, "bot", in_reply_to=in_reply_to, **reply)],
                publish=self.hub.publish,
            )

    # Held answers (approve before send) ---------------------------------------------------

    def _threshold(self, parse_data: dict[str, Any], fallback_threshold: float | None) -> float:
        """The handoff threshold the message's top intent had to pass."""
        intent, _ = top_intent(parse_data)
        return max(fallback_threshold or 0.0, self.policy.intent_thresholds.get(intent or "", 0.0))

    async def _hold(
        self,
        message: Message,
        client_id: str,
        parse_data: dict[str, Any],
        turn: BotTurn,
        threshold: float,
    ) -> bool:
        """Hold the bot's answer for an agent's approval when it is uncertain enough and an
        agent has a free slot (see :mod:`handoff.core.approvals`); True if held. The user is
        shown the bot typing meanwhile."""
        if not self.approval.on:
            return False
        intent, confidence = top_intent(parse_data)
        if (
            intent is None
            or not in_approval_band(confidence, threshold, self.approval.band)
            or not may_hold(turn.messages, turn.actions)  # so no action handed off or failed
        ):
            return False
        online = [p.agent_id for p in self.presence.snapshot() if p.status == "online"]
        pending = await self.approvals.pending_per_agent()
        agent_id = choose_agent(online, pending, self.approval.slots)
        if agent_id is None:
            return False
        held = await self.approvals.hold(
            conversation_id=message.conversation_id,
            message_id=message.id,
            client_id=client_id,
            draft=turn.messages,
            predicted_intent=intent,
            confidence=confidence,
            agent_id=agent_id,
            timeout_s=self.approval.timeout_s,
        )
        offer = agent_event(
            agent_id,
            "approval",
            held.conversation_id,
            **approval_view(held, {**message_view(message), "intents": _ranking(parse_data)}),
        )
        await self._publish(await self.store.append_events([offer]))
        self._bot_typing(held.conversation_id, True)
        self._expire_later(held)
        return True

    def _bot_typing(self, conversation_id: str, typing: bool) -> None:
        self.hub.publish(
            [ephemeral_event("user", "typing", None, conversation_id, who="bot", typing=typing)]
        )

    def _expire_later(self, held: Approval) -> None:
        """Send ``held`` as it is once its deadline passes, unless it was settled before."""

        async def expire() -> None:
            await asyncio.sleep(max(0.0, held.deadline_at - time.time()))
            if (current := await self.approvals.get(held.id)) is None or not current.pending:
                return
            async with self._lock(held.conversation_id):
                await self._settle(current, "timed_out", None)

        task = asyncio.create_task(expire())
        self._expiries.add(task)
        task.add_done_callback(self._expiries.discard)

    async def resume_held_answers(self) -> int:
        """At start: expire the held answers left pending (by a restart) at their deadlines.
        Returns how many there were."""
        pending = await self.approvals.pending()
        for held in pending:
            self._expire_later(held)
        return len(pending)

    async def decide(
        self,
        agent: Agent,
        approval_id: int,
        decision: str,
        intent: str | None = None,
        text: str | None = None,
    ) -> None:
        """An agent's decision on a held answer: ``approve`` it, ``correct`` it to a known
        ``intent`` (the bot answers for that one) or ``replace`` it with ``text`` (``intent``
        optional: the message's label). Refused if it was settled already."""
        held = await self.approvals.get(approval_id)
        if held is None:
            raise ActionError("unknown_approval", f"no held answer {approval_id}")
        if held.agent_id != agent.id and not agent.is_maintainer:
            raise ActionError(
                "not_assigned", f"held answer {approval_id} was offered to another agent"
            )
        assistant = await self.assistant.get()
        message = await self.store.message(held.message_id)
        assert message is not None
        if intent is not None:
            if not INTENT_NAME_PATTERN.match(intent):
                raise ActionError("invalid_field", INTENT_NAME_RULE)
            if decision == "correct" and intent not in assistant.intent_names():
                raise ActionError(
                    "unknown_intent",
                    f"the bot has no answer for {intent!r}: pick one of its intents, or replace "
                    "the answer with your own",
                )
        if decision == "correct":
            assert intent is not None
            preview = await assistant.preview(
                held.conversation_id,
                message.text,
                parse_data=_chosen(message.text, intent),
                undo_last_turn=True,
            )
            if not preview.messages and not preview.actions:
                raise ActionError(
                    "no_answer",
                    f"the bot says nothing for {intent!r} at this point of the conversation: "
                    "pick another intent, or write the answer yourself",
                )
        outcome = {"approve": "approved", "correct": "corrected", "replace": "replaced"}[decision]
        async with self._lock(held.conversation_id):
            current = await self.approvals.get(approval_id)
            if current is None or not current.pending:
                ended = current.status if current else "gone"
                raise ActionError(
                    "already_settled", f"held answer {approval_id} was already sent ({ended})"
                )
            await self._settle(current, outcome, agent, intent=intent, text=text, message=message)

    async def _settle(
        self,
        held: Approval,
        outcome: str,
        agent: Agent | None,
        intent: str | None = None,
        text: str | None = None,
        message: Message | None = None,
    ) -> None:
        """End ``held`` with ``outcome`` and do what it says (caller holds the conversation's
        lock; ``message``: the held user message, if the caller read it already). Does
        nothing if something else ended it first."""
        settled = await self.approvals.settle(
            held.id,
            outcome,
            decided_by=agent.id if agent else None,
            intent=held.predicted_intent if outcome == "approved" else intent,
            reply=text,
        )
        if settled is None:
            return
        conversation_id = held.conversation_id
        message = message or await self.store.message(held.message_id)
        assert message is not None
        if outcome in ("approved", "timed_out", "superseded"):
            await self._say(conversation_id, held.draft, in_reply_to=held.client_id)
        elif outcome == "corrected":
            assert intent is not None
            await self._answer_instead(message, held.client_id, intent)
        else:
            assert agent is not None and text is not None
            await self._reply_instead(message, held.client_id, agent, text, intent)
        self._bot_typing(conversation_id, False)
        if agent is not None and settled.intent:
            is_new = settled.intent not in (await self.assistant.get()).intent_names()
            source = "approval" if outcome == "approved" else "correction"
            await self.learning.label_message(message, settled.intent, is_new, agent.id, source)
        elif agent is None:
            await self.learning.queue_verification(
                message, held.predicted_intent, held.confidence, "uncertain"
            )
        done = agent_event(
            held.agent_id,
            "approval_settled",
            conversation_id,
            approval_id=held.id,
            outcome=outcome,
            by=agent.display_name if agent else None,
        )
        await self._publish(await self.store.append_events([done]))

    async def _answer_instead(self, message: Message, client_id: str, intent: str) -> None:
        """Undo the bot's held turn in Rasa's tracker and answer for ``intent`` instead."""
        assistant = await self.assistant.get()
        await assistant.append_to_tracker(message.conversation_id, [TurnReverted()])
        turn = await assistant.respond(
            message.conversation_id,
            message.text,
            input_channel="websocket",
            message_id=client_id,
            parse_data=_chosen(message.text, intent),
        )
        await self._say(message.conversation_id, turn.messages, in_reply_to=client_id)
        detail = turn.detail()
        if detail is not None:
            await self.store.set_turn(message.id, detail)
        by_action = self._action_handoff(turn)
        if by_action is not None:
            stored = await self.store.conversation(message.conversation_id)
            await self._hand_off_after_turn(stored, stored.conversation, by_action)

    async def _reply_instead(
        self, message: Message, client_id: str, agent: Agent, text: str, intent: str | None
    ) -> None:
        """Undo the bot's held turn; log the user's message without an answer and the
        agent's text in Rasa's tracker, and send that text in the bot's voice."""
        assistant = await self.assistant.get()
        metadata = {"approval": {"agent_id": agent.id, "agent_name": agent.display_name}}
        await assistant.append_to_tracker(message.conversation_id, [TurnReverted()])
        await assistant.log_without_answer(
            message.conversation_id,
            message.text,
            input_channel="websocket",
            message_id=client_id,
            then=[AgentSaid(text, metadata)],
            parse_data=_chosen(message.text, intent) if intent else None,
        )
        await self.store.add_message(
            message.conversation_id,
            "agent",
            text,
            agent_id=agent.id,
            events=[user_event(message.conversation_id, "bot", in_reply_to=client_id, text=text)],
            publish=self.hub.publish,
        )

    async def suggest(
        self, agent: Agent, message_id: int, intent: str | None = None
    ) -> dict[str, Any]:
        """The bot's answer to a user message, for an agent to send or edit: for ``intent``,
        else for the message's top guess. Nothing is saved or run but responses:
        ``{"intent", "draft": [messages], "stopped_at": the custom action or form the answer
        would need next, else None}``."""
        message = await self.store.message(message_id)
        if message is None or message.sender != "user":
            raise ActionError("unknown_message", f"no user message {message_id}")
        stored = await self.store.conversation(message.conversation_id)
        if not agent.is_maintainer:
            self._require_assigned(agent, stored.conversation)
        assistant = await self.assistant.get()
        if intent is None:
            ranked = [r["name"] for r in message.intent_ranking or [] if r.get("name")]
            intent = next((name for name in ranked if name != FALLBACK_INTENT), None)
        if intent is None:
            return {"intent": None, "draft": [], "stopped_at": None}
        if intent not in assistant.intent_names():
            return {"intent": intent, "draft": [], "stopped_at": None}  # a new intent
        later = [
            m
            for m in await self.store.messages(message.conversation_id)
            if m.sender == "user" and m.id > message.id
        ]
        preview = await assistant.preview(
            message.conversation_id,
            message.text,
            parse_data=_chosen(message.text, intent),
            undo_last_turn=not later,  # the message is in Rasa's tracker: take it back first
        )
        stopped = preview.actions[0]["name"] if preview.actions else None
        return {"intent": intent, "draft": preview.messages, "stopped_at": stopped}

    async def held_answers(self, agent: Agent) -> list[dict[str, Any]]:
        """The held answers waiting for ``agent``, as the console shows them."""
        views = []
        for held in await self.approvals.pending():
            if held.agent_id != agent.id:
                continue
            message = await self.store.message(held.message_id)
            if message is not None:
                shown = {**message_view(message), "intents": message.intent_ranking or []}
                views.append(
                    {"conversation_id": held.conversation_id, **approval_view(held, shown)}
                )
        return views

    async def stop_timers(self) -> None:
        """Stop the held answers' timers (they are expired again at the next start)."""
        for task in list(self._expiries):
            task.cancel()
        await asyncio.gather(*self._expiries, return_exceptions=True)

    def _handoff_circumstances(
        self, conversation_id: str, command: HandoffRequested
    ) -> Circumstances:
        return Circumstances(
            conversation_id,
            command,
            reason=command.reason.value,
            agents_online=self.presence.online_count(),
        )

    async def feedback(self, conversation_id: str, in_reply_to: str) -> bool:
        """The user marked the bot's answer to their message ``in_reply_to`` (its client id)
        as unhelpful: queue it for verification. False if there is no such bot answer."""
        return await self.teaching.feedback(conversation_id, in_reply_to)

    async def _log_paused_message(
        self,
        conversation_id: str,
        agent_id: int | None,
        message: Message,
        client_id: str,
        channel: str,
    ) -> None:
        assistant = await self.assistant.get()
        skip_nlu = self.intent_guesses.superseded(conversation_id, message.id)
        try:
            parse_data = await assistant.log_without_answer(
                conversation_id,
                message.text,
                input_channel=channel,
                message_id=client_id,
                parse_data=unguessed_parse_data(message.text) if skip_nlu else None,
            )
        finally:
            self.intent_guesses.done(conversation_id, message.id)
        ranking = [] if skip_nlu else _ranking(parse_data)  # []: "no guesses"
        intents_events = (
            [
                agent_event(
                    agent_id, "intents", conversation_id, message_id=message.id, ranking=ranking
                )
            ]
            if agent_id is not None
            else []
        )
        await self.store.set_intent_ranking(
            message.id, ranking, intents_events, publish=self.hub.publish
        )
        if agent_id is None:
            await self._queue_changed()

    async def user_typing(self, conversation_id: str, typing: bool) -> None:
        stored = await self.store.conversation(conversation_id)
        agent_id = stored.conversation.agent_id
        if stored.conversation.state is State.ASSIGNED and agent_id is not None:
            self.hub.publish(
                [
                    ephemeral_event(
                        "agents", "typing", agent_id, conversation_id, who="user", typing=typing
                    )
                ]
            )

    async def request_handoff(self, conversation_id: str, reason: HandoffReason) -> None:
        """Hand off on the user's request outside a message (e.g. after a thumbs-down)."""
        async with self._lock(conversation_id):
            stored = await self.store.conversation(conversation_id)
            command = HandoffRequested(reason)
            try:
                queued, effects = transition(stored.conversation, command)
            except IllegalTransition as error:
                raise ActionError("illegal_transition", str(error)) from None
            todo = plan(effects, self._handoff_circumstances(conversation_id, command))
            self._append_to_tracker(conversation_id, todo.tracker)
            _, events = await self.store.save_conversation(
                stored, queued, events=todo.events, fallback_streak=0, new_handoff=True
            )
            await self._publish(events)
        if todo.queue_changed:
            await self._queue_changed()

    # Agents ------------------------------------------------------------------------------------

    async def _apply(
        self, conversation_id: str, command: Command, circumstances: dict[str, Any]
    ) -> tuple[StoredConversation, Conversation, Plan]:
        """Check an agent command against the state machine; return the conversation before,
        after, and the plan that carries out the command's effects (nothing is written)."""
        stored = await self.store.conversation(conversation_id)
        if stored.version == 0:
            raise ActionError("unknown_conversation", f"no conversation {conversation_id!r}")
        try:
            after, effects = transition(stored.conversation, command)
        except NotAssignedToAgent as error:
            raise ActionError("not_assigned", str(error)) from None
        except IllegalTransition as error:
            code = "already_claimed" if isinstance(command, AgentClaimed) else "illegal_transition"
            raise ActionError(code, str(error)) from None
        return (
            stored,
            after,
            plan(effects, Circumstances(conversation_id, command, **circumstances)),
        )

    async def claim(self, agent: Agent, conversation_id: str) -> None:
        async with self._lock(conversation_id):
            stored, after, todo = await self._apply(
                conversation_id,
                AgentClaimed(agent.id),
                {"names": {agent.id: agent.display_name}},
            )
            try:
                _, events = await self.store.save_conversation(
                    stored,
                    after,
                    handoff_update={"claimed_at": time.time()},
                    assignment=todo.assignment,
                    events=todo.events,
                )
            except ConcurrentUpdate:
                raise ActionError("already_claimed", "another agent claimed it first") from None
            await self._publish(events)
        if todo.queue_changed:
            await self._queue_changed()

    async def reply(
        self,
        agent: Agent,
        conversation_id: str,
        client_id: str,
        text: str,
        response_name: str | None = None,
    ) -> bool:
        """Send an agent's reply to the user; False if ``client_id`` was already sent."""
        async with self._lock(conversation_id):
            stored, _, todo = await self._apply(
                conversation_id,
                AgentReplied(agent.id, text),
                {
                    "names": {agent.id: agent.display_name},
                    "client_id": client_id,
                    "response_name": response_name,
                },
            )
            _, created, _ = await self.store.add_message(
                conversation_id,
                "agent",
                text,
                handoff_id=stored.handoff_id,
                agent_id=agent.id,
                client_message_id=client_id,
                response_name=response_name,
                events=todo.events,
                first_reply_of=stored.handoff_id,
                publish=self.hub.publish,
            )
            if not created:
                return False
            self._append_to_tracker(conversation_id, todo.tracker)
            return True

    def _require_assigned(self, agent: Agent, conversation: Conversation) -> None:
        """Refuse an action on a conversation not assigned to ``agent`` (the routing rule)."""
        why_not = why_agent_may_not_act(conversation, agent.id)
        if why_not is not None:
            raise ActionError(
                "not_assigned", f"conversation {conversation.id} is not assigned to you: {why_not}"
            )

    async def label(self, agent: Agent, message_id: int, intent: str) -> bool:
        """Record the agent's intent for a user message; True if the intent is new.
        Maintainers may label any conversation's messages; agents their own."""
        message = await self.store.message(message_id)
        if message is None or message.sender != "user":
            raise ActionError("unknown_message", f"no user message {message_id}")
        stored = await self.store.conversation(message.conversation_id)
        if not agent.is_maintainer:
            self._require_assigned(agent, stored.conversation)
        if not INTENT_NAME_PATTERN.match(intent):
            raise ActionError("invalid_field", INTENT_NAME_RULE)
        assistant = await self.assistant.get()
        is_new = intent not in assistant.intent_names()
        await self.learning.label_message(message, intent, is_new, agent.id)
        events = await self.store.append_events(
            [
                agent_event(
                    agent.id,
                    "labelled",
                    message.conversation_id,
                    message_id=message_id,
                    intent=intent,
                    new_intent=is_new,
                )
            ]
        )
        await self._publish(events)
        return is_new

    async def transfer(
        self, agent: Agent, conversation_id: str, to: Agent | None, reason: str = "transferred"
    ) -> None:
        """Give the conversation to ``to``, or back to the queue (the user is told ``queued``
        with ``reason``; the agent's ``unassigned`` event carries it too)."""
        if to is not None and to.disabled:
            raise ActionError("unknown_agent", f"agent {to.username} is disabled")
        names = {agent.id: agent.display_name}
        if to is not None:
            names[to.id] = to.display_name
        async with self._lock(conversation_id):
            stored, after, todo = await self._apply(
                conversation_id,
                Transferred(agent.id, to.id if to else None),
                {"names": names, "reason": reason},
            )
            _, written = await self.store.save_conversation(
                stored, after, assignment=todo.assignment, events=todo.events
            )
            await self._publish(written)
        if todo.queue_changed:
            await self._queue_changed()

    async def requeue_all(self, agent: Agent, reason: str) -> int:
        """Put every conversation still assigned to ``agent`` back in the queue, as its own
        transfer to the queue would. Idempotent: a conversation another process (or task)
        requeued first is skipped. Returns how many this call requeued."""
        requeued = 0
        for stored in await self.store.assigned_conversations(agent.id):
            try:
                await self.transfer(agent, stored.conversation.id, None, reason=reason)
            except (ActionError, ConcurrentUpdate):
                continue  # no longer assigned to the agent: requeued (or closed) already
            requeued += 1
        return requeued

    async def hand_back(self, agent: Agent, conversation_id: str) -> None:
        await self._finish(agent, conversation_id, HandedBack(agent.id), "handed_back")

    async def close(self, agent: Agent, conversation_id: str) -> None:
        await self._finish(agent, conversation_id, Closed(agent.id), "closed")

    async def _finish(
        self, agent: Agent, conversation_id: str, command: Command, outcome: str
    ) -> None:
        async with self._lock(conversation_id):
            stored, after, todo = await self._apply(
                conversation_id,
                command,
                {"names": {agent.id: agent.display_name}, "reason": outcome},
            )
            # A form resumed by the hand-back asks its question after the user is told.
            told: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            resumed = self._append_to_tracker(conversation_id, todo.tracker, say_after=told)
            published = False
            try:
                if self.shared:
                    # The next user message may arrive on another process: let Rasa hear of
                    # the resume first (bounded: a dead process's Rasa lock ticket must not
                    # hold us).
                    await asyncio.wait([resumed], timeout=SHARED_RESUME_WAIT_S)
                _, events = await self.store.save_conversation(
                    stored,
                    after,
                    handoff_update={"closed_at": time.time(), "outcome": outcome},
                    assignment=todo.assignment,
                    events=todo.events,
                )
                await self._publish(events)
                published = True
            finally:
                told.set_result(published)
        if stored.handoff_id is not None:
            await self.teaching.learn_from_handoff(conversation_id, stored.handoff_id)

    async def agent_typing(self, agent: Agent, conversation_id: str, typing: bool) -> None:
        stored = await self.store.conversation(conversation_id)
        self._require_assigned(agent, stored.conversation)
        self.hub.publish(
            [ephemeral_event("user", "typing", None, conversation_id, who="agent", typing=typing)]
        )

    # Views ---------------------------------------------------------------------------------

    async def transcript(self, agent: Agent, conversation_id: str) -> dict[str, Any]:
        """Everything said in the conversation, bot part included, with intents and labels.
        Maintainers may read any conversation; agents their own."""
        stored = await self.store.conversation(conversation_id)
        if not agent.is_maintainer:
            self._require_assigned(agent, stored.conversation)
        messages = await self.store.messages(conversation_id)
        labels = await self.store.labels([m.id for m in messages if m.sender == "user"])
        return transcript_view(stored, messages, labels)

    async def queue_snapshot(self) -> list[dict[str, Any]]:
        return queue_view(await self.store.queue())

    async def queue_position(self, conversation_id: str) -> dict[str, int] | None:
        """``{"position", "waiting"}`` of a queued conversation (None if it is not queued)."""
        snapshot = await self.queue_snapshot()
        for item in snapshot:
            if item["conversation_id"] == conversation_id:
                return {"position": item["position"], "waiting": len(snapshot)}
        return None

    async def _queue_changed(self) -> None:
        """Tell agents the new queue (one stored event) and each waiting user their place in
        it (live only: a position is stale by the time it could be replayed; a user who
        connects while queued is told theirs then)."""
        snapshot = await self.queue_snapshot()
        events = await self.store.append_events([agent_event(None, "queue", items=snapshot)])
        await self._publish(events)
        self.hub.publish(
            [
                ephemeral_event(
                    "user",
                    "queue_position",
                    None,
                    item["conversation_id"],
                    position=item["position"],
                    waiting=len(snapshot),
                )
                for item in snapshot
            ]
        )
