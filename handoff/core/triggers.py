"""When a conversation goes to a person: a pure decision on one parsed user message."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from handoff.core.routing import HandoffReason

__all__ = ["FALLBACK_INTENT", "Decision", "HandoffPolicy", "decide", "top_intent"]

FALLBACK_INTENT = "nlu_fallback"
"""What Rasa's FallbackClassifier predicts below its confidence threshold."""


@dataclass(frozen=True)
class HandoffPolicy:
    request_intents: frozenset[str] = frozenset({"human_handoff"})
    """The user asks for a person."""
    always_human_intents: frozenset[str] = frozenset({"report_fraud"})
    """Too costly to get wrong: a person always takes these."""
    intent_thresholds: Mapping[str, float] = field(default_factory=dict)
    """Stricter confidence thresholds for some intents (on top of the FallbackClassifier's)."""
    fallbacks_before_handoff: int = 1
    """Low-confidence messages in a row before the handoff (1: the first one hands off)."""


@dataclass(frozen=True)
class Decision:
    reason: HandoffReason | None
    """Why to hand off now, or None to let the bot answer."""
    fallback_streak: int
    """Low-confidence messages in a row, including this one."""


def top_intent(parse_data: Mapping[str, Any]) -> tuple[str | None, float]:
    """The best real intent and its confidence (skipping the ``nlu_fallback`` pseudo-intent)."""
    for candidate in parse_data.get("intent_ranking") or []:
        if candidate.get("name") != FALLBACK_INTENT:
            return candidate.get("name"), float(candidate.get("confidence") or 0.0)
    intent = parse_data.get("intent") or {}
    name = intent.get("name")
    if name == FALLBACK_INTENT:
        return None, 0.0
    return name, float(intent.get("confidence") or 0.0)


def decide(parse_data: Mapping[str, Any], policy: HandoffPolicy, fallback_streak: int) -> Decision:
    """Decide on one user message in a bot-answered conversation."""
    predicted = (parse_data.get("intent") or {}).get("name")
    best, confidence = top_intent(parse_data)
    if predicted in policy.request_intents:
        return Decision(HandoffReason.USER_ASKED, 0)
    if predicted in policy.always_human_intents:
        return Decision(HandoffReason.ALWAYS_HUMAN_INTENT, 0)
    strict = policy.intent_thresholds.get(best or "")
    low = predicted == FALLBACK_INTENT or (strict is not None and confidence < strict)
    if not low:
        return Decision(None, 0)
    streak = fallback_streak + 1
    if streak < policy.fallbacks_before_handoff:
        return Decision(None, streak)
    reason = (
        HandoffReason.LOW_CONFIDENCE
        if policy.fallbacks_before_handoff <= 1
        else HandoffReason.REPEATED_FALLBACK
    )
    return Decision(reason, 0)
