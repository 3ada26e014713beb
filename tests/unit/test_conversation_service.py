"""Every ConversationService path without a model: real SQLite store, hub, presence, locks and
learning store; only the assistant is a scripted fake (tests/unit/fake_assistant.py).

Assertions are on what users and agents get (stored events, hub deliveries), on what is stored
(messages, states, assignments, labels) and on what Rasa's tracker would hold (the fake's
records): never on the service's internals.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from handoff.assistant.interface import AssistantHolder
from handoff.assistant.tracker_changes import AgentSaid, BotPaused, BotResumed
from handoff.conversations.service import ActionError, ConversationService
from handoff.core.approvals import ApprovalRules
from handoff.core.routing import HandoffReason, State
from handoff.core.triggers import FALLBACK_INTENT, HandoffPolicy
from handoff.realtime.hub import Hub, Subscription
from handoff.realtime.presence import Presence
from handoff.settings import Settings
from handoff.storage.learning_store import Label, LearningStore
from handoff.storage.migrate import upgrade
from handoff.storage.records import Agent, Event
from handoff.storage.store import Store
from tests.unit.fake_assistant import (
    BotAnswered,
    FakeAssistant,
    FormAsked,
    ScriptedAction,
    UserLogged,
)

BALANCE = "what is my balance"
BALANCE_ANSWER = "Your balance is 100 EUR."
HELLO = "hello"
ASK_PERSON = "I want to talk to a person"
FRAUD = "someone stole my card"
GIBBERISH = "blorp zzk"
FALLBACK_ANSWER = "Sorry, I didn't get that."

UNSURE = "balance please maybe"
"""Answered by the bot just above the fake's handoff threshold (0.5)."""
NLU = {
    BALANCE: [("check_balance", 0.95), ("greet", 0.03)],
    UNSURE: [("check_balance", 0.58), ("greet", 0.3)],
    HELLO: [("greet", 0.97), ("check_balance", 0.01)],
    ASK_PERSON: [("human_handoff", 0.92), ("greet", 0.05)],
    FRAUD: [("report_fraud", 0.91), ("check_balance", 0.04)],
}
UNFREEZE = "unfreeze my card ending 7310"
FREEZE = "freeze my card ending 4242"
TRANSFER = "move 50 euros"
TRANSFER_ASK = "Which account should I move it to?"
NLU.update(
    {
        UNFREEZE: [("unfreeze_card", 0.93), ("check_balance", 0.02)],
        FREEZE: [("report_lost_card", 0.94), ("check_balance", 0.02)],
        TRANSFER: [("transfer_money", 0.96), ("check_balance", 0.01)],
    }
)
ANSWERS = {
    "check_balance": [{"text": BALANCE_ANSWER}],
    "greet": [{"text": "Hello! How can I help?"}],
    "unfreeze_card": [{"text": "A colleague has to unfreeze that card."}],
    "report_lost_card": [],
    "transfer_money": [{"text": "How much?"}],
    FALLBACK_INTENT: [{"text": FALLBACK_ANSWER}],
}
ACTIONS = {
    "unfreeze_card": ScriptedAction("action_unfreeze_card", pauses=True),
    "report_lost_card": ScriptedAction("action_freeze_card", fails=True),
    "transfer_money": ScriptedAction(
        "transfer_form", slots={"amount": "50 euros"}, form="transfer_form", ask=TRANSFER_ASK
    ),
}


def server_policy(**changes: Any) -> HandoffPolicy:
    """The policy the server builds from its default settings (with ``changes``)."""
    settings = Settings()
    values: dict[str, Any] = {
        "request_intents": frozenset(settings.handoff_intents),
        "always_human_intents": frozenset(settings.always_human_intents),
        "intent_thresholds": dict(settings.intent_thresholds),
        "fallbacks_before_handoff": settings.fallbacks_before_handoff,
    }
    return HandoffPolicy(**{**values, **changes})


@dataclass
class World:
    service: ConversationService
    store: Store
    learning: LearningStore
    hub: Hub
    presence: Presence
    fake: FakeAssistant
    alice: Agent
    bob: Agent
    carol: Agent
    """A maintainer."""

    def listen(self, *conversation_ids: str) -> Subscription:
        """Everything the hub delivers from now on to these users and to every agent."""
        agents = [f"agent:{a.id}" for a in (self.alice, self.bob, self.carol)]
        return self.hub.subscribe(["agents", *agents, *(f"user:{c}" for c in conversation_ids)])

    async def user_events(self, conversation_id: str) -> list[Event]:
        await self.service.tracker_caught_up(conversation_id)
        return await self.store.user_events_after(conversation_id, 0)

    async def agent_events(self, agent: Agent, conversation_id: str | None = None) -> list[Event]:
        """The stored events ``agent`` gets: their own and the broadcasts (queue updates)."""
        if conversation_id is not None:
            await self.service.tracker_caught_up(conversation_id)
        return await self.store.agent_events_after(agent.id, 0)

    async def state(self, conversation_id: str) -> State:
        return (await self.store.conversation(conversation_id)).conversation.state

    async def hand_off(self, conversation_id: str = "c1") -> None:
        """Put a new conversation in the queue (its first message is not understood)."""
        await self.service.user_message(conversation_id, f"{conversation_id}-m0", GIBBERISH, "web")
        assert await self.state(conversation_id) is State.QUEUED

    async def assign(self, agent: Agent, conversation_id: str = "c1") -> None:
        """A new conversation, handed off and claimed by ``agent``."""
        await self.hand_off(conversation_id)
        await self.service.claim(agent, conversation_id)


Build = Callable[..., Awaitable[World]]


@pytest.fixture(scope="session")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty database at the latest schema, migrated once and copied for each test."""
    path = tmp_path_factory.mktemp("schema") / "migrated.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
async def build(tmp_path: Path, migrated: Path) -> AsyncIterator[Build]:
    """Build a world (``policy``, ``verification_band`` as the service takes them)."""
    stores: list[tuple[ConversationService, Store]] = []

    async def make(
        policy: HandoffPolicy | None = None,
        verification_band: float = 0.0,
        approval: ApprovalRules | None = None,
    ) -> World:
        path = tmp_path / f"handoff{len(stores)}.db"
        shutil.copyfile(migrated, path)
        store = await Store.open(f"sqlite:///{path}")
        learning = LearningStore(store.engine)
        hub, presence = Hub(), Presence()
        fake = FakeAssistant(
            NLU, ANSWERS, intents=[*sorted({*ANSWERS} - {FALLBACK_INTENT})], actions=ACTIONS
        )
        holder: AssistantHolder = AssistantHolder()
        holder.set(fake)
        service = ConversationService(
            store,
            hub,
            holder,
            policy or server_policy(),
            presence,
            learning,
            verification_band,
            approval=approval,
        )
        stores.append((service, store))
        alice = await store.add_agent("alice", "Alice", "x", "agent")
        bob = await store.add_agent("bob", "Bob", "x", "agent")
        carol = await store.add_agent("carol", "Carol", "x", "maintainer")
        return World(service, store, learning, hub, presence, fake, alice, bob, carol)

    yield make
    for service, store in stores:
        await service.drain(timeout=5)
        await service.stop_timers()
        await store.close()


@pytest.fixture
async def world(build: Build) -> World:
    return await build()


def types(events: list[Event]) -> list[str]:
    return [e.type for e in events]


def handoffs(events: list[Event]) -> list[dict[str, Any]]:
    """The payloads of the ``handoff`` notices among ``events``."""
    return [e.payload for e in events if e.type == "handoff"]


def of_type(events: list[Event], type_: str) -> list[Event]:
    return [e for e in events if e.type == type_]


# The bot ---------------------------------------------------------------------------------


async def test_a_confident_message_is_answered_by_the_bot(world: World) -> None:
    live = world.listen("c1")
    result = await world.service.user_message("c1", "m1", BALANCE, "web")

    assert not result.duplicate and result.message.text == BALANCE
    events = await world.user_events("c1")
    assert types(events) == ["ack", "bot"]
    assert events[0].payload["id"] == "m1"
    assert events[1].payload["text"] == BALANCE_ANSWER
    assert events[1].payload["in_reply_to"] == "m1"
    assert [e.id for e in live.drain()] == [e.id for e in events]  # delivered live, once
    assert await world.state("c1") is State.BOT
    assert await world.service.queue_snapshot() == []
    user, bot = await world.store.messages("c1")
    assert (user.sender, bot.sender, bot.text) == ("user", "bot", BALANCE_ANSWER)
    assert user.intent_ranking is not None and user.intent_ranking[0]["name"] == "check_balance"
    assert world.fake.changes("c1") == [
        UserLogged(BALANCE, "m1", "check_balance", answered=True, parse_data={}),
        BotAnswered(BALANCE_ANSWER),
    ]
    assert world.fake.parsed == [BALANCE]  # NLU once: the answer reuses the decision's parse


async def test_low_confidence_queues_the_user_and_pauses_the_bot(world: World) -> None:
    live = world.listen("c1")
    await world.service.user_message("c1", "m1", GIBBERISH, "web")

    events = await world.user_events("c1")
    assert types(events) == ["ack", "handoff", "handoff"]
    assert [(h["status"], h.get("reason")) for h in handoffs(events)] == [
        ("queued", HandoffReason.LOW_CONFIDENCE.value),
        ("no_agents", None),  # nobody is online
    ]
    assert all(h["text"] for h in handoffs(events))  # the user is told in words
    delivered = live.drain()
    assert "bot" not in types(delivered)
    # The place in the queue is live only (one stored event per queue change, for agents).
    (position,) = [e for e in delivered if e.type == "queue_position"]
    assert position.id == 0 and position.payload["position"] == 1
    assert position.payload["waiting"] == 1
    assert await world.service.queue_position("c1") == {"position": 1, "waiting": 1}
    stored = await world.store.conversation("c1")
    assert stored.conversation.state is State.QUEUED
    assert stored.conversation.handoff_reason == HandoffReason.LOW_CONFIDENCE.value
    (queued,) = await world.service.queue_snapshot()
    assert queued["conversation_id"] == "c1" and queued["last_message"] == GIBBERISH
    assert queued["intents"][0]["name"] == FALLBACK_INTENT
    (queue_event,) = of_type(await world.agent_events(world.alice), "queue")
    assert [item["conversation_id"] for item in queue_event.payload["items"]] == ["c1"]
    # Rasa's transcript: the message with its parse data, no answer, then the pause.
    logged, paused = world.fake.changes("c1")
    assert logged == UserLogged(GIBBERISH, "m1", FALLBACK_INTENT, answered=False, parse_data={})
    assert isinstance(logged, UserLogged) and logged.parse_data["intent_ranking"]
    assert paused == BotPaused("low_confidence")
    assert world.fake.parsed == [GIBBERISH]


async def test_with_an_agent_online_the_user_is_not_told_nobody_is_there(world: World) -> None:
    world.presence.connected(world.alice.id, world.alice.display_name)
    await world.service.user_message("c1", "m1", GIBBERISH, "web")
    assert [h["status"] for h in handoffs(await world.user_events("c1"))] == ["queued"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (ASK_PERSON, HandoffReason.USER_ASKED),
        (FRAUD, HandoffReason.ALWAYS_HUMAN_INTENT),
    ],
)
async def test_a_handoff_intent_queues_the_user_even_when_confident(
    world: World, text: str, reason: HandoffReason
) -> None:
    await world.service.user_message("c1", "m1", text, "web")

    assert handoffs(await world.user_events("c1"))[0]["reason"] == reason.value
    assert (await world.store.conversation("c1")).conversation.handoff_reason == reason.value
    intent = NLU[text][0][0]
    assert world.fake.changes("c1") == [
        UserLogged(text, "m1", intent, answered=False, parse_data={}),
        BotPaused(reason.value),
    ]


async def test_repeated_fallback_hands_off_on_the_second_miss_in_a_row(build: Build) -> None:
    world = await build(policy=server_policy(fallbacks_before_handoff=2))
    say = world.service.user_message

    await say("c1", "m1", GIBBERISH, "web")  # first miss: the bot's fallback answer
    await say("c1", "m2", HELLO, "web")  # understood: the streak starts over
    await say("c1", "m3", GIBBERISH, "web")  # a first miss again
    assert await world.state("c1") is State.BOT
    bot_texts = [e.payload["text"] for e in of_type(await world.user_events("c1"), "bot")]
    assert bot_texts == [FALLBACK_ANSWER, "Hello! How can I help?", FALLBACK_ANSWER]

    await say("c1", "m4", GIBBERISH, "web")  # the second in a row
    stored = await world.store.conversation("c1")
    assert stored.conversation.state is State.QUEUED
    assert stored.conversation.handoff_reason == HandoffReason.REPEATED_FALLBACK.value
    assert world.fake.changes("c1")[-2:] == [
        UserLogged(GIBBERISH, "m4", FALLBACK_INTENT, answered=False, parse_data={}),
        BotPaused("repeated_fallback"),
    ]


async def test_a_duplicate_client_id_is_stored_and_delivered_once(world: World) -> None:
    live = world.listen("c1")
    first = await world.service.user_message("c1", "m1", BALANCE, "web")
    again = await world.service.user_message("c1", "m1", BALANCE, "web")

    assert again.duplicate and again.message.id == first.message.id
    assert types(await world.user_events("c1")) == ["ack", "bot"]
    assert types(live.drain()) == ["ack", "bot"]
    assert [m.sender for m in await world.store.messages("c1")] == ["user", "bot"]
    assert world.fake.parsed == [BALANCE]


async def test_a_resent_message_whose_bot_turn_failed_before_nlu_is_answered(
    world: World,
) -> None:
    """The user got ``internal`` (say the worker restarted during the parse) and resends the
    same message: it is answered, not acknowledged into a dead end."""
    parse = world.fake.parse

    async def failing_parse(text: str) -> dict[str, Any]:
        raise RuntimeError("the assistant worker died")

    world.fake.parse = failing_parse  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await world.service.user_message("c1", "m1", BALANCE, "web")
    world.fake.parse = parse  # type: ignore[method-assign]
    again = await world.service.user_message("c1", "m1", BALANCE, "web")

    assert again.duplicate
    assert [m.sender for m in await world.store.messages("c1")] == ["user", "bot"]
    assert types(await world.user_events("c1")) == ["ack", "bot"]
    # Answered once: a third send of the same message changes nothing.
    await world.service.user_message("c1", "m1", BALANCE, "web")
    assert [m.sender for m in await world.store.messages("c1")] == ["user", "bot"]
    assert world.fake.parsed == [BALANCE]


async def test_feedback_queues_the_bot_answered_message_for_verification(world: World) -> None:
    await world.service.user_message("c1", "m1", BALANCE, "web")

    assert await world.service.feedback("c1", "m1")
    assert not await world.service.feedback("c1", "no-such-message")
    (verification,) = await world.learning.verifications()
    assert (verification.text, verification.reason) == (BALANCE, "unhelpful")
    assert verification.predicted_intent == "check_balance"


async def test_request_handoff_outside_a_message_pauses_the_bot(world: World) -> None:
    await world.service.user_message("c1", "m1", BALANCE, "web")
    await world.service.request_handoff("c1", HandoffReason.UNHELPFUL_ANSWER)

    assert await world.state("c1") is State.QUEUED
    queued = handoffs(await world.user_events("c1"))[0]
    assert queued["status"] == "queued"
    assert queued["reason"] == HandoffReason.UNHELPFUL_ANSWER.value
    assert world.fake.changes("c1")[-1] == BotPaused("unhelpful_answer")
    with pytest.raises(ActionError) as refused:
        await world.service.request_handoff("c1", HandoffReason.UNHELPFUL_ANSWER)
    assert refused.value.code == "illegal_transition"


# Relay while handed off --------------------------------------------------------------------


async def test_a_message_in_the_queue_is_parsed_once_after_it_is_stored(world: World) -> None:
    await world.hand_off("c1")
    await world.service.user_message("c1", "m1", BALANCE, "web")

    events = await world.user_events("c1")
    assert "bot" not in types(events)
    last = (await world.store.messages("c1"))[-1]
    assert last.text == BALANCE and last.handoff_id is not None
    assert last.intent_ranking is not None and last.intent_ranking[0]["name"] == "check_balance"
    (queued,) = await world.service.queue_snapshot()
    assert queued["last_message"] == BALANCE  # agents see the newest message in the queue
    assert world.fake.changes("c1")[-1] == UserLogged(
        BALANCE, "m1", "check_balance", answered=False, parse_data={}
    )
    assert world.fake.parsed.count(BALANCE) == 1


async def test_a_message_to_an_assigned_agent_comes_before_its_intents(world: World) -> None:
    await world.assign(world.alice)
    live = world.listen("c1")
    await world.service.user_message("c1", "m1", BALANCE, "web")
    await world.service.user_message("c1", "m1", BALANCE, "web")  # a resend: once

    events = of_type(await world.agent_events(world.alice, "c1"), "user_message")
    events += of_type(await world.agent_events(world.alice), "intents")
    relayed, intents = events
    assert relayed.agent_id == world.alice.id and intents.agent_id == world.alice.id
    assert relayed.payload["message"]["text"] == BALANCE
    assert relayed.id < intents.id  # the text first; NLU after it
    assert intents.payload["message_id"] == relayed.payload["message"]["message_id"]
    assert intents.payload["ranking"][0]["name"] == "check_balance"
    assert [e.type for e in live.drain() if e.type in ("user_message", "intents")] == [
        "user_message",
        "intents",
    ]
    assert not of_type(await world.agent_events(world.bob), "user_message")
    assert world.fake.parsed.count(BALANCE) == 1


async def test_when_nlu_falls_behind_the_newest_message_is_guessed_and_none_twice(
    world: World,
) -> None:
    await world.assign(world.alice)
    entered, release = asyncio.Event(), asyncio.Event()
    parse = world.fake.parse

    async def slow_parse(text: str) -> dict[str, Any]:
        entered.set()
        await release.wait()
        return await parse(text)

    world.fake.parse = slow_parse  # type: ignore[method-assign]
    await world.service.user_message("c1", "m1", "first", "web")
    await entered.wait()  # NLU of the first message is under way
    await world.service.user_message("c1", "m2", "second", "web")
    await world.service.user_message("c1", "m3", "third", "web")
    await asyncio.sleep(0.01)
    assert world.service.intent_guesses.lag_seconds(time.monotonic()) > 0
    release.set()

    intents = of_type(await world.agent_events(world.alice, "c1"), "intents")
    assert [bool(e.payload["ranking"]) for e in intents] == [True, False, True]  # []: none
    assert world.fake.parsed[-2:] == ["first", "third"]  # the superseded one skipped, none twice
    assert "second" not in world.fake.parsed
    logged = [c for c in world.fake.changes("c1") if isinstance(c, UserLogged)]
    assert [c.text for c in logged][-3:] == ["first", "second", "third"]  # Rasa has them all
    assert logged[-2].intent is None
    assert world.service.intent_guesses.skipped == 1
    assert world.service.intent_guesses.lag_seconds(time.monotonic()) == 0.0


# Agents ------------------------------------------------------------------------------------


async def test_claim_assigns_the_conversation_and_a_second_claim_is_refused(
    world: World,
) -> None:
    await world.hand_off("c1")
    live = world.listen("c1")
    await world.service.claim(world.alice, "c1")

    assert await world.state("c1") is State.ASSIGNED
    assert [
        s.conversation.id for s in await world.store.assigned_conversations(world.alice.id)
    ] == ["c1"]
    joined = handoffs(await world.user_events("c1"))[-1]
    assert (joined["status"], joined["agent"]) == ("agent_joined", "Alice")
    delivered = live.drain()
    (assigned,) = of_type(delivered, "assigned")
    assert (assigned.agent_id, assigned.payload["conversation_id"]) == (world.alice.id, "c1")
    assert of_type(delivered, "queue")[-1].payload["items"] == []
    assert await world.service.queue_snapshot() == []

    with pytest.raises(ActionError) as refused:
        await world.service.claim(world.bob, "c1")
    assert refused.value.code == "already_claimed"
    assert await world.store.assigned_conversations(world.bob.id) == []
    with pytest.raises(ActionError) as unknown:
        await world.service.claim(world.bob, "nobody-here")
    assert unknown.value.code == "unknown_conversation"


async def test_a_reply_reaches_the_user_and_rasas_transcript_once(world: World) -> None:
    await world.assign(world.alice)
    sent = await world.service.reply(world.alice, "c1", "r1", "Hi, I'm Alice.", "utter_greet")
    resent = await world.service.reply(world.alice, "c1", "r1", "Hi, I'm Alice.", "utter_greet")

    assert sent and not resent
    said = of_type(await world.user_events("c1"), "agent")
    assert [(e.payload["text"], e.payload["agent"]) for e in said] == [("Hi, I'm Alice.", "Alice")]
    (echo,) = of_type(await world.agent_events(world.alice, "c1"), "agent_message")
    assert (echo.payload["id"], echo.payload["text"]) == ("r1", "Hi, I'm Alice.")
    replies = [m for m in await world.store.messages("c1") if m.sender == "agent"]
    assert [(m.text, m.agent_id, m.response_name) for m in replies] == [
        ("Hi, I'm Alice.", world.alice.id, "utter_greet")
    ]
    metadata = {"agent_id": world.alice.id, "agent_name": "Alice", "response_name": "utter_greet"}
    agent_said = [c for c in world.fake.changes("c1") if isinstance(c, AgentSaid)]
    assert agent_said == [AgentSaid("Hi, I'm Alice.", {"handoff": metadata})]
    with pytest.raises(ActionError) as refused:
        await world.service.reply(world.bob, "c1", "r2", "Me too.")
    assert refused.value.code == "not_assigned"


async def test_label_by_the_assigned_agent_or_a_maintainer(world: World) -> None:
    await world.assign(world.alice)
    (message,) = [m for m in await world.store.messages("c1") if m.sender == "user"]

    assert not await world.service.label(world.alice, message.id, "check_balance")
    assert await world.service.label(world.carol, message.id, "lost_card")  # new intent
    labelled = of_type(await world.agent_events(world.alice), "labelled")
    assert [(e.payload["intent"], e.payload["new_intent"]) for e in labelled] == [
        ("check_balance", False)
    ]
    assert (await world.learning.labels([message.id]))[message.id] == Label("lost_card", True)

    with pytest.raises(ActionError) as not_mine:
        await world.service.label(world.bob, message.id, "check_balance")
    assert not_mine.value.code == "not_assigned"
    with pytest.raises(ActionError) as invalid:
        await world.service.label(world.alice, message.id, "Not An Intent!")
    assert invalid.value.code == "invalid_field"
    with pytest.raises(ActionError) as unknown:
        await world.service.label(world.alice, message.id + 1000, "check_balance")
    assert unknown.value.code == "unknown_message"


async def test_transfer_to_another_agent(world: World) -> None:
    await world.assign(world.alice)
    await world.service.transfer(world.alice, "c1", world.bob)

    assert await world.state("c1") is State.ASSIGNED
    assert await world.store.assigned_conversations(world.alice.id) == []
    assert len(await world.store.assigned_conversations(world.bob.id)) == 1
    (unassigned,) = of_type(await world.agent_events(world.alice), "unassigned")
    assert unassigned.payload["reason"] == "transferred"
    (assigned,) = of_type(await world.agent_events(world.bob), "assigned")
    assert assigned.payload["transferred_by"] == "Alice"
    joined = handoffs(await world.user_events("c1"))[-1]
    assert (joined["status"], joined["agent"]) == ("agent_joined", "Bob")
    assert await world.service.reply(world.bob, "c1", "r1", "Bob here.")
    with pytest.raises(ActionError) as refused:
        await world.service.reply(world.alice, "c1", "r2", "Still me?")
    assert refused.value.code == "not_assigned"


async def test_transfer_to_a_disabled_agent_is_refused(world: World) -> None:
    await world.assign(world.alice)
    await world.store.update_agent(world.bob.id, disabled=True)
    disabled = await world.store.agent_by_id(world.bob.id)
    assert disabled is not None

    with pytest.raises(ActionError) as refused:
        await world.service.transfer(world.alice, "c1", disabled)
    assert refused.value.code == "unknown_agent"
    assert len(await world.store.assigned_conversations(world.alice.id)) == 1


async def test_transfer_to_the_queue(world: World) -> None:
    await world.assign(world.alice)
    await world.service.transfer(world.alice, "c1", None)

    assert await world.state("c1") is State.QUEUED
    assert await world.store.assigned_conversations(world.alice.id) == []
    requeued = handoffs(await world.user_events("c1"))[-1]
    assert (requeued["status"], requeued["reason"]) == ("queued", "transferred")
    assert [item["conversation_id"] for item in await world.service.queue_snapshot()] == ["c1"]
    assert world.fake.paused("c1")  # still with people: the bot stays paused
    await world.service.claim(world.bob, "c1")
    assert len(await world.store.assigned_conversations(world.bob.id)) == 1


async def test_hand_back_resumes_the_bot_for_the_next_message(world: World) -> None:
    await world.assign(world.alice)
    await world.service.reply(world.alice, "c1", "r1", "Fixed it.")
    await world.service.hand_back(world.alice, "c1")

    assert await world.state("c1") is State.BOT
    back = handoffs(await world.user_events("c1"))[-1]
    assert (back["status"], back["agent"]) == ("handed_back", "Alice")
    assert of_type(await world.agent_events(world.alice), "unassigned")[-1].payload["reason"] == (
        "handed_back"
    )
    metadata = {"agent_id": world.alice.id, "agent_name": "Alice"}
    assert world.fake.changes("c1")[-2:] == [
        AgentSaid("Fixed it.", {"handoff": metadata}),
        BotResumed("handed_back"),
    ]

    await world.service.user_message("c1", "m1", BALANCE, "web")
    assert of_type(await world.user_events("c1"), "bot")[-1].payload["text"] == BALANCE_ANSWER
    assert world.fake.changes("c1")[-2:] == [
        UserLogged(BALANCE, "m1", "check_balance", answered=True, parse_data={}),
        BotAnswered(BALANCE_ANSWER),
    ]


async def test_close_ends_the_handoff_and_the_next_message_starts_over(world: World) -> None:
    await world.assign(world.alice)
    await world.service.close(world.alice, "c1")

    assert await world.state("c1") is State.CLOSED
    closed = handoffs(await world.user_events("c1"))[-1]
    assert (closed["status"], closed["agent"]) == ("closed", "Alice")
    assert await world.store.assigned_conversations(world.alice.id) == []
    assert world.fake.changes("c1")[-1] == BotResumed("closed")
    with pytest.raises(ActionError) as refused:
        await world.service.reply(world.alice, "c1", "r1", "One more thing.")
    assert refused.value.code == "not_assigned"

    await world.service.user_message("c1", "m1", BALANCE, "web")
    assert await world.state("c1") is State.BOT
    assert of_type(await world.user_events("c1"), "bot")[-1].payload["text"] == BALANCE_ANSWER


async def test_typing_and_transcript_are_for_the_assigned_agent(world: World) -> None:
    await world.assign(world.alice)
    live = world.listen("c1")
    await world.service.agent_typing(world.alice, "c1", True)

    (typing,) = of_type(live.drain(), "typing")
    assert (typing.audience, typing.payload["who"], typing.payload["typing"]) == (
        "user",
        "agent",
        True,
    )
    with pytest.raises(ActionError) as not_typing:
        await world.service.agent_typing(world.bob, "c1", True)
    assert not_typing.value.code == "not_assigned"
    assert of_type(live.drain(), "typing") == []

    transcript = await world.service.transcript(world.alice, "c1")
    assert transcript["state"] == State.ASSIGNED.value
    assert [m["text"] for m in transcript["messages"]] == [GIBBERISH]
    assert (await world.service.transcript(world.carol, "c1"))["messages"]  # a maintainer
    with pytest.raises(ActionError) as not_reading:
        await world.service.transcript(world.bob, "c1")
    assert not_reading.value.code == "not_assigned"


async def test_requeue_all_puts_every_conversation_of_an_agent_back_once(world: World) -> None:
    await world.assign(world.alice, "c1")
    await world.assign(world.alice, "c2")
    await world.assign(world.bob, "c3")

    assert await world.service.requeue_all(world.alice, "signed_out") == 2
    assert await world.service.requeue_all(world.alice, "signed_out") == 0
    for conversation_id in ("c1", "c2"):
        assert await world.state(conversation_id) is State.QUEUED
        requeued = handoffs(await world.user_events(conversation_id))[-1]
        assert (requeued["status"], requeued["reason"]) == ("queued", "signed_out")
    assert await world.state("c3") is State.ASSIGNED
    assert sorted(item["conversation_id"] for item in await world.service.queue_snapshot()) == [
        "c1",
        "c2",
    ]


# Custom actions ----------------------------------------------------------------------------


async def test_an_action_that_pauses_hands_off_like_a_trigger(world: World) -> None:
    await world.service.user_message("c1", "m1", UNFREEZE, "web")

    events = await world.user_events("c1")
    assert types(events) == ["ack", "bot", "handoff", "handoff"]  # the action's words first
    assert events[1].payload["text"] == "A colleague has to unfreeze that card."
    assert [(h["status"], h.get("reason")) for h in handoffs(events)] == [
        ("queued", "action"),
        ("no_agents", None),
    ]
    stored = await world.store.conversation("c1")
    assert stored.conversation.state is State.QUEUED
    assert stored.conversation.handoff_reason == HandoffReason.ACTION.value
    (queued,) = await world.service.queue_snapshot()
    assert queued["reason"] == "action"
    # The action paused Rasa's tracker itself: no second pause.
    assert [type(r).__name__ for r in world.fake.changes("c1")] == [
        "UserLogged",
        "BotAnswered",
        "BotPaused",
    ]
    user = (await world.store.messages("c1"))[0]
    assert user.turn is not None
    assert user.turn["actions"] == [{"name": "action_unfreeze_card", "events": [{"paused": True}]}]


async def test_a_failed_action_apologises_and_hands_off(world: World) -> None:
    world.presence.connected(world.alice.id, world.alice.display_name)
    await world.service.user_message("c1", "m1", FREEZE, "web")

    (queued,) = handoffs(await world.user_events("c1"))
    assert (queued["status"], queued["reason"]) == ("queued", "action_failed")
    assert queued["text"].startswith("Sorry, something went wrong on our side")
    assert await world.state("c1") is State.QUEUED
    assert world.fake.changes("c1")[-1] == BotPaused("action_failed")  # Rasa hears of it
    await world.service.claim(world.alice, "c1")
    transcript = await world.service.transcript(world.alice, "c1")
    assert transcript["handoff_reason"] == "action_failed"
    (turn,) = [m["turn"] for m in transcript["messages"] if m["turn"]]
    assert turn["failed_actions"] == [
        {"name": "action_freeze_card", "error": "Failed to execute custom action"}
    ]


async def test_slots_and_action_results_reach_the_transcript(world: World) -> None:
    await world.service.user_message("c1", "m1", TRANSFER, "web")
    await world.service.request_handoff("c1", HandoffReason.UNHELPFUL_ANSWER)
    await world.service.claim(world.alice, "c1")

    transcript = await world.service.transcript(world.alice, "c1")
    assert transcript["slots"] == {"amount": "50 euros"}
    assert transcript["active_loop"] == "transfer_form"
    (user, _) = transcript["messages"]
    assert user["turn"]["actions"] == [
        {
            "name": "transfer_form",
            "events": [{"slot": "amount", "value": "50 euros"}, {"active_loop": "transfer_form"}],
        }
    ]


async def test_a_hand_back_into_a_form_asks_its_question_after_the_notice(world: World) -> None:
    await world.service.user_message("c1", "m1", TRANSFER, "web")
    await world.service.request_handoff("c1", HandoffReason.UNHELPFUL_ANSWER)
    await world.service.claim(world.alice, "c1")
    await world.service.hand_back(world.alice, "c1")

    events = await world.user_events("c1")
    assert [(e.type, e.payload.get("status") or e.payload.get("text")) for e in events[-2:]] == [
        ("handoff", "handed_back"),
        ("bot", TRANSFER_ASK),
    ]
    assert world.fake.changes("c1")[-2:] == [
        BotResumed("handed_back"),
        FormAsked("transfer_form", TRANSFER_ASK),
    ]
    assert (await world.store.messages("c1"))[-1].text == TRANSFER_ASK  # kept as a bot message


async def test_a_close_ends_the_form_and_says_nothing_more(world: World) -> None:
    await world.service.user_message("c1", "m1", TRANSFER, "web")
    await world.service.request_handoff("c1", HandoffReason.UNHELPFUL_ANSWER)
    await world.service.claim(world.alice, "c1")
    await world.service.close(world.alice, "c1")

    events = await world.user_events("c1")
    assert events[-1].type == "handoff" and events[-1].payload["status"] == "closed"
    assert world.fake.changes("c1")[-1] == BotResumed("closed")
    assert "c1" not in world.fake.forms
