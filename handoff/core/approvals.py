"""Approve before send: which bot answers wait for a person, who is asked, and how it ends.

A bot answer whose confidence is in the approval band (the handoff threshold up to the
threshold plus ``HANDOFF_APPROVAL_BAND``) is held as a draft for an online agent with a free
slot; the conversation stays with the bot (this is not a handoff). Each held answer ends
exactly once, in one of :data:`OUTCOMES`:

``approved``
    The agent approved the draft: it is sent as it is, and the message becomes an example of
    the predicted intent (source ``approval``).
``corrected``
    The agent picked another (known) intent: the bot's turn is undone in Rasa's tracker and
    the bot answers for that intent; the message becomes an example of it (``correction``).
``replaced``
    The agent wrote the answer: the bot's turn is undone, the message is logged without an
    answer and the agent's text is sent in the bot's voice; with an intent, the message
    becomes an example of it (``correction``).
``timed_out``
    Nobody decided within ``HANDOFF_APPROVAL_TIMEOUT`` seconds: the draft is sent and the
    message goes to the verification queue, as without approvals.
``superseded``
    The user wrote again first (or the server restarted): the draft is sent before anything
    else happens, and the message goes to the verification queue.

Pure: no I/O. The service holds and settles answers (:mod:`handoff.conversations.service`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DECIDED",
    "OUTCOMES",
    "ApprovalRules",
    "choose_agent",
    "in_approval_band",
    "may_hold",
]

OUTCOMES = ("approved", "corrected", "replaced", "timed_out", "superseded")
"""How a held answer ends (see the module docstring)."""
DECIDED = ("approved", "corrected", "replaced")
"""The outcomes a person decided: the answer was checked before the user read it."""


@dataclass(frozen=True)
class ApprovalRules:
    """``band``: how far above the handoff threshold answers wait for a person (0: off);
    ``timeout_s``: how long one waits; ``slots``: answers one agent decides at once."""

    band: float = 0.0
    timeout_s: float = 20.0
    slots: int = 3

    @property
    def on(self) -> bool:
        return self.band > 0


def in_approval_band(confidence: float, threshold: float, band: float) -> bool:
    """Whether an answer of ``confidence`` (at or above the handoff ``threshold``, else it
    would have been handed off) is close enough to it to wait for a person (``band`` 0:
    approvals off)."""
    return band > 0 and threshold <= confidence < threshold + band


def may_hold(messages: Sequence[dict[str, Any]], actions: Sequence[dict[str, Any]]) -> bool:
    """Whether a bot turn can wait for approval: it says something, and it ran no action but
    plain responses (a custom action or a form has done its work already: holding its words
    back would undo nothing)."""
    return bool(messages) and not actions


def choose_agent(online: Iterable[int], pending: Mapping[int, int], slots: int) -> int | None:
    """The online agent to ask: the one with the fewest answers waiting for them, under
    ``slots`` (ties: the lowest id); None when everyone is full or nobody is online."""
    free = [agent for agent in online if pending.get(agent, 0) < slots]
    if not free:
        return None
    return min(free, key=lambda agent: (pending.get(agent, 0), agent))
