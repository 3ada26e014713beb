"""What a handoff teaches, and how candidates are shown for review: pure functions, no I/O.

:func:`handoff_candidates` turns a finished handoff (messages + agent labels) into a new-response
candidate per agent-created intent and one story candidate. :func:`review_groups` groups pending
candidates by intent and flags conflicts, low-value examples and near-duplicates.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from handoff.learning.export import clean_example, normalize, response_name
from handoff.storage.learning_store import Candidate, Decision, Label
from handoff.storage.records import Message

__all__ = [
    "Review",
    "ReviewGroup",
    "ReviewItem",
    "handoff_candidates",
    "review_groups",
    "with_duplicates",
]

NEAR_DUPLICATE_RATIO = 0.9
"""Two examples of one intent whose normalised texts are at least this similar
(``difflib`` ratio) are shown as one."""


def handoff_candidates(
    messages: Sequence[Message],
    labels: Mapping[int, Label],
    known_responses: Iterable[str],
) -> list[dict[str, Any]]:
    """Response and story candidates (column values) from one handoff's messages, in order.

    An agent reply answers the latest user message before it, if that message is labelled. The
    reply's canned response names the answer; a free-text reply to an agent-created intent
    becomes that intent's new response ``utter_<intent>`` (the first such reply wins); a
    free-text reply to a known intent counts as its ``utter_<intent>`` if the domain has one.
    Turns with no response name are left out of the story.
    """
    known = set(known_responses)
    responses: dict[str, Message] = {}
    turns: list[list[str]] = []
    pending: Label | None = None
    for message in messages:
        if message.sender == "user":
            pending = labels.get(message.id)
            continue
        if message.sender != "agent" or pending is None:
            continue
        intent, name = pending.intent, message.response_name
        if name is None:
            default = response_name(intent)
            if pending.new_intent and intent not in responses:
                responses[intent] = message
                name = default
            elif default in known or intent in responses:
                name = default
        if name is not None:
            turns.append([intent, name])
        pending = None

    if not messages:
        return []
    first = messages[0]
    rows: list[dict[str, Any]] = [
        {
            "kind": "response",
            "source": "handoff",
            "intent": intent,
            "text": reply.text,
            "new_intent": True,
            "conversation_id": reply.conversation_id,
            "message_id": reply.id,
            "handoff_id": reply.handoff_id,
            "proposed_by": reply.agent_id,
        }
        for intent, reply in responses.items()
    ]
    if turns:
        rows.append(
            {
                "kind": "story",
                "source": "handoff",
                "turns": turns,
                "conversation_id": first.conversation_id,
                "handoff_id": first.handoff_id,
            }
        )
    return rows


# Review ----------------------------------------------------------------------------------------


@dataclass
class ReviewItem:
    candidate: Candidate
    conflicts: list[str] = field(default_factory=list)
    """Other intents the same normalised text is (or is proposed as) an example of."""
    low_value: bool = False
    """The live model already predicts this intent with high confidence."""
    in_training_data: bool = False
    """The same normalised text is already an example of this intent."""
    duplicates: list[int] = field(default_factory=list)
    """Ids of near-duplicate candidates collapsed into this one."""

    def to_dict(self) -> dict[str, Any]:
        c = self.candidate
        return {
            "id": c.id,
            "kind": c.kind,
            "status": c.status,
            "source": c.source,
            "intent": c.intent,
            "text": c.text,
            "turns": c.turns,
            "new_intent": c.new_intent,
            "conversation_id": c.conversation_id,
            "message_id": c.message_id,
            "model_intent": c.model_intent,
            "model_confidence": c.model_confidence,
            "note": c.note,
            "conflicts": self.conflicts,
            "low_value": self.low_value,
            "in_training_data": self.in_training_data,
            "duplicates": self.duplicates,
        }


@dataclass
class ReviewGroup:
    intent: str
    new_intent: bool
    examples: list[ReviewItem] = field(default_factory=list)
    responses: list[ReviewItem] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "intent": self.intent,
            "new_intent": self.new_intent,
            "examples": [item.to_dict() for item in self.examples],
            "responses": [item.to_dict() for item in self.responses],
        }


@dataclass
class Review:
    groups: list[ReviewGroup]
    stories: list[ReviewItem]

    def to_dict(self) -> dict[str, Any]:
        return {
            "groups": [group.to_dict() for group in self.groups],
            "stories": [item.to_dict() for item in self.stories],
        }


def review_groups(
    candidates: Sequence[Candidate],
    existing_examples: Mapping[str, str],
    low_value_confidence: float,
    approved: Sequence[Candidate] = (),
) -> Review:
    """Group ``candidates`` by intent, with flags.

    ``existing_examples`` maps normalised training example texts to their intent;
    ``approved`` candidates (not yet exported) count as proposals for conflicts.
    """
    proposals: dict[str, set[str]] = {}
    for candidate in (*candidates, *approved):
        if candidate.kind == "example" and candidate.text and candidate.intent:
            proposals.setdefault(_key(candidate.text), set()).add(candidate.intent)

    groups: dict[str, ReviewGroup] = {}
    stories: list[ReviewItem] = []
    for candidate in sorted(candidates, key=lambda c: c.id):
        if candidate.kind == "story" or not candidate.intent:
            stories.append(ReviewItem(candidate))
            continue
        group = groups.setdefault(
            candidate.intent, ReviewGroup(candidate.intent, candidate.new_intent)
        )
        group.new_intent = group.new_intent or candidate.new_intent
        if candidate.kind == "response":
            group.responses.append(ReviewItem(candidate))
            continue
        key = _key(candidate.text or "")
        known = existing_examples.get(key)
        others = proposals.get(key, set()) | ({known} if known else set())
        item = ReviewItem(
            candidate,
            conflicts=sorted(others - {candidate.intent}),
            low_value=candidate.model_intent == candidate.intent
            and (candidate.model_confidence or 0.0) >= low_value_confidence,
            in_training_data=known == candidate.intent,
        )
        twin = next((seen for seen in group.examples if _near(seen.candidate, candidate)), None)
        if twin is not None:
            twin.duplicates.append(candidate.id)
        else:
            group.examples.append(item)

    for group in groups.values():
        if len(group.responses) > 1:
            for item in group.responses:
                item.conflicts = [f"{len(group.responses)} responses proposed for {group.intent}"]
    ordered = sorted(groups.values(), key=lambda g: (not g.new_intent, g.intent))
    return Review(ordered, stories)


def with_duplicates(decisions: Sequence[Decision], review: Review) -> list[Decision]:
    """Extend approvals of collapsed items: their near-duplicates are rejected (noted)."""
    collapsed = {
        item.candidate.id: item.duplicates
        for group in review.groups
        for item in group.examples
        if item.duplicates
    }
    extended = list(decisions)
    decided = {d.candidate_id for d in decisions}
    for decision in decisions:
        if decision.action in ("approve", "edit", "hold_out"):
            for twin in collapsed.get(decision.candidate_id, []):
                if twin not in decided:
                    extended.append(
                        Decision(twin, "reject", note=f"near-duplicate of #{decision.candidate_id}")
                    )
                    decided.add(twin)
    return extended


def _key(text: str) -> str:
    return normalize(clean_example(text))


def _near(a: Candidate, b: Candidate) -> bool:
    ka, kb = _key(a.text or ""), _key(b.text or "")
    return ka == kb or difflib.SequenceMatcher(None, ka, kb).ratio() >= NEAR_DUPLICATE_RATIO
