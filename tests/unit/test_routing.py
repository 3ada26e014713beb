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

DANA, LEE, KIM = 1, 2, 3
"""Agent ids."""

BOT = Conversation("c1")
QUEUED = Conversation("c1", State.QUEUED, handoff_reason="user_asked")
ASSIGNED = Conversation("c1", State.ASSIGNED, agent_id=DANA, handoff_reason="user_asked")
CLOSED = Conversation("c1", State.CLOSED, handoff_reason="user_asked")

ASK = HandoffRequested(HandoffReason.USER_ASKED)

LEGAL: list[tuple[Conversation, Command, State, int | None, list[Effect]]] = [
    (BOT, UserSaid("hi"), State.BOT, None, [ForwardToBot()]),
    (CLOSED, UserSaid("hi again"), State.BOT, None, [ForwardToBot()]),
    (QUEUED, UserSaid("hello?"), State.QUEUED, None, [DeliverToAgent(None), RecordWhilePaused()]),
    (
        ASSIGNED,
        UserSaid("thanks"),
        State.ASSIGNED,
        DANA,
        [DeliverToAgent(DANA), RecordWhilePaused()],
    ),
    (BOT, ASK, State.QUEUED, None, [PauseBot(), NotifyUser("queued"), QueueChanged()]),
    (CLOSED, ASK, State.QUEUED, None, [PauseBot(), NotifyUser("queued"), QueueChanged()]),
    (
        QUEUED,
        AgentClaimed(DANA),
        State.ASSIGNED,
        DANA,
        [AssignmentChanged(DANA, None), NotifyUser("agent_joined", DANA), QueueChanged()],
    ),
    (ASSIGNED, AgentReplied(DANA, "Hi!"), State.ASSIGNED, DANA, [DeliverToUser(DANA, "Hi!")]),
    (
        ASSIGNED,
        Transferred(DANA, LEE),
        State.ASSIGNED,
        LEE,
        [AssignmentChanged(LEE, DANA), NotifyUser("agent_joined", LEE)],
    ),
    (
        ASSIGNED,
        Transferred(DANA, None),
        State.QUEUED,
        None,
        [AssignmentChanged(None, DANA), NotifyUser("queued"), QueueChanged()],
    ),
    (
        ASSIGNED,
        HandedBack(DANA),
        State.BOT,
        None,
        [ResumeBot(), AssignmentChanged(None, DANA), NotifyUser("handed_back")],
    ),
    (
        ASSIGNED,
        Closed(DANA),
        State.CLOSED,
        None,
        [ResumeBot(), AssignmentChanged(None, DANA), NotifyUser("closed")],
    ),
]


@pytest.mark.parametrize(("before", "command", "state", "agent", "effects"), LEGAL)
def test_legal_transitions(
    before: Conversation, command: Command, state: State, agent: int | None, effects: list[Effect]
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
    AgentReplied(DANA, "x"),
    Transferred(DANA, LEE),
    Transferred(DANA, None),
    HandedBack(DANA),
    Closed(DANA),
]

ILLEGAL: list[tuple[Conversation, Command, type[IllegalTransition], str]] = [
    (QUEUED, ASK, IllegalTransition, "already handed off"),
    (ASSIGNED, ASK, IllegalTransition, "already handed off"),
    (BOT, AgentClaimed(DANA), IllegalTransition, "not waiting"),
    (CLOSED, AgentClaimed(DANA), IllegalTransition, "not waiting"),
    (ASSIGNED, AgentClaimed(LEE), IllegalTransition, "claimed it first"),
    (ASSIGNED, AgentClaimed(DANA), IllegalTransition, "claimed it first"),
    (ASSIGNED, Transferred(DANA, DANA), IllegalTransition, "already assigned to that agent"),
    *[
        (state, cmd, NotAssignedToAgent, "not assigned to any agent")
        for state in (BOT, QUEUED, CLOSED)
        for cmd in AGENT_COMMANDS
    ],
    *[
        (ASSIGNED, cmd, NotAssignedToAgent, "assigned to another agent")
        for cmd in (
            AgentReplied(LEE, "x"),
            Transferred(LEE, KIM),
            Transferred(LEE, None),
            HandedBack(LEE),
            Closed(LEE),
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
    assert caught.value.conversation_id == before.id


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
