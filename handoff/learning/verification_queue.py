"""The order agents verify bot answers in: what a label would teach most comes first.

A pure function of the pending queue, so a fixed agent budget goes where it teaches most:

1. answers the user marked **unhelpful** (the bot was probably wrong);
2. then **uncertain** answers by their **margin**, the confidence of the model's best intent
   minus that of the second best, smallest first: a label there is the one the model was
   closest to getting the other way, so it moves the decision boundary most (margin sampling);
3. ties by arrival.

**Near-duplicates are collapsed**: messages with the same predicted intent whose words, after
normalisation (case, punctuation, order), overlap by at least ``NEAR_DUPLICATE_JACCARD`` become
one entry; the console applies the agent's decision on it to all of them, so the budget is not
spent on labelling "block my card" three times.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "NEAR_DUPLICATE_JACCARD",
    "QueueEntry",
    "QueueGroup",
    "margin",
    "order_queue",
    "words",
]

NEAR_DUPLICATE_JACCARD = 0.8
"""Word-set overlap (intersection over union) from which two messages count as one."""

_FALLBACK = "nlu_fallback"
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")


@dataclass(frozen=True)
class QueueEntry:
    """One pending verification: its id, the user's text, the bot's intent, ``unhelpful`` or
    ``uncertain``, and the margin of the ranking (see ``margin``)."""

    id: int
    text: str
    predicted_intent: str
    reason: str
    margin: float


@dataclass(frozen=True)
class QueueGroup:
    """A message to verify (``lead``) and its near-duplicates, verified with the same decision."""

    lead: QueueEntry
    duplicates: tuple[QueueEntry, ...] = ()

    @property
    def ids(self) -> tuple[int, ...]:
        return (self.lead.id, *(entry.id for entry in self.duplicates))


def margin(ranking: Sequence[Mapping[str, Any]] | None, confidence: float) -> float:
    """Best minus second-best intent confidence of a stored ranking (``nlu_fallback``
    skipped); ``confidence`` (the best one's) when the ranking has fewer than two intents."""
    scores = sorted(
        (
            float(item.get("confidence") or 0.0)
            for item in ranking or []
            if item.get("name") and item.get("name") != _FALLBACK
        ),
        reverse=True,
    )
    if len(scores) < 2:
        return confidence
    return scores[0] - scores[1]


def words(text: str) -> frozenset[str]:
    """The set of case-folded words of ``text``: what near-duplicates are compared on."""
    return frozenset(_WORD.findall(text.casefold()))


def _priority(entry: QueueEntry) -> tuple[bool, float, int]:
    return (entry.reason != "unhelpful", entry.margin, entry.id)


def _similar(a: frozenset[str], b: frozenset[str]) -> bool:
    if a == b:
        return True
    union = len(a | b)
    return union > 0 and len(a & b) / union >= NEAR_DUPLICATE_JACCARD


def order_queue(entries: Iterable[QueueEntry]) -> list[QueueGroup]:
    """The pending verifications as groups of near-duplicates, most instructive first.

    Each group's lead is its most instructive member; groups are in the order of their leads.
    Comparisons are only made within one predicted intent, so the cost is the sum of the
    squares of the per-intent queue lengths (a few thousand pending entries is fine)."""
    groups: list[tuple[QueueEntry, frozenset[str], list[QueueEntry]]] = []
    by_intent: dict[str, list[int]] = {}
    for entry in sorted(entries, key=_priority):
        vocabulary = words(entry.text)
        candidates = by_intent.setdefault(entry.predicted_intent, [])
        for index in candidates:
            if _similar(vocabulary, groups[index][1]):
                groups[index][2].append(entry)
                break
        else:
            candidates.append(len(groups))
            groups.append((entry, vocabulary, []))
    return [QueueGroup(lead, tuple(duplicates)) for lead, _, duplicates in groups]
