"""The handoff threshold that gives a target precision of the bot's automated answers, chosen
on held-out predictions: pure functions.

The bot answers a message itself ("automates" it) when Rasa's ``FallbackClassifier`` lets the
top intent through: its confidence is at least the threshold and it leads the runner-up by at
least the ambiguity threshold. Precision is the share of automated answers whose intent is
right; automation is the share of all messages the bot answers. A lower threshold automates
more and is usually less precise; :func:`operating_point` picks the lowest threshold whose
precision still reaches the target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["OperatingPoint", "Prediction", "automated", "operating_point", "precision_at"]

NOTHING_AUTOMATED = 1.0
"""The threshold chosen when no threshold reaches the target: hand off (nearly) everything."""


@dataclass(frozen=True)
class Prediction:
    """A held-out message as the classifier saw it, before any fallback."""

    truth: str
    intent: str
    """The classifier's top intent."""
    confidence: float
    runner_up: float | None = None
    """The second intent's confidence (None when the ranking has one intent)."""


def automated(prediction: Prediction, threshold: float, ambiguity: float) -> bool:
    """True when Rasa's FallbackClassifier would let the top intent through."""
    if prediction.confidence < threshold:
        return False
    return prediction.runner_up is None or prediction.confidence - prediction.runner_up >= ambiguity


@dataclass(frozen=True)
class OperatingPoint:
    """The chosen threshold and what it gives on the held-out set."""

    target_precision: float
    threshold: float
    precision: float | None
    """Of the automated answers (None when nothing is automated)."""
    automation: float
    examples: int
    reached: bool
    """False when no threshold reaches the target (then ``threshold`` hands off nearly
    everything: retrain with more data or lower the target)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def precision_at(
    predictions: Sequence[Prediction], threshold: float, ambiguity: float
) -> tuple[float | None, float]:
    """(precision of the automated answers, None when there are none; automation)."""
    answered = [p for p in predictions if automated(p, threshold, ambiguity)]
    if not answered:
        return None, 0.0
    right = sum(p.intent == p.truth for p in answered)
    return right / len(answered), len(answered) / len(predictions)


def operating_point(
    predictions: Sequence[Prediction], target_precision: float, ambiguity: float = 0.0
) -> OperatingPoint:
    """The lowest threshold at which automated answers are at least ``target_precision``
    precise (the most automation at that precision)."""
    if not predictions:
        raise ValueError("no held-out predictions to choose a threshold from")
    if not 0.0 < target_precision <= 1.0:
        raise ValueError(f"target precision must be in (0, 1], got {target_precision}")
    for threshold in sorted({p.confidence for p in predictions}):
        precision, automation = precision_at(predictions, threshold, ambiguity)
        if precision is not None and precision >= target_precision:
            return OperatingPoint(
                target_precision,
                threshold,
                round(precision, 4),
                round(automation, 4),
                len(predictions),
                reached=True,
            )
    precision, automation = precision_at(predictions, NOTHING_AUTOMATED, ambiguity)
    return OperatingPoint(
        target_precision,
        NOTHING_AUTOMATED,
        None if precision is None else round(precision, 4),
        round(automation, 4),
        len(predictions),
        reached=False,
    )
