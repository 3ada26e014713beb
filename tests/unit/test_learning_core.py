"""The learning loop's pure parts: what a handoff teaches, review flags, evaluation and
promotion, metrics."""

from __future__ import annotations

from typing import Any

import pytest

from handoff.learning.candidates import handoff_candidates, review_groups, with_duplicates
from handoff.learning.evaluation import compare, mcnemar, render_markdown, score
from handoff.learning.export import normalize
from handoff.learning.metrics import compute, render_prometheus, render_report
from handoff.storage.learning_store import Candidate, Decision, Label, ModelVersion
from handoff.storage.records import Message


def message(id_: int, sender: str, text: str, response_name: str | None = None) -> Message:
    return Message(
        id=id_,
        conversation_id="c1",
        handoff_id=7,
        sender=sender,
        agent_id=3 if sender == "agent" else None,
        client_message_id=None,
        text=text,
        intent_ranking=None,
        response_name=response_name,
        created_at=float(id_),
    )


def candidate(id_: int, text: str, intent: str | None, **values: Any) -> Candidate:
    fields: dict[str, Any] = {
        "id": id_,
        "kind": "example",
        "status": "pending",
        "source": "label",
        "intent": intent,
        "text": text,
        "turns": None,
        "new_intent": False,
        "conversation_id": "c1",
        "message_id": id_,
        "handoff_id": 7,
        "model_intent": None,
        "model_confidence": None,
        "proposed_by": 3,
        "reviewed_by": None,
        "reviewed_at": None,
        "note": None,
        "export_id": None,
        "created_at": 0.0,
        "updated_at": 0.0,
    }
    fields.update(values)
    return Candidate(**fields)


# What a handoff teaches ----------------------------------------------------------------------


def test_a_free_text_reply_to_a_new_intent_becomes_its_response_and_a_story_turn() -> None:
    messages = [
        message(1, "user", "do you rent safe deposit boxes"),
        message(2, "user", "for jewellery"),
        message(3, "agent", "Yes, at city branches."),
        message(4, "user", "and my balance?"),
        message(5, "agent", "Your balance is ...", response_name="utter_check_balance"),
        message(6, "user", "thanks"),  # unlabelled: the reply below answers nothing labelled
        message(7, "agent", "You're welcome"),
    ]
    labels = {
        1: Label("safe_deposit_box", True),
        2: Label("safe_deposit_box", True),
        4: Label("check_balance", False),
    }
    rows = handoff_candidates(messages, labels, {"utter_check_balance"})
    assert rows[0] == {
        "kind": "response",
        "source": "handoff",
        "intent": "safe_deposit_box",
        "text": "Yes, at city branches.",
        "new_intent": True,
        "conversation_id": "c1",
        "message_id": 3,
        "handoff_id": 7,
        "proposed_by": 3,
    }
    assert rows[1]["kind"] == "story"
    assert rows[1]["turns"] == [
        ["safe_deposit_box", "utter_safe_deposit_box"],
        ["check_balance", "utter_check_balance"],
    ]
    assert len(rows) == 2


def test_a_free_text_reply_to_a_known_intent_without_a_response_teaches_no_turn() -> None:
    messages = [message(1, "user", "close my account"), message(2, "agent", "Done.")]
    rows = handoff_candidates(messages, {1: Label("close_account", False)}, set())
    assert rows == []


# Review --------------------------------------------------------------------------------------


def test_review_flags_conflicts_low_value_known_examples_and_collapses_near_duplicates() -> None:
    pending = [
        candidate(1, "Do you rent safe deposit boxes?", "safe_deposit_box", new_intent=True),
        candidate(2, "do you rent safe deposit boxes", "safe_deposit_box", new_intent=True),
        candidate(3, "do you rent safe deposit box", "safe_deposit_box", new_intent=True),
        candidate(4, "what is my balance", "account_fees"),
        candidate(
            5,
            "show my balance",
            "check_balance",
            model_intent="check_balance",
            model_confidence=0.97,
        ),
        candidate(6, "how much is in my account", "check_balance"),
        candidate(7, "", None, kind="story", turns=[["greet", "utter_greet"]]),
        candidate(8, "Yes, at city branches.", "safe_deposit_box", kind="response"),
    ]
    existing = {normalize("what is my balance"): "check_balance"}
    approved = [candidate(9, "how much is in my account", "account_fees", status="approved")]
    review = review_groups(pending, existing, 0.9, approved=approved)
    groups = {g.intent: g for g in review.groups}
    assert next(iter(groups)) == "safe_deposit_box"  # new intents first
    deposit = groups["safe_deposit_box"]
    assert [i.candidate.id for i in deposit.examples] == [1]
    assert deposit.examples[0].duplicates == [2, 3]
    assert [i.candidate.id for i in deposit.responses] == [8]
    assert groups["account_fees"].examples[0].conflicts == ["check_balance"]
    balance = {i.candidate.id: i for i in groups["check_balance"].examples}
    assert balance[5].low_value and not balance[5].conflicts
    assert balance[6].conflicts == ["account_fees"]
    assert [s.candidate.id for s in review.stories] == [7]

    decisions = with_duplicates([Decision(1, "approve"), Decision(2, "approve")], review)
    assert decisions == [
        Decision(1, "approve"),
        Decision(2, "approve"),
        Decision(3, "reject", note="near-duplicate of #1"),
    ]


# Evaluation ----------------------------------------------------------------------------------


def test_score_counts_fallbacks_as_wrong_and_reports_confusions() -> None:
    truths = ["greet", "greet", "balance", "balance", "fees"]
    predictions = ["greet", "nlu_fallback", "balance", "fees", "fees"]
    result = score(truths, predictions)
    assert result["accuracy"] == 0.6
    assert result["fallback_rate"] == 0.2
    assert result["per_intent"]["greet"] == {
        "precision": 1.0,
        "recall": 0.5,
        "f1": 0.6667,
        "support": 2,
    }
    assert result["per_intent"]["fees"]["precision"] == 0.5
    assert result["macro_f1"] == round((0.6667 + 0.6667 + 0.6667) / 3, 4)
    assert result["confusion"] == {"balance": {"fees": 1}, "greet": {"nlu_fallback": 1}}
    with pytest.raises(ValueError, match="differ in length"):
        score(["a"], [])


@pytest.mark.parametrize(
    ("new", "live", "force", "promote"),
    [
        ({"accuracy": 0.90, "macro_f1": 0.90}, None, False, True),
        ({"accuracy": 0.895, "macro_f1": 0.90}, {"accuracy": 0.90, "macro_f1": 0.90}, False, True),
        ({"accuracy": 0.88, "macro_f1": 0.90}, {"accuracy": 0.90, "macro_f1": 0.90}, False, False),
        ({"accuracy": 0.90, "macro_f1": 0.85}, {"accuracy": 0.90, "macro_f1": 0.90}, False, False),
        ({"accuracy": 0.80, "macro_f1": 0.80}, {"accuracy": 0.90, "macro_f1": 0.90}, True, True),
    ],
)
def test_promotion_margin(
    new: dict[str, float], live: dict[str, float] | None, force: bool, promote: bool
) -> None:
    assert compare(new, live, margin=0.01, force=force).promote is promote


def test_mcnemar_counts_the_discordant_messages_and_gives_the_exact_p_value() -> None:
    # 1 right only with the new model, 6 only with the live one: 2 * P(X <= 1), X ~ Bin(7, 1/2).
    new = [1] * 10 + [1] + [0] * 6
    live = [1] * 10 + [0] + [1] * 6
    assert mcnemar(new, live) == {"new_only": 1, "live_only": 6, "p_value": round(16 / 128, 4)}
    assert mcnemar([1, 0], [1, 0])["p_value"] == 1.0  # no discordant message: no evidence
    with pytest.raises(ValueError, match="different numbers"):
        mcnemar([1], [1, 0])


def _scored(correct: list[int]) -> dict[str, Any]:
    accuracy = sum(correct) / len(correct)
    return {"accuracy": accuracy, "macro_f1": accuracy, "correct": correct}


def test_a_model_significantly_worse_on_the_same_messages_is_kept_out() -> None:
    live = _scored([1] * 180 + [0] * 12)
    new = _scored([1] * 168 + [0] * 24)  # 12 messages it loses, none it gains
    verdict = compare(new, live, margin=0.5)  # the margin no longer decides
    assert not verdict.promote and verdict.paired is not None
    assert (verdict.paired["new_only"], verdict.paired["live_only"]) == (0, 12)
    assert "significantly worse" in verdict.reason
    assert compare(new, live, margin=0.5, force=True).promote


def test_a_small_drop_that_is_noise_is_promoted() -> None:
    # 2.1 points below the live model (past a 0.01 margin), but 2 messages gained against
    # 6 lost is no evidence that it is worse (p = 0.29).
    live = _scored([1] * 170 + [1] * 6 + [0] * 2 + [0] * 14)
    new = _scored([1] * 170 + [0] * 6 + [1] * 2 + [0] * 14)
    verdict = compare(new, live, margin=0.01)
    assert verdict.promote, verdict.reason
    assert verdict.paired == {"new_only": 2, "live_only": 6, "p_value": 0.2891}


def test_markdown_report_names_both_models_and_the_decision() -> None:
    truths = ["a"] * 8 + ["b"] * 8
    new = score(truths, ["a"] * 16)
    live = score(truths, truths)
    verdict = compare(new, live, 0.01)
    text = render_markdown("new.tar.gz", new, "live.tar.gz", live, verdict, "heldout.yml")
    assert "new `new.tar.gz`" in text and "live `live.tar.gz`" in text
    assert "keep the live model" in text
    assert "- b → a x8" in text
    assert "8 only with the live one" in text


# Metrics -------------------------------------------------------------------------------------


def metrics_rows() -> dict[str, list[dict[str, Any]]]:
    fallback = [{"name": "nlu_fallback", "confidence": 0.7}, {"name": "fees", "confidence": 0.3}]
    return {
        "handoffs": [
            {
                "conversation_id": "c1",
                "reason": "low_confidence",
                "queued_at": 100.0,
                "claimed_at": 110.0,
                "first_agent_reply_at": 130.0,
                "closed_at": 200.0,
            },
            {
                "conversation_id": "c2",
                "reason": "user_asked",
                "queued_at": 100.0,
                "claimed_at": None,
                "first_agent_reply_at": None,
                "closed_at": None,
            },
        ],
        "user_messages": [
            {"id": 1, "conversation_id": "c1", "intent_ranking": fallback},
            {
                "id": 2,
                "conversation_id": "c2",
                "intent_ranking": [{"name": "fees", "confidence": 0.9}],
            },
            {
                "id": 3,
                "conversation_id": "c3",
                "intent_ranking": [{"name": "greet", "confidence": 0.99}],
            },
            {"id": 4, "conversation_id": "c4", "intent_ranking": fallback},
        ],
        "labels": [{"message_id": 1, "intent": "overdraft"}, {"message_id": 1, "intent": "box"}],
        "candidates": [
            {"kind": "example", "status": "approved", "intent": "box"},
            {"kind": "example", "status": "pending", "intent": "box"},
            {"kind": "example", "status": "exported", "intent": "box"},
        ],
    }


def test_metrics_from_rows() -> None:
    live = ModelVersion(
        1,
        'm-"1".tar.gz',
        "h",
        0.0,
        90.0,
        {"accuracy": 0.9, "macro_f1": 0.88, "fallback_rate": 0.05},
        "k",
        "live",
        1.0,
        None,
    )
    metrics = compute(metrics_rows(), [live])
    assert metrics["conversations"] == 4
    assert metrics["handoff_rate"] == 0.5
    assert metrics["queue_wait_seconds"]["median"] == 10.0
    assert metrics["first_agent_reply_seconds"]["median"] == 30.0
    assert metrics["handoff_duration_seconds"]["count"] == 1
    assert metrics["fallback_by_intent"]["box"] == {"messages": 1, "fallbacks": 1, "rate": 1.0}
    assert metrics["fallback_by_intent"]["fees"] == {"messages": 2, "fallbacks": 1, "rate": 0.5}
    assert metrics["labels_by_intent"] == {"box": 1}
    assert metrics["approved_examples_by_intent"] == {"box": 2}

    text = render_prometheus(metrics, 'm-"1".tar.gz')
    assert 'handoff_handoffs_total{reason="low_confidence"} 1' in text
    assert 'handoff_queue_wait_seconds{quantile="0.5"} 10.0' in text
    assert 'handoff_fallback_rate{intent="fees"} 0.5' in text
    assert 'handoff_model_accuracy{model="m-\\"1\\".tar.gz"} 0.9' in text
    assert 'handoff_serving_model_info{model="m-\\"1\\".tar.gz"} 1' in text
    for line in text.splitlines():  # every sample line is "name{labels} value"
        if not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])

    report = render_report(metrics, "all time")
    assert "Handoffs:             2 (50.0% of conversations)" in report
    assert "median 10.0 s" in report
