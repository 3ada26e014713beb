"""Reviewing candidates and verifying bot answers: validation of decisions (from the console's
JSON or the command line) and their application. Used by the HTTP API and ``handoff review``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from typing import Any

from handoff.core.errors import HandoffError
from handoff.learning.candidates import Review, review_groups, with_duplicates
from handoff.learning.loop import existing_data
from handoff.settings import Settings
from handoff.storage.learning_store import (
    REVIEWABLE,
    Candidate,
    Decision,
    LearningStore,
    VerificationDecision,
)

__all__ = [
    "INTENT_NAME_PATTERN",
    "INTENT_NAME_RULE",
    "DecisionError",
    "apply_decisions",
    "apply_verifications",
    "current_review",
    "parse_decisions",
    "parse_verifications",
]

INTENT_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{1,63}$")
"""Intent names agents may create: 2-64 lower-case letters, digits and '_'."""
INTENT_NAME_RULE = (
    "intent must be 2-64 characters: lower-case letters, digits and '_', starting with a letter"
)
REVIEW_ACTIONS = ("approve", "reject", "edit", "hold_out")
MAX_DECISIONS = 1000
MAX_TEXT_CHARS = 2000


class DecisionError(HandoffError, ValueError):
    """A review or verification request that cannot be applied; nothing was changed."""

    code = "invalid_field"


def parse_decisions(raw: Any) -> list[Decision]:
    """Validate ``[{"id": int, "action": "approve"|"reject"|"edit"|"hold_out", "text"?,
    "intent"?}]``. ``hold_out`` puts an example into the held-out test set instead of the
    training data (with the text and intent given, if any)."""
    items = _items(raw)
    decisions = []
    for index, item in enumerate(items):
        where = f"decisions[{index}]"
        action = item.get("action")
        if action not in REVIEW_ACTIONS:
            raise DecisionError(f"{where}.action must be approve, reject, edit or hold_out")
        text, intent = item.get("text"), item.get("intent")
        if action == "edit" and text is None and intent is None:
            raise DecisionError(f"{where}: edit needs a new text or intent")
        if text is not None and (
            not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT_CHARS
        ):
            raise DecisionError(f"{where}.text must be 1-{MAX_TEXT_CHARS} characters")
        if intent is not None:
            _check_intent(intent, where)
        decisions.append(
            Decision(
                _id(item, where),
                action,
                text.strip() if isinstance(text, str) else None,
                intent,
            )
        )
    return decisions


def parse_verifications(raw: Any) -> list[VerificationDecision]:
    """Validate ``[{"id": int, "action": "confirm"|"correct"|"dismiss", "intent"?}]``."""
    decisions = []
    for index, item in enumerate(_items(raw)):
        where = f"decisions[{index}]"
        action = item.get("action")
        if action not in ("confirm", "correct", "dismiss"):
            raise DecisionError(f"{where}.action must be confirm, correct or dismiss")
        intent = item.get("intent")
        if action == "correct":
            _check_intent(intent, where)
        decisions.append(VerificationDecision(_id(item, where), action, intent))
    return decisions


def _items(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        raise DecisionError("decisions must be a non-empty list")
    if len(raw) > MAX_DECISIONS:
        raise DecisionError(f"at most {MAX_DECISIONS} decisions at a time")
    if not all(isinstance(item, dict) for item in raw):
        raise DecisionError("each decision must be an object")
    return raw


def _id(item: dict[str, Any], where: str) -> int:
    value = item.get("id")
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise DecisionError(f"{where}.id must be a positive integer")
    return value


def _check_intent(intent: Any, where: str) -> None:
    if not isinstance(intent, str) or not INTENT_NAME_PATTERN.match(intent):
        raise DecisionError(f"{where}.{INTENT_NAME_RULE}")


async def current_review(settings: Settings, learning: LearningStore) -> Review:
    """Pending candidates grouped by intent, with conflict / low-value / duplicate flags."""
    pending = await learning.candidates(["pending"])
    approved = await learning.candidates(["approved", "holdout"])
    existing = await asyncio.to_thread(existing_data, settings)
    return review_groups(pending, existing.examples, settings.low_value_confidence, approved)


async def apply_decisions(
    settings: Settings, learning: LearningStore, decisions: list[Decision], reviewer_id: int
) -> list[Candidate]:
    """Apply decisions (approving or holding out a collapsed item rejects its near-duplicates)
    atomically. Only examples can be held out."""
    held_out = [d.candidate_id for d in decisions if d.action == "hold_out"]
    if held_out:
        chosen = await learning.candidates(REVIEWABLE, ids=held_out)
        not_examples = [c.id for c in chosen if c.kind != "example"]
        if not_examples:
            listed = ", ".join(f"#{i}" for i in not_examples)
            raise DecisionError(f"only examples can be held out, not {listed}")
    review = await current_review(settings, learning)
    return await learning.decide(with_duplicates(decisions, review), reviewer_id)


async def apply_verifications(
    learning: LearningStore,
    decisions: list[VerificationDecision],
    agent_id: int,
    known_intents: Iterable[str],
) -> list[int]:
    return await learning.verify(decisions, agent_id, known_intents)
