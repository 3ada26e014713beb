"""The routing state machine: every command in every state, table-driven."""

from __future__ import annotations

import pytest

from handoff.core.routing import (
    AgentClaimed,
    AgentReplied,
    AssignmentChanged,
    Closed,
    Command,
    Conversation,
    DeliverToAgent,
    DeliverToUser,
    Effect,
    ForwardToBot,
    HandedBack,
    HandoffReason,
    HandoffRequested,
    IllegalTransition,
    NotAssignedToAgent,
    NotifyUser,
    PauseBot,
    QueueChanged,
    RecordWhilePaused,
    ResumeBot,
    State,
    Transferred,
    UserSaid,
    transition,
)

BOT = Conversation("c1")
QUEUED = Conversation("c1", State.QUEUED, handoff_reason="user_asked")
ASSIGNED = Conversation("c1", State.ASSIGNED, agent_id="dana", handoff_reason="user_asked")
CLOSED = Conversation("c1", State.CLOSED, handoff_reason="user_asked")

ASK = HandoffRequested(HandoffReason.USER_ASKED)

LEGAL: list[tuple[Conversation, Command, State, str | None, list[Effect]]] = [
    (BOT, UserSaid("hi"), State.BOT, None, [ForwardToBot()]),
    (CLOSED, UserSaid("hi again"), State.BOT, None, [ForwardToBot()]),
    (QUEUED, UserSaid("hello?"), State.QUEUED, None, [RecordWhilePaused(), DeliverToAgent(None)]),
    (
        ASSIGNED,
        UserSaid("thanks"),
        State.ASSIGNED,
        "dana",
        [RecordWhilePaused(), DeliverToAgent("dana")],
    ),
    (BOT, ASK, State.QUEUED, None, [PauseBot(), NotifyUser("queued"), QueueChanged()]),
    (CLOSED, ASK, State.QUEUED, None, [PauseBot(), NotifyUser("queued"), QueueChanged()]),
    (
        QUEUED,
        AgentClaimed("dana"),
        State.ASSIGNED,
        "dana",
        [AssignmentChanged("dana", None), NotifyUser("agent_joined", "dana"), QueueChanged()],
    ),
    (ASSIGNED, AgentReplied("dana", "Hi!"), State.ASSIGNED, "dana", [DeliverToUser("dana", "Hi!")]),
    (
        ASSIGNED,
        Transferred("dana", "lee"),
        State.ASSIGNED,
        "lee",
        [AssignmentChanged("lee", "dana"), NotifyUser("agent_joined", "lee")],
    ),
    (
        ASSIGNED,
        Transferred("dana", None),
        State.QUEUED,
        None,
        [AssignmentChanged(None, "dana"), NotifyUser("queued"), QueueChanged()],
    ),
    (
        ASSIGNED,
        HandedBack("dana"),
        State.BOT,
        None,
        [ResumeBot(), AssignmentChanged(None, "dana"), NotifyUser("handed_back")],
    ),
    (
        ASSIGNED,
        Closed("dana"),
        State.CLOSED,
        None,
        [ResumeBot(), AssignmentChanged(None, "dana"), NotifyUser("closed")],
    ),
]


@pytest.mark.parametrize(("before", "command", "state", "agent", "effects"), LEGAL)
def test_legal_transitions(
    before: Conversation, command: Command, state: State, agent: str | None, effects: list[Effect]
) -> None:
    after, produced = transition(before, command)
    assert after.state is state
    assert after.agent_id == agent
    assert after.id == before.id
    assert produced == effects


def test_handoff_records_its_reason() -> None:
    after, _ = transition(BOT, HandoffRequested(HandoffReason.LOW_CONFIDENCE))
    assert after.handoff_reason == "low_confidence"


AGENT_COMMANDS: list[Command] = [
    AgentReplied("dana", "x"),
    Transferred("dana", "lee"),
    Transferred("dana", None),
    HandedBack("dana"),
    Closed("dana"),
]

ILLEGAL: list[tuple[Conversation, Command, type[IllegalTransition], str]] = [
    (QUEUED, ASK, IllegalTransition, "already handed off"),
    (ASSIGNED, ASK, IllegalTransition, "already handed off"),
    (BOT, AgentClaimed("dana"), IllegalTransition, "not waiting"),
    (CLOSED, AgentClaimed("dana"), IllegalTransition, "not waiting"),
    (ASSIGNED, AgentClaimed("lee"), IllegalTransition, "claimed it first"),
    (ASSIGNED, AgentClaimed("dana"), IllegalTransition, "claimed it first"),
    (ASSIGNED, Transferred("dana", "dana"), IllegalTransition, "already assigned to that agent"),
    *[
        (state, cmd, NotAssignedToAgent, "not assigned to any agent")
        for state in (BOT, QUEUED, CLOSED)
        for cmd in AGENT_COMMANDS
    ],
    *[
        (ASSIGNED, cmd, NotAssignedToAgent, "assigned to another agent")
        for cmd in (
            AgentReplied("lee", "x"),
            Transferred("lee", "kim"),
            Transferred("lee", None),
            HandedBack("lee"),
            Closed("lee"),
        )
    ],
]


@pytest.mark.parametrize(("before", "command", "error", "why"), ILLEGAL)
def test_illegal_transitions_raise_and_name_the_state(
    before: Conversation, command: Command, error: type[IllegalTransition], why: str
) -> None:
    with pytest.raises(error, match=why) as caught:
        transition(before, command)
    assert type(caught.value) is error
    assert caught.value.state is before.state
    assert before.state.value in str(caught.value)


def test_every_state_and_command_pair_is_covered() -> None:
    covered = {(b.state, type(c)) for b, c, *_ in LEGAL} | {
        (b.state, type(c)) for b, c, *_ in ILLEGAL
    }
    commands = {
        UserSaid,
        HandoffRequested,
        AgentClaimed,
        AgentReplied,
        Transferred,
        HandedBack,
        Closed,
    }
    missing = {(s, c) for s in State for c in commands} - covered
    assert not missing, missing
