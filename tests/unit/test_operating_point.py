"""Choosing the handoff threshold for a target precision (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handoff.assistant.model_files import (
    operating_point_file,
    read_operating_threshold,
    write_operating_point,
)
from handoff.learning.operating_point import (
    NOTHING_AUTOMATED,
    Prediction,
    automated,
    operating_point,
)


def _p(confidence: float, right: bool, runner_up: float | None = None) -> Prediction:
    return Prediction("greet", "greet" if right else "goodbye", confidence, runner_up)


def test_the_lowest_threshold_that_reaches_the_target_is_chosen() -> None:
    predictions = [_p(0.9, True), _p(0.8, True), _p(0.7, False), _p(0.6, True), _p(0.5, False)]
    point = operating_point(predictions, target_precision=0.75)
    # At 0.6: 3 of 4 right (0.75); at 0.5: 3 of 5 (0.6).
    assert (point.threshold, point.precision, point.automation) == (0.6, 0.75, 0.8)
    assert point.reached and point.examples == 5


def test_a_perfect_target_automates_only_what_is_above_every_mistake() -> None:
    predictions = [_p(0.95, True), _p(0.9, True), _p(0.85, False), _p(0.3, True)]
    point = operating_point(predictions, target_precision=1.0)
    assert (point.threshold, point.precision, point.automation) == (0.9, 1.0, 0.5)


def test_an_unreachable_target_hands_off_and_says_so() -> None:
    point = operating_point([_p(0.9, False), _p(0.4, True)], target_precision=0.95)
    assert not point.reached
    assert point.threshold == NOTHING_AUTOMATED
    assert (point.precision, point.automation) == (None, 0.0)


def test_ambiguous_predictions_are_handed_off_whatever_the_threshold() -> None:
    close = _p(0.55, False, runner_up=0.5)
    assert not automated(close, threshold=0.1, ambiguity=0.1)
    assert automated(close, threshold=0.1, ambiguity=0.0)
    point = operating_point([_p(0.9, True), close], target_precision=1.0, ambiguity=0.1)
    assert (point.threshold, point.automation) == (0.55, 0.5)  # the mistake is never automated


@pytest.mark.parametrize("target", [0.0, 1.5])
def test_a_target_outside_zero_to_one_is_refused(target: float) -> None:
    with pytest.raises(ValueError, match="target precision"):
        operating_point([_p(0.9, True)], target)


def test_no_predictions_is_refused() -> None:
    with pytest.raises(ValueError, match="no held-out predictions"):
        operating_point([], 0.9)


predictions_strategy = st.lists(
    st.builds(
        _p,
        st.floats(min_value=0.0, max_value=1.0, allow_nan=False),
        st.booleans(),
        st.one_of(st.none(), st.floats(min_value=0.0, max_value=1.0, allow_nan=False)),
    ),
    min_size=1,
    max_size=40,
)


@given(
    predictions_strategy,
    st.floats(min_value=0.05, max_value=1.0),
    st.sampled_from([0.0, 0.1]),
)
def test_the_choice_meets_the_target_and_no_lower_threshold_does(
    predictions: list[Prediction], target: float, ambiguity: float
) -> None:
    point = operating_point(predictions, target, ambiguity)

    def precision_at(threshold: float) -> float | None:
        answered = [p for p in predictions if automated(p, threshold, ambiguity)]
        return sum(p.intent == p.truth for p in answered) / len(answered) if answered else None

    lower = [p.confidence for p in predictions if p.confidence < point.threshold]
    for threshold in lower:
        reached = precision_at(threshold)
        assert reached is None or reached < target
    if point.reached:
        reached_here = precision_at(point.threshold)
        assert reached_here is not None and reached_here >= target


def test_the_threshold_is_stored_beside_the_model_and_read_back(tmp_path: Path) -> None:
    model = tmp_path / "assistant-abc.tar.gz"
    model.write_bytes(b"")
    assert read_operating_threshold(model) is None  # none stored: the model's own applies
    point = operating_point([_p(0.9, True), _p(0.4, False)], target_precision=0.95)
    written = write_operating_point(model, point.as_dict())
    assert written == operating_point_file(model) == tmp_path / "assistant-abc.operating-point.json"
    assert read_operating_threshold(model) == 0.9


@pytest.mark.parametrize(
    "content", ["{not json", '{"threshold": "high"}', '{"threshold": 7}', "{}"]
)
def test_an_unreadable_stored_threshold_is_ignored_with_a_warning(
    tmp_path: Path, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    model = tmp_path / "assistant-abc.tar.gz"
    operating_point_file(model).write_text(content)
    assert read_operating_threshold(model) is None
    assert "handoff train" in caplog.text
