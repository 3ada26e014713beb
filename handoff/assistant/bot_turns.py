"""What one bot turn did, read off Rasa's tracker: the actions run, the slots, a handoff by an
action, and the custom actions that failed.

Rasa 3.6 logs a failing custom action (action server unreachable, an error in the action) and
carries on as if it had returned nothing, so the user would hear nothing of it. The server must
know: :func:`recording_failures` collects, for the turn in progress, every custom action (and
form validation action) whose call failed, through one wrapper around Rasa's ``RemoteAction``
installed by :func:`install_failure_probe`.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rasa.shared.core.constants import ACTION_LISTEN_NAME
from rasa.shared.core.events import (
    ActionExecuted,
    ActionExecutionRejected,
    ActiveLoop,
    BotUttered,
    ConversationPaused,
    Event,
    FollowupAction,
    SlotSet,
    UserUttered,
)
from rasa.shared.core.trackers import DialogueStateTracker

from handoff.assistant.interface import BotTurn

__all__ = [
    "bot_turn",
    "collected",
    "install_failure_probe",
    "recording_failures",
    "turn_start",
]

SLOT_EXTRACTION = "action_extract_slots"
"""Slots Rasa fills from the user's message before predicting: logged without an action."""

_failures: contextvars.ContextVar[list[dict[str, str]] | None] = contextvars.ContextVar(
    "handoff_action_failures", default=None
)


def install_failure_probe() -> None:
    """Make every failing ``RemoteAction`` call also recorded for :func:`recording_failures`
    (idempotent). A rejection (the action server's "not this time", e.g. a form's slot) is not
    a failure. Imports Rasa's actions (and with them TensorFlow): call it where the model
    loads."""
    from rasa.core.actions.action import ActionExecutionRejection, RemoteAction

    original = RemoteAction.run
    if getattr(original, "handoff_probe", False):
        return

    async def run(self: Any, *args: Any, **kwargs: Any) -> list[Event]:
        try:
            events: list[Event] = await original(self, *args, **kwargs)
        except ActionExecutionRejection:
            raise
        except Exception as error:
            failures = _failures.get()
            if failures is not None:
                failures.append({"name": self.name(), "error": str(error)})
            raise
        return events

    run.handoff_probe = True  # type: ignore[attr-defined]
    RemoteAction.run = run


@contextmanager
def recording_failures() -> Iterator[list[dict[str, str]]]:
    """The list that collects this task's failed custom actions while the block runs."""
    failures: list[dict[str, str]] = []
    token = _failures.set(failures)
    try:
        yield failures
    finally:
        _failures.reset(token)


def collected(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The bot messages a collecting output channel got, as the server passes them on
    (without Rasa's ``recipient_id``)."""
    return [{k: v for k, v in m.items() if k != "recipient_id"} for m in messages]


def turn_start(tracker: DialogueStateTracker) -> int:
    """Index of the tracker's last user message: a turn's events follow it."""
    for index in range(len(tracker.events) - 1, -1, -1):
        if isinstance(tracker.events[index], UserUttered):
            return index
    return len(tracker.events)


def bot_turn(
    tracker: DialogueStateTracker,
    start: int,
    messages: Sequence[dict[str, Any]],
    failures: Sequence[dict[str, str]],
) -> BotTurn:
    """The :class:`BotTurn` of the events after index ``start`` (the user's message)."""
    actions: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    handed_off_by: str | None = None
    for event in list(tracker.events)[start + 1 :]:
        if isinstance(event, ActionExecuted):
            name = event.action_name or ""
            if name == ACTION_LISTEN_NAME or name.startswith("utter_"):
                current = None
            else:
                current = {"name": name, "events": []}
                actions.append(current)
            continue
        summary = _summary(event)
        if summary is None:
            continue
        if current is None:  # filled from the message before any action ran
            current = {"name": SLOT_EXTRACTION, "events": []}
            actions.append(current)
        current["events"].append(summary)
        if isinstance(event, ConversationPaused):
            handed_off_by = current["name"]
    slots = {
        name: value for name, value in tracker.current_slot_values().items() if value is not None
    }
    unique_failures = [dict(item) for item in {f["name"]: f for f in failures}.values()]
    return BotTurn(
        messages=collected(messages),
        actions=actions,
        slots=slots,
        active_loop=tracker.active_loop_name,
        handed_off_by=handed_off_by if tracker.is_paused() else None,
        failed_actions=unique_failures,
    )


def _summary(event: Event) -> dict[str, Any] | None:
    """What agents are shown of one event an action caused (None: nothing, e.g. a message)."""
    if isinstance(event, BotUttered | UserUttered):
        return None
    if isinstance(event, SlotSet):
        return {"slot": event.key, "value": event.value}
    if isinstance(event, ActiveLoop):
        return {"active_loop": event.name}
    if isinstance(event, ConversationPaused):
        return {"paused": True}
    if isinstance(event, ActionExecutionRejected):
        return {"rejected": True}
    if isinstance(event, FollowupAction):
        return {"followup": event.action_name}
    return None  # Rasa's bookkeeping (featurization hints, loop interruptions, ...)
