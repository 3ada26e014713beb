"""The handoff decision on one parsed message, table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from handoff.core.routing import HandoffReason
from handoff.core.triggers import Decision, HandoffPolicy, decide, top_intent


def parsed(intent: str, confidence: float, *ranking: tuple[str, float]) -> dict[str, Any]:
    return {
        "intent": {"name": intent, "confidence": confidence},
        "intent_ranking": [{"name": n, "confidence": c} for n, c in ranking]
        or [{"name": intent, "confidence": confidence}],
    }


FALLBACK = parsed("nlu_fallback", 0.6, ("nlu_fallback", 0.6), ("check_balance", 0.41))
POLICY = HandoffPolicy(intent_thresholds={"close_account": 0.9})
PATIENT = HandoffPolicy(fallbacks_before_handoff=2)

CASES = [
    (parsed("greet", 0.99), POLICY, 0, Decision(None, 0)),
    (parsed("greet", 0.99), POLICY, 3, Decision(None, 0)),
    (parsed("human_handoff", 0.97), POLICY, 0, Decision(HandoffReason.USER_ASKED, 0)),
    (parsed("report_fraud", 0.88), POLICY, 0, Decision(HandoffReason.ALWAYS_HUMAN_INTENT, 0)),
    (FALLBACK, POLICY, 0, Decision(HandoffReason.LOW_CONFIDENCE, 0)),
    (parsed("close_account", 0.85), POLICY, 0, Decision(HandoffReason.LOW_CONFIDENCE, 0)),
    (parsed("close_account", 0.95), POLICY, 0, Decision(None, 0)),
    (FALLBACK, PATIENT, 0, Decision(None, 1)),
    (FALLBACK, PATIENT, 1, Decision(HandoffReason.REPEATED_FALLBACK, 0)),
    (parsed("greet", 0.99), PATIENT, 1, Decision(None, 0)),
]


@pytest.mark.parametrize(("parse_data", "policy", "streak", "expected"), CASES)
def test_decide(
    parse_data: dict[str, Any], policy: HandoffPolicy, streak: int, expected: Decision
) -> None:
    assert decide(parse_data, policy, streak) == expected


def test_top_intent_skips_the_fallback_pseudo_intent() -> None:
    assert top_intent(FALLBACK) == ("check_balance", 0.41)
    assert top_intent({"intent": {"name": "nlu_fallback", "confidence": 0.6}}) == (None, 0.0)
    assert top_intent({"intent": {"name": "greet", "confidence": 0.9}}) == ("greet", 0.9)
