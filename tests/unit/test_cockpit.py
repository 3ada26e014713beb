"""The maintainer's cockpit, pure: per-day series from rows, models with their uncertainty, the
HTML report; and the registry's promotion by hand."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handoff.learning.cockpit import (
    DAY_S,
    build_cockpit,
    model_view,
    render_cockpit_html,
    wilson_interval,
)
from handoff.learning.loop import promotion_problem
from handoff.settings import Settings
from handoff.storage.learning_store import LearningStore, ModelVersion, NotFoundError
from handoff.storage.migrate import upgrade
from handoff.storage.store import Store

NOW = 1_764_700_000.0  # 2025-12-02, in the afternoon (UTC)


def model(
    name: str, status: str, accuracy: float | None, promoted_at: float | None
) -> ModelVersion:
    metrics = (
        {
            "accuracy": accuracy,
            "examples": 200,
            "operating_point": {"automation": 0.9},
            "threshold": 0.3,
        }
        if accuracy is not None
        else None
    )
    return ModelVersion(
        id=1,
        name=name,
        training_hash="h",
        trained_at=NOW - 3 * DAY_S,
        training_seconds=20.0,
        metrics=metrics,
        metrics_key="k",
        status=status,
        promoted_at=promoted_at,
        report=None,
        promoted_by="handoff train" if promoted_at else None,
    )


def test_the_wilson_interval_brackets_the_score_and_narrows_with_more_messages() -> None:
    assert wilson_interval(0, 0) is None
    low, high = wilson_interval(180, 200) or (0, 0)
    assert low < 0.9 < high and round(low, 3) == 0.851 and round(high, 3) == 0.934
    wide = wilson_interval(18, 20) or (0, 0)
    assert wide[1] - wide[0] > high - low


@given(st.integers(0, 500), st.integers(1, 500))
def test_the_interval_is_a_proper_range_of_proportions(correct: int, total: int) -> None:
    correct = min(correct, total)
    low, high = wilson_interval(correct, total) or (0, 0)
    assert 0 <= low <= correct / total <= high <= 1


def said(
    conversation_id: str, at: float, handoff_id: int | None, ranking: list[dict[str, object]]
) -> dict[str, object]:
    return {
        "conversation_id": conversation_id,
        "created_at": at,
        "handoff_id": handoff_id,
        "intent_ranking": ranking,
    }


def rows() -> dict[str, list[dict[str, object]]]:
    today, yesterday = NOW - 60, NOW - DAY_S
    ranking = [{"name": "greet", "confidence": 0.9}]
    fallback = [{"name": "nlu_fallback", "confidence": 0.3}]
    return {
        "handoffs": [
            {"conversation_id": "c2", "queued_at": today + 1, "first_agent_reply_at": today + 31},
            {"conversation_id": "c3", "queued_at": yesterday + 1, "first_agent_reply_at": None},
        ],
        "user_messages": [
            {
                "conversation_id": "c1",
                "created_at": today,
                "handoff_id": None,
                "intent_ranking": ranking,
            },
            {
                "conversation_id": "c1",
                "created_at": today + 5,
                "handoff_id": None,
                "intent_ranking": ranking,
            },
            {
                "conversation_id": "c2",
                "created_at": today,
                "handoff_id": None,
                "intent_ranking": ranking,
            },
            {
                "conversation_id": "c2",
                "created_at": today + 40,
                "handoff_id": 1,
                "intent_ranking": ranking,
            },
            {
                "conversation_id": "c3",
                "created_at": yesterday,
                "handoff_id": None,
                "intent_ranking": fallback,
            },
        ],
        "examples": [
            {"source": "label", "created_at": today},
            {"source": "approval", "created_at": today},
            {"source": "correction", "created_at": yesterday},
        ],
        "pending": [{"review": 4, "verification": 2, "held": 0}],
    }


def test_a_day_counts_its_conversations_handoffs_automation_replies_and_labels() -> None:
    models = [
        model("assistant-a.tar.gz", "retired", 0.85, NOW - 2 * DAY_S),
        model("assistant-b.tar.gz", "live", 0.9, NOW - DAY_S),
        model("assistant-c.tar.gz", "rejected", 0.8, None),
    ]
    fallbacks = {"greet": {"messages": 10, "fallbacks": 1, "rate": 0.1}}
    view = build_cockpit(rows(), models, fallbacks, now=NOW, days=3)

    assert view["days"] == ["2025-11-30", "2025-12-01", "2025-12-02"]
    assert view["conversations"] == [0, 1, 2]
    assert view["handoff_rate"] == [None, 1.0, 0.5]
    # Today: c1's two messages answered; c2's first started the handoff, its second was in it.
    assert view["automation_rate"] == [None, 0.0, 0.5]
    assert view["first_reply_median_s"] == [None, None, 30.0]
    assert (view["labels"], view["approvals"]) == ([0, 0, 1], [0, 1, 1])
    assert view["pending"] == {"review": 4, "verification": 2, "held": 0}
    assert [p["name"] for p in view["learning_curve"]] == [
        "assistant-a.tar.gz",
        "assistant-b.tar.gz",
    ]
    assert view["fallback_by_intent"] == [{"intent": "greet", "rate": 0.1, "messages": 10}]
    live = model_view(models[1])
    assert live["accuracy_interval"] == wilson_interval(180, 200)
    assert (live["automation"], live["threshold"], live["promoted_by"]) == (
        0.9,
        0.3,
        "handoff train",
    )
    assert model_view(model("x", "candidate", None, None))["accuracy_interval"] is None


def test_the_html_report_stands_alone_and_keeps_its_data_inside_its_script() -> None:
    view = build_cockpit(
        rows(), [model("assistant-</script>.tar.gz", "live", 0.9, NOW)], {}, now=NOW, days=2
    )
    page = render_cockpit_html(view, 2)
    assert "HandoffCharts.render" in page and "const HandoffCharts" in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")  # nothing fetched
    script = re.search(r"<script>const COCKPIT = (.*?);</script>", page, re.DOTALL)
    assert script is not None and "</script" not in script.group(1)
    assert json.loads(script.group(1))["models"][0]["name"] == "assistant-</script>.tar.gz"


async def test_a_model_is_promoted_by_hand_and_the_previous_one_retires(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'handoff.db'}"
    upgrade(url)
    store = await Store.open(url)
    learning = LearningStore(store.engine)
    try:
        for name in ("assistant-a.tar.gz", "assistant-b.tar.gz"):
            await learning.register_model(name, "h", 1.0)
        await learning.set_model_outcome("assistant-b.tar.gz", "live", None)
        rolled = await learning.promote("assistant-a.tar.gz", by="maya")
        assert (rolled.status, rolled.promoted_by) == ("live", "maya")
        statuses = {m.name: (m.status, m.promoted_by) for m in await learning.models()}
        assert statuses["assistant-b.tar.gz"] == ("retired", "handoff train")
        with pytest.raises(NotFoundError, match="handoff models list"):
            await learning.promote("assistant-z.tar.gz", by="maya")
    finally:
        await store.close()


def test_a_promotion_by_hand_needs_a_models_folder_holding_the_archive(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "assistant-a.tar.gz").write_bytes(b"")
    (tmp_path / "handoff.db").write_bytes(b"")
    folder = Settings(model_path=models)
    assert promotion_problem(folder, "assistant-a.tar.gz") is None
    assert "no model archive" in (promotion_problem(folder, "assistant-b.tar.gz") or "")
    assert "no model archive" in (promotion_problem(folder, "../handoff.db") or "")
    one = Settings(model_path=models / "assistant-a.tar.gz")
    assert "one archive" in (promotion_problem(one, "assistant-a.tar.gz") or "")
