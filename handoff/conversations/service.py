"""Carries out the routing state machine: stores, relays and tells Rasa what happened.

Every user or agent action goes through one :class:`ConversationService` method, which
serialises actions per conversation, applies :func:`handoff.core.routing.transition`, writes the
result and its events in one transaction, and then wakes the live connections through the
hub. A user's text reaches the agent before Rasa parses it: the intent ranking follows in a
separate ``intents`` event, so NLU time is never on the relay path.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from handoff.assistant.rasa_assistant import AssistantHolder
from handoff.assistant.tracker_changes import AgentSaid, BotPaused, BotResumed, TrackerChange
from handoff.core.routing import (
    AgentClaimed,
    AgentReplied,
    Closed,
    Command,
    ForwardToBot,
    HandedBack,
    HandoffReason,
    HandoffRequested,
    IllegalTransition,
    NotAssignedToAgent,
    State,
    Transferred,
    UserSaid,
    transition,
)
from handoff.core.triggers import HandoffPolicy, decide, top_intent
from handoff.learning.candidates import handoff_candidates
from handoff.learning.review import INTENT_NAME_PATTERN, INTENT_NAME_RULE
from handoff.realtime.hub import Hub, ephemeral_event
from handoff.realtime.locks import ConversationLocks, RedisConversationLocks
from handoff.realtime.presence import Presence
from handoff.storage.learning_store import LearningStore
from handoff.storage.store import (
    Agent,
    ConcurrentUpdate,
    Event,
    Message,
    NewEvent,
    Store,
    StoredConversation,
)

logger = logging.getLogger(__name__)

TOP_INTENTS = 5
SHARED_RESUME_WAIT_S = 5.0
"""With several processes, how long a hand-back waits for Rasa's resume before going on."""


class ActionError(Exception):
    """An agent action was refused; ``code`` is stable, ``message`` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class UserMessageResult:
    message: Message
    duplicate: bool


def _ranking(parse_data: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"name": item.get("name"), "confidence": round(float(item.get("confidence") or 0), 4)}
        for item in (parse_data.get("intent_ranking") or [])[:TOP_INTENTS]
    ]


NOTICES = {
    "queued": "I'm handing you over to a member of our support team. Please stay here.",
    "no_agents": (
        "No one from our team is online right now. Leave your message here and the next "
        "available person will answer it."
    ),
    "agent_joined": "{agent} joined the chat.",
    "handed_back": "{agent} handed you back to the virtual assistant.",
    "closed": "{agent} closed the conversation. Thank you for contacting Larkspur Bank.",
}
"""What the user is told at each step of a handoff (``text`` of ``handoff`` events)."""


def _user_event(conversation_id: str, type_: str, **payload: Any) -> NewEvent:
    if type_ == "handoff":
        payload["text"] = NOTICES[payload["status"]].format(agent=payload.get("agent", ""))
    return NewEvent("user", type_, payload, conversation_id=conversation_id)


def _agent_event(
    agent_id: int | None, type_: str, conversation_id: str | None = None, **payload: Any
) -> NewEvent:
    if conversation_id is not None:
        payload["conversation_id"] = conversation_id
    return NewEvent("agents", type_, payload, conversation_id=conversation_id, agent_id=agent_id)


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
    ) -> None:
        """``verification_band``: bot answers whose confidence is below the handoff threshold
        plus this are queued for verification (0: none). ``locks``: in-process by default;
        Redis locks when several processes serve the same conversations."""
        self.store = store
        self.learning = learning
        self.verification_band = verification_band
        self.hub = hub
        self.assistant = assistant
        self.policy = policy
        self.presence = presence
        self.locks = locks or ConversationLocks()
        self.shared = isinstance(self.locks, RedisConversationLocks)
        """Other processes serve the same conversations: their tracker work is not in our
        queue."""
        # The last queued Rasa tracker update of each conversation (see _in_tracker_order).
        self._tracker_tail: dict[str, asyncio.Task[None]] = {}

    def _in_tracker_order(
        self, conversation_id: str, job: Callable[[], Awaitable[None]]
    ) -> asyncio.Task[None]:
        """Run ``job`` (Rasa tracker work: NLU, pause/resume, agent utterances) after the ones
        queued before it for this conversation, off the relay path."""
        previous = self._tracker_tail.get(conversation_id)

        async def run() -> None:
            if previous is not None:
                await asyncio.wait([previous])
            try:
                await job()
            except Exception:
                logger.exception("Rasa tracker update of %s failed", conversation_id)

        task = asyncio.create_task(run())
        self._tracker_tail[conversation_id] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._tracker_tail.get(conversation_id) is done:
                del self._tracker_tail[conversation_id]

        task.add_done_callback(forget)
        return task

    def _append_to_tracker(
        self, conversation_id: str, events: list[TrackerChange]
    ) -> asyncio.Task[None]:
        async def append() -> None:
            assistant = await self.assistant.get()
            await assistant.append_to_tracker(conversation_id, events)

        return self._in_tracker_order(conversation_id, append)

    async def tracker_caught_up(self, conversation_id: str) -> None:
        """Wait until the Rasa tracker holds everything queued for this conversation."""
        tail = self._tracker_tail.get(conversation_id)
        if tail is not None:
            await asyncio.wait([tail])

    async def drain(self, timeout: float) -> None:
        """Wait (up to ``timeout`` s) for all queued tracker work, e.g. before shutting down."""
        tails = list(self._tracker_tail.values())
        if tails:
            await asyncio.wait(tails, timeout=timeout)

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

        Sending the same ``client_id`` twice stores and delivers the message once.
        """
        async with self._lock(conversation_id):
            stored = await self.store.conversation(conversation_id)
            message, created, events = await self.store.add_message(
                conversation_id,
                "user",
                text,
                handoff_id=stored.handoff_id,
                client_message_id=client_id,
                events=[_user_event(conversation_id, "ack", id=client_id)],
            )
            if not created:
                return UserMessageResult(message, duplicate=True)
            await self._publish(events)
            after, effects = transition(stored.conversation, UserSaid(text))
            if any(isinstance(effect, ForwardToBot) for effect in effects):
                await self._bot_turn(stored, after.state, message, client_id, channel)
            else:
                await self._relay_to_agent(stored, message, client_id, channel)
            return UserMessageResult(message, duplicate=False)

    async def _bot_turn(
        self,
        stored: StoredConversation,
        state_after: State,
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
            await self._queue_if_uncertain(message, parse_data, assistant.info.fallback_threshold)
            replies = await assistant.respond(
                conversation.id,
                message.text,
                input_channel=channel,
                message_id=client_id,
                parse_data=parse_data,
            )
            for reply in replies:
                _, _, events = await self.store.add_message(
                    conversation.id,
                    "bot",
                    reply.get("text") or "",
                    events=[_user_event(conversation.id, "bot", in_reply_to=client_id, **reply)],
                )
                await self._publish(events)
            if (
                state_after is not conversation.state
                or decision.fallback_streak != stored.fallback_streak
            ):
                await self.store.save_conversation(
                    stored,
                    dataclasses.replace(conversation, state=state_after, agent_id=None),
                    fallback_streak=decision.fallback_streak,
                )
            return

        await assistant.log_without_answer(
            conversation.id,
            message.text,
            input_channel=channel,
            message_id=client_id,
            then=[BotPaused()],
            parse_data=parse_data,
        )
        queued, _ = transition(
            dataclasses.replace(conversation, state=state_after, agent_id=None),
            HandoffRequested(decision.reason),
        )
        user_events = [
            _user_event(conversation.id, "handoff", status="queued", reason=decision.reason.value)
        ]
        if self.presence.online_count() == 0:
            user_events.append(_user_event(conversation.id, "handoff", status="no_agents"))
        _, events = await self.store.save_conversation(
            stored, queued, events=user_events, fallback_streak=0, new_handoff=True
        )
        await self._publish(events)
        await self._queue_changed()

    async def _queue_if_uncertain(
        self, message: Message, parse_data: dict[str, Any], fallback_threshold: float | None
    ) -> None:
        """Queue a bot-answered message for verification when its confidence was only just
        above the handoff threshold (the FallbackClassifier's, or a stricter per-intent one)."""
        if self.verification_band <= 0:
            return
        intent, confidence = top_intent(parse_data)
        if intent is None:
            return
        threshold = max(fallback_threshold or 0.0, self.policy.intent_thresholds.get(intent, 0.0))
        if confidence < threshold + self.verification_band:
            try:
                await self.learning.queue_verification(message, intent, confidence, "uncertain")
            except Exception:  # the verification queue must never cost the user an answer
                logger.exception("Could not queue message %s for verification", message.id)

    async def feedback(self, conversation_id: str, in_reply_to: str) -> bool:
        """The user marked the bot's answer to their message ``in_reply_to`` (its client id)
        as unhelpful: queue that message for verification. False if there is no such message
        or it was not answered by the bot."""
        message = await self.store.user_message_by_client_id(conversation_id, in_reply_to)
        if message is None or not message.intent_ranking:
            return False
        intent, confidence = top_intent({"intent_ranking": message.intent_ranking})
        if intent is None:
            return False
        await self.learning.queue_verification(message, intent, confidence, "unhelpful")
        return True

    async def _relay_to_agent(
        self, stored: StoredConversation, message: Message, client_id: str, channel: str
    ) -> None:
        conversation = stored.conversation
        agent_id = int(conversation.agent_id) if conversation.agent_id else None
        if agent_id is not None:
            events = await self.store.append_events(
                [
                    _agent_event(
                        agent_id, "user_message", conversation.id, message=_message_view(message)
                    )
                ]
            )
            await self._publish(events)
        # NLU after the relay (the agent already has the text), in tracker order.
        self._in_tracker_order(
            conversation.id,
            lambda: self._log_paused_message(
                conversation.id, agent_id, message, client_id, channel
            ),
        )

    async def _log_paused_message(
        self,
        conversation_id: str,
        agent_id: int | None,
        message: Message,
        client_id: str,
        channel: str,
    ) -> None:
        assistant = await self.assistant.get()
        parse_data = await assistant.log_without_answer(
            conversation_id, message.text, input_channel=channel, message_id=client_id
        )
        ranking = _ranking(parse_data)
        intents_events = (
            [
                _agent_event(
                    agent_id, "intents", conversation_id, message_id=message.id, ranking=ranking
                )
            ]
            if agent_id is not None
            else []
        )
        events = await self.store.set_intent_ranking(message.id, ranking, intents_events)
        await self._publish(events)
        if agent_id is None:
            await self._queue_changed()

    async def user_typing(self, conversation_id: str, typing: bool) -> None:
        stored = await self.store.conversation(conversation_id)
        agent_id = stored.conversation.agent_id
        if stored.conversation.state is State.ASSIGNED and agent_id:
            self.hub.publish(
                [
                    ephemeral_event(
                        "agents",
                        "typing",
                        int(agent_id),
                        conversation_id,
                        who="user",
                        typing=typing,
                    )
                ]
            )

    async def request_handoff(self, conversation_id: str, reason: HandoffReason) -> None:
        """Hand off on the user's request outside a message (e.g. after a thumbs-down)."""
        async with self._lock(conversation_id):
            stored = await self.store.conversation(conversation_id)
            try:
                queued, _ = transition(stored.conversation, HandoffRequested(reason))
            except IllegalTransition as error:
                raise ActionError("illegal_transition", str(error)) from None
            self._append_to_tracker(conversation_id, [BotPaused()])
            user_events = [
                _user_event(conversation_id, "handoff", status="queued", reason=reason.value)
            ]
            if self.presence.online_count() == 0:
                user_events.append(_user_event(conversation_id, "handoff", status="no_agents"))
            _, events = await self.store.save_conversation(
                stored, queued, events=user_events, fallback_streak=0, new_handoff=True
            )
            await self._publish(events)
        await self._queue_changed()

    # Agents ------------------------------------------------------------------------------------

    async def _apply(
        self, agent: Agent, conversation_id: str, command: Command
    ) -> tuple[StoredConversation, StoredConversation]:
        """Check and apply an agent command's transition; return (before, after)."""
        stored = await self.store.conversation(conversation_id)
        if stored.version == 0:
            raise ActionError("unknown_conversation", f"no conversation {conversation_id!r}")
        try:
            after, _ = transition(stored.conversation, command)
        except NotAssignedToAgent as error:
            raise ActionError("not_assigned", str(error)) from None
        except IllegalTransition as error:
            code = "already_claimed" if isinstance(command, AgentClaimed) else "illegal_transition"
            raise ActionError(code, str(error)) from None
        return stored, _stored_like(stored, after)

    async def claim(self, agent: Agent, conversation_id: str) -> None:
        async with self._lock(conversation_id):
            stored, after = await self._apply(agent, conversation_id, AgentClaimed(str(agent.id)))
            try:
                _, events = await self.store.save_conversation(
                    stored,
                    after.conversation,
                    handoff_update={"claimed_at": time.time()},
                    assignment=(agent.id, None),
                    events=[
                        _user_event(
                            conversation_id,
                            "handoff",
                            status="agent_joined",
                            agent=agent.display_name,
                        ),
                        _agent_event(agent.id, "assigned", conversation_id),
                    ],
                )
            except ConcurrentUpdate:
                raise ActionError("already_claimed", "another agent claimed it first") from None
            await self._publish(events)
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
            stored, _ = await self._apply(agent, conversation_id, AgentReplied(str(agent.id), text))
            _, created, events = await self.store.add_message(
                conversation_id,
                "agent",
                text,
                handoff_id=stored.handoff_id,
                agent_id=agent.id,
                client_message_id=client_id,
                response_name=response_name,
                events=[
                    _user_event(conversation_id, "agent", text=text, agent=agent.display_name),
                    _agent_event(
                        agent.id, "agent_message", conversation_id, id=client_id, text=text
                    ),
                ],
            )
            if not created:
                return False
            await self._publish(events)
            if stored.handoff_id is not None:
                await self.store.mark_first_agent_reply(stored.handoff_id, time.time())
            metadata = {"agent_id": agent.id, "agent_name": agent.display_name}
            if response_name:
                metadata["response_name"] = response_name
            self._append_to_tracker(conversation_id, [AgentSaid(text, {"handoff": metadata})])
            return True

    async def label(self, agent: Agent, message_id: int, intent: str) -> bool:
        """Record the agent's intent for a user message; True if the intent is new."""
        message = await self.store.message(message_id)
        if message is None or message.sender != "user":
            raise ActionError("unknown_message", f"no user message {message_id}")
        stored = await self.store.conversation(message.conversation_id)
        assigned_to_me = stored.conversation.agent_id == str(agent.id)
        if not (assigned_to_me or agent.is_maintainer):
            raise ActionError(
                "not_assigned", f"conversation {message.conversation_id} is not assigned to you"
            )
        if not INTENT_NAME_PATTERN.match(intent):
            raise ActionError("invalid_field", INTENT_NAME_RULE)
        assistant = await self.assistant.get()
        is_new = intent not in assistant.intent_names()
        await self.learning.label_message(message, intent, is_new, agent.id)
        events = await self.store.append_events(
            [
                _agent_event(
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
        async with self._lock(conversation_id):
            command = Transferred(str(agent.id), str(to.id) if to else None)
            stored, after = await self._apply(agent, conversation_id, command)
            events = [_agent_event(agent.id, "unassigned", conversation_id, reason=reason)]
            if to is not None:
                events += [
                    _agent_event(
                        to.id, "assigned", conversation_id, transferred_by=agent.display_name
                    ),
                    _user_event(
                        conversation_id, "handoff", status="agent_joined", agent=to.display_name
                    ),
                ]
            else:
                events.append(
                    _user_event(conversation_id, "handoff", status="queued", reason=reason)
                )
            _, written = await self.store.save_conversation(
                stored,
                after.conversation,
                assignment=(to.id if to else None, agent.id),
                events=events,
            )
            await self._publish(written)
        if to is None:
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
        await self._finish(agent, conversation_id, HandedBack(str(agent.id)), "handed_back")

    async def close(self, agent: Agent, conversation_id: str) -> None:
        await self._finish(agent, conversation_id, Closed(str(agent.id)), "closed")

    async def _finish(
        self, agent: Agent, conversation_id: str, command: Command, outcome: str
    ) -> None:
        async with self._lock(conversation_id):
            stored, after = await self._apply(agent, conversation_id, command)
            resumed = self._append_to_tracker(conversation_id, [BotResumed()])
            if self.shared:
                # The next user message may arrive on another process: let Rasa hear of the
                # resume first (bounded: a dead process's Rasa lock ticket must not hold us).
                await asyncio.wait([resumed], timeout=SHARED_RESUME_WAIT_S)
            _, events = await self.store.save_conversation(
                stored,
                after.conversation,
                handoff_update={"closed_at": time.time(), "outcome": outcome},
                assignment=(None, agent.id),
                events=[
                    _user_event(
                        conversation_id, "handoff", status=outcome, agent=agent.display_name
                    ),
                    _agent_event(agent.id, "unassigned", conversation_id, reason=outcome),
                ],
            )
            await self._publish(events)
        if stored.handoff_id is not None:
            await self._learn_from_handoff(conversation_id, stored.handoff_id)

    async def _learn_from_handoff(self, conversation_id: str, handoff_id: int) -> None:
        """Record the finished handoff's response and story candidates for review."""
        try:
            messages = [
                m for m in await self.store.messages(conversation_id) if m.handoff_id == handoff_id
            ]
            labels = await self.learning.labels([m.id for m in messages if m.sender == "user"])
            assistant = self.assistant.current
            known = assistant.responses().keys() if assistant else ()
            rows = handoff_candidates(messages, labels, known)
            if rows:
                await self.learning.add_candidates(rows)
        except Exception:  # learning must never break the handoff itself
            logger.exception("Could not record what handoff %s teaches", handoff_id)

    async def agent_typing(self, agent: Agent, conversation_id: str, typing: bool) -> None:
        stored = await self.store.conversation(conversation_id)
        if stored.conversation.agent_id != str(agent.id):
            raise ActionError(
                "not_assigned", f"conversation {conversation_id} is not assigned to you"
            )
        self.hub.publish(
            [ephemeral_event("user", "typing", None, conversation_id, who="agent", typing=typing)]
        )

    # Views ---------------------------------------------------------------------------------

    async def transcript(self, agent: Agent, conversation_id: str) -> dict[str, Any]:
        """Everything said in the conversation, bot part included, with intents and labels."""
        stored = await self.store.conversation(conversation_id)
        if stored.conversation.agent_id != str(agent.id) and not agent.is_maintainer:
            raise ActionError(
                "not_assigned", f"conversation {conversation_id} is not assigned to you"
            )
        messages = await self.store.messages(conversation_id)
        labels = await self.store.labels([m.id for m in messages if m.sender == "user"])
        return {
            "conversation_id": conversation_id,
            "state": stored.conversation.state.value,
            "handoff_reason": stored.conversation.handoff_reason,
            "messages": [{**_message_view(m), "label": labels.get(m.id)} for m in messages],
        }

    async def queue_snapshot(self) -> list[dict[str, Any]]:
        return [
            {
                "conversation_id": item.conversation_id,
                "position": position,
                "reason": item.reason,
                "queued_at": item.queued_at,
                "last_message": item.last_message.text if item.last_message else None,
                "intents": (item.last_message.intent_ranking or [])[:3]
                if item.last_message
                else [],
            }
            for position, item in enumerate(await self.store.queue(), start=1)
        ]

    async def _queue_changed(self) -> None:
        """Tell agents the new queue and each waiting user their place in it."""
        snapshot = await self.queue_snapshot()
        new_events = [_agent_event(None, "queue", items=snapshot)]
        new_events += [
            _user_event(
                item["conversation_id"],
                "queue_position",
                position=item["position"],
                waiting=len(snapshot),
            )
            for item in snapshot
        ]
        events = await self.store.append_events(new_events)
        await self._publish(events)


def _message_view(message: Message) -> dict[str, Any]:
    return {
        "message_id": message.id,
        "sender": message.sender,
        "text": message.text,
        "intents": message.intent_ranking,
        "agent_id": message.agent_id,
        "response_name": message.response_name,
        "created_at": message.created_at,
    }


def _stored_like(stored: StoredConversation, conversation: Any) -> StoredConversation:
    return StoredConversation(
        conversation, stored.version, stored.handoff_id, stored.fallback_streak, stored.updated_at
    )
