"""Approve before send: uncertain bot answers held for an agent, and every way one ends
(real store, hub and presence; the scripted assistant of test_conversation_service)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handoff.assistant.tracker_changes import AgentSaid
from handoff.conversations.service import ActionError
from handoff.core.approvals import ApprovalRules, choose_agent, in_approval_band, may_hold
from handoff.core.routing import State
from handoff.storage.records import Event
from tests.unit.fake_assistant import BotAnswered, UserLogged
from tests.unit.test_conversation_service import (  # noqa: F401  (fixtures)
    BALANCE,
    BALANCE_ANSWER,
    HELLO,
    TRANSFER,
    UNSURE,
    Build,
    World,
    build,
    migrated,
    of_type,
)

RULES = ApprovalRules(band=0.2, timeout_s=30.0, slots=1)
"""The fake's threshold is 0.5: UNSURE (0.58) waits for a person, BALANCE (0.95) does not."""


# The rules, pure -------------------------------------------------------------------------


def test_only_answers_in_the_band_above_the_threshold_wait() -> None:
    assert in_approval_band(0.58, 0.5, 0.2)
    assert not in_approval_band(0.7, 0.5, 0.2)  # confident enough
    assert not in_approval_band(0.45, 0.5, 0.2)  # below: handed off, not held
    assert not in_approval_band(0.58, 0.5, 0.0)  # approvals off


def test_only_turns_of_plain_responses_wait() -> None:
    assert may_hold([{"text": "hi"}], [])
    assert not may_hold([], [])
    assert not may_hold([{"text": "Done."}], [{"name": "action_freeze_card", "events": []}])


@given(
    st.dictionaries(st.integers(1, 9), st.integers(0, 4)),
    st.sets(st.integers(1, 9)),
    st.integers(1, 4),
)
def test_the_least_busy_online_agent_with_a_free_slot_is_asked(
    pending: dict[int, int], online: set[int], slots: int
) -> None:
    chosen = choose_agent(online, pending, slots)
    free = {a for a in online if pending.get(a, 0) < slots}
    if not free:
        assert chosen is None
    else:
        assert chosen in free
        assert pending.get(chosen, 0) == min(pending.get(a, 0) for a in free)


# The service -----------------------------------------------------------------------------


@pytest.fixture
async def desk(build: Build) -> World:  # noqa: F811
    world = await build(approval=RULES)
    world.presence.connected(world.alice.id, world.alice.display_name)
    return world


def user_types(events: Iterable[Event]) -> list[str]:
    return [e.type for e in events]


async def offered(world: World) -> Event:
    (offer,) = of_type(await world.agent_events(world.alice), "approval")
    return offer


async def test_without_an_agent_online_the_answer_goes_out_at_once(build: Build) -> None:  # noqa: F811
    world = await build(approval=RULES)
    await world.service.user_message("c1", "m1", UNSURE, "web")
    assert user_types(await world.user_events("c1")) == ["ack", "bot"]
    assert await world.service.approvals.pending() == []
    (queued,) = await world.learning.verifications()  # checked later instead
    assert (queued.text, queued.reason) == (UNSURE, "uncertain")


async def test_a_confident_answer_is_not_held(desk: World) -> None:
    await desk.service.user_message("c1", "m1", BALANCE, "web")
    assert user_types(await desk.user_events("c1")) == ["ack", "bot"]
    assert await desk.learning.verifications() == []


async def test_a_held_answer_waits_for_the_agent_and_goes_out_approved(desk: World) -> None:
    live = desk.hub.subscribe(["user:c1"])
    await desk.service.user_message("c1", "m1", UNSURE, "web")

    assert user_types(await desk.user_events("c1")) == ["ack"]  # nothing said yet
    typing = [e for e in live.drain() if e.type == "typing"]
    assert [(e.payload["who"], e.payload["typing"]) for e in typing] == [("bot", True)]
    offer = await offered(desk)
    assert offer.payload["draft"] == [{"text": BALANCE_ANSWER}]
    assert offer.payload["message"]["text"] == UNSURE
    assert offer.payload["message"]["intents"][0]["name"] == "check_balance"
    assert await desk.state("c1") is State.BOT  # not a handoff

    await desk.service.decide(desk.alice, offer.payload["approval_id"], "approve")

    bots = of_type(await desk.user_events("c1"), "bot")
    assert [(b.payload["text"], b.payload["in_reply_to"]) for b in bots] == [(BALANCE_ANSWER, "m1")]
    assert [e.payload["typing"] for e in live.drain() if e.type == "typing"] == [False]
    (settled,) = of_type(await desk.agent_events(desk.alice), "approval_settled")
    assert (settled.payload["outcome"], settled.payload["by"]) == ("approved", "Alice")
    (candidate,) = await desk.learning.candidates(["pending"])
    assert (candidate.intent, candidate.source, candidate.text) == (
        "check_balance",
        "approval",
        UNSURE,
    )
    assert await desk.learning.verifications() == []  # verified already
    with pytest.raises(ActionError) as again:
        await desk.service.decide(desk.alice, offer.payload["approval_id"], "approve")
    assert again.value.code == "already_settled"


async def test_a_correction_undoes_the_turn_and_the_bot_answers_for_that_intent(
    desk: World,
) -> None:
    await desk.service.user_message("c1", "m1", UNSURE, "web")
    offer = await offered(desk)
    with pytest.raises(ActionError) as unknown:
        await desk.service.decide(desk.alice, offer.payload["approval_id"], "correct", "nope")
    assert unknown.value.code == "unknown_intent"

    await desk.service.decide(desk.alice, offer.payload["approval_id"], "correct", "greet")

    (bot,) = of_type(await desk.user_events("c1"), "bot")
    assert bot.payload["text"] == "Hello! How can I help?"
    # Rasa's transcript: the held turn undone, the message answered as greet.
    assert desk.fake.changes("c1") == [
        UserLogged(UNSURE, "m1", "greet", answered=True, parse_data={}),
        BotAnswered("Hello! How can I help?"),
    ]
    (candidate,) = await desk.learning.candidates(["pending"])
    assert (candidate.intent, candidate.source) == ("greet", "correction")


async def test_a_replacement_is_said_in_the_bots_voice_and_kept_in_rasas_transcript(
    desk: World,
) -> None:
    await desk.service.user_message("c1", "m1", UNSURE, "web")
    offer = await offered(desk)
    text = "Your balance is in the app under Accounts."
    await desk.service.decide(desk.alice, offer.payload["approval_id"], "replace", None, text)

    (bot,) = of_type(await desk.user_events("c1"), "bot")
    assert (bot.payload["text"], bot.payload["in_reply_to"]) == (text, "m1")
    _, agent = await desk.store.messages("c1")
    assert (agent.sender, agent.agent_id, agent.text) == ("agent", desk.alice.id, text)
    metadata = {"approval": {"agent_id": desk.alice.id, "agent_name": "Alice"}}
    assert desk.fake.changes("c1") == [
        UserLogged(UNSURE, "m1", "check_balance", answered=False, parse_data={}),
        AgentSaid(text, metadata),
    ]
    assert await desk.learning.candidates(["pending"]) == []  # no intent given: no example


async def test_an_undecided_answer_goes_out_at_its_deadline_and_is_verified_later(
    build: Build,  # noqa: F811
) -> None:
    world = await build(approval=ApprovalRules(band=0.2, timeout_s=0.2, slots=1))
    world.presence.connected(world.alice.id, world.alice.display_name)
    await world.service.user_message("c1", "m1", UNSURE, "web")
    assert user_types(await world.user_events("c1")) == ["ack"]
    await asyncio.sleep(0.5)
    assert user_types(await world.user_events("c1")) == ["ack", "bot"]
    (settled,) = of_type(await world.agent_events(world.alice), "approval_settled")
    assert settled.payload["outcome"] == "timed_out"
    (queued,) = await world.learning.verifications()
    assert (queued.text, queued.reason) == (UNSURE, "uncertain")


async def test_the_users_next_message_sends_the_held_answer_first(desk: World) -> None:
    await desk.service.user_message("c1", "m1", UNSURE, "web")
    await desk.service.user_message("c1", "m2", HELLO, "web")

    bots = of_type(await desk.user_events("c1"), "bot")
    assert [b.payload["in_reply_to"] for b in bots] == ["m1", "m2"]
    (settled,) = of_type(await desk.agent_events(desk.alice), "approval_settled")
    assert settled.payload["outcome"] == "superseded"


async def test_an_agent_with_no_free_slot_is_not_asked_and_others_cannot_decide(
    desk: World,
) -> None:
    await desk.service.user_message("c1", "m1", UNSURE, "web")
    await desk.service.user_message("c2", "m1", UNSURE, "web")  # Alice's one slot is taken
    assert user_types(await desk.user_events("c2")) == ["ack", "bot"]
    offer = await offered(desk)
    with pytest.raises(ActionError) as refused:
        await desk.service.decide(desk.bob, offer.payload["approval_id"], "approve")
    assert refused.value.code == "not_assigned"
    await desk.service.decide(desk.carol, offer.payload["approval_id"], "approve")  # maintainer
    assert user_types(await desk.user_events("c1")) == ["ack", "bot"]


async def test_a_turn_that_ran_an_action_is_not_held(desk: World) -> None:
    desk.fake.nlu[TRANSFER] = [("transfer_money", 0.58)]
    await desk.service.user_message("c1", "m1", TRANSFER, "web")
    assert user_types(await desk.user_events("c1")) == ["ack", "bot"]


async def test_held_answers_left_by_a_restart_go_out_at_their_deadline(
    build: Build,  # noqa: F811
) -> None:
    world = await build(approval=ApprovalRules(band=0.2, timeout_s=0.2, slots=1))
    world.presence.connected(world.alice.id, world.alice.display_name)
    await world.service.user_message("c1", "m1", UNSURE, "web")
    await world.service.stop_timers()  # the server stops
    assert await world.service.resume_held_answers() == 1  # and starts again
    await asyncio.sleep(0.5)
    assert user_types(await world.user_events("c1")) == ["ack", "bot"]
    assert await world.service.held_answers(world.alice) == []


async def test_a_correction_to_an_intent_the_bot_says_nothing_for_is_refused(
    desk: World,
) -> None:
    desk.fake.answers["quiet"] = []
    desk.fake._intents.append("quiet")
    await desk.service.user_message("c1", "m1", UNSURE, "web")
    offer = await offered(desk)
    with pytest.raises(ActionError) as silent:
        await desk.service.decide(desk.alice, offer.payload["approval_id"], "correct", "quiet")
    assert silent.value.code == "no_answer"
    assert (await desk.service.held_answers(desk.alice))[0]["approval_id"] == offer.payload[
        "approval_id"
    ]  # still waiting for a decision


# Agent assist ----------------------------------------------------------------------------


async def test_an_agent_gets_the_bots_answer_as_a_draft_for_the_top_or_chosen_intent(
    build: Build,  # noqa: F811
) -> None:
    world = await build()
    await world.assign(world.alice)
    await world.service.user_message("c1", "m1", BALANCE, "web")
    relayed = (await world.store.messages("c1"))[-1]
    await world.service.tracker_caught_up("c1")  # its intent guesses are in

    top = await world.service.suggest(world.alice, relayed.id)
    assert top == {
        "intent": "check_balance",
        "draft": [{"text": BALANCE_ANSWER}],
        "stopped_at": None,
    }
    chosen = await world.service.suggest(world.alice, relayed.id, "greet")
    assert chosen["draft"] == [{"text": "Hello! How can I help?"}]
    action = await world.service.suggest(world.alice, relayed.id, "unfreeze_card")
    assert action["stopped_at"] == "action_unfreeze_card"
    assert (await world.service.suggest(world.alice, relayed.id, "brand_new"))["draft"] == []
    with pytest.raises(ActionError) as refused:
        await world.service.suggest(world.bob, relayed.id)
    assert refused.value.code == "not_assigned"
    assert [type(r).__name__ for r in world.fake.changes("c1")][-1] == "UserLogged"  # unchanged
