"""Scoring a model on held-out examples and deciding whether to promote it: pure functions.

A prediction of ``nlu_fallback`` (the model was not confident) counts as wrong for accuracy and
F1 and is also counted in the fallback rate.

Promotion compares the new and the live model on the same held-out messages with an exact
McNemar test: only the messages one model gets right and the other wrong say anything about
which is better, and on a test set of a few hundred messages a difference of a point or two in
accuracy is usually noise.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["SIGNIFICANCE", "Verdict", "compare", "mcnemar", "render_markdown", "score"]

FALLBACK_INTENT = "nlu_fallback"
SIGNIFICANCE = 0.05
"""A new model is kept out only when it is worse with a two-sided p-value below this."""


def score(truths: Sequence[str], predictions: Sequence[str]) -> dict[str, Any]:
    """Intent accuracy, macro-F1 over the true intents, fallback rate, per-intent precision /
    recall / F1 / support, the confusion (true intent -> predicted intent -> count) of the
    mistakes, and ``correct``: 1 or 0 per example, in order (for the paired comparison)."""
    if len(truths) != len(predictions):
        raise ValueError("truths and predictions differ in length")
    if not truths:
        raise ValueError("no examples to score")
    pairs = list(zip(truths, predictions, strict=True))
    correct = Counter(t for t, p in pairs if t == p)
    support = Counter(truths)
    predicted = Counter(predictions)
    per_intent: dict[str, dict[str, float]] = {}
    for intent in sorted(support):
        precision = correct[intent] / predicted[intent] if predicted[intent] else 0.0
        recall = correct[intent] / support[intent]
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_intent[intent] = {
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(f1, 4),
            "support": support[intent],
        }
    confusion: dict[str, dict[str, int]] = {}
    for (truth, prediction), count in sorted(Counter(p for p in pairs if p[0] != p[1]).items()):
        confusion.setdefault(truth, {})[prediction] = count
    return {
        "examples": len(truths),
        "accuracy": round(sum(correct.values()) / len(truths), 4),
        "macro_f1": round(sum(v["f1"] for v in per_intent.values()) / len(per_intent), 4),
        "fallback_rate": round(predicted[FALLBACK_INTENT] / len(truths), 4),
        "per_intent": per_intent,
        "confusion": confusion,
        "correct": [int(t == p) for t, p in pairs],
    }


@dataclass(frozen=True)
class Verdict:
    promote: bool
    reason: str
    paired: dict[str, Any] | None = None
    """The McNemar test, when both models were scored on the same messages: ``new_only``
    (right only with the new model), ``live_only``, ``p_value``."""


def mcnemar(new_correct: Sequence[int], live_correct: Sequence[int]) -> dict[str, Any]:
    """Exact two-sided McNemar test of two models' right (1) / wrong (0) on the same messages."""
    if len(new_correct) != len(live_correct):
        raise ValueError("the two models were scored on different numbers of messages")
    new_only = sum(1 for n, o in zip(new_correct, live_correct, strict=True) if n and not o)
    live_only = sum(1 for n, o in zip(new_correct, live_correct, strict=True) if o and not n)
    discordant = new_only + live_only
    tail = sum(math.comb(discordant, k) for k in range(min(new_only, live_only) + 1))
    p_value = min(1.0, 2 * tail / 2**discordant) if discordant else 1.0
    return {"new_only": new_only, "live_only": live_only, "p_value": round(p_value, 4)}


def compare(
    new: Mapping[str, Any],
    live: Mapping[str, Any] | None,
    margin: float,
    force: bool = False,
    significance: float = SIGNIFICANCE,
) -> Verdict:
    """Promote ``new`` unless it is significantly worse than ``live`` on the same messages
    (McNemar, :data:`SIGNIFICANCE`); always when ``force`` or when nothing is live.

    Metrics without per-message results (``correct``, e.g. stored by an older version) or
    from different test sets fall back to a margin: keep the live model when ``new``'s
    accuracy or macro-F1 is below its by more than ``margin``."""
    if live is None:
        return Verdict(True, "no model is live yet")
    new_correct, live_correct = new.get("correct"), live.get("correct")
    if (
        new_correct is not None
        and live_correct is not None
        and len(new_correct) == len(live_correct)
    ):
        paired = mcnemar(new_correct, live_correct)
        worse = paired["live_only"] > paired["new_only"] and paired["p_value"] < significance
        summary = (
            f"{paired['new_only']} messages right only with the new model, "
            f"{paired['live_only']} only with the live one, McNemar p = {paired['p_value']:.3f}"
        )
        if force:
            return Verdict(
                True, "forced" + (f" despite being worse ({summary})" if worse else ""), paired
            )
        if worse:
            return Verdict(False, f"significantly worse than the live model: {summary}", paired)
        return Verdict(True, f"not significantly worse than the live model: {summary}", paired)
    drops = [
        f"{name} {new[name]:.4f} < {live[name]:.4f} - {margin}"
        for name in ("accuracy", "macro_f1")
        if new[name] < live[name] - margin - 1e-9
    ]
    if force:
        return Verdict(True, "forced" + (f" despite {'; '.join(drops)}" if drops else ""))
    if drops:
        return Verdict(False, "worse than the live model: " + "; ".join(drops))
    return Verdict(True, f"not worse than the live model by more than {margin}")


def _number(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


def _operating_point_line(point: Mapping[str, Any]) -> str:
    target = f"{point['target_precision']:.0%}"
    if not point["reached"]:
        return (
            f"No handoff threshold reaches {target} precision of the bot's own answers on "
            "this test set: the new model would hand off nearly everything."
        )
    return (
        f"Handoff threshold for {target} precision: **{point['threshold']:.3f}**; the bot "
        f"answers {point['automation']:.1%} of the test messages itself, "
        f"{point['precision']:.1%} of them right."
    )


def render_markdown(
    new_name: str,
    new: Mapping[str, Any],
    live_name: str | None,
    live: Mapping[str, Any] | None,
    verdict: Verdict,
    test_data: str,
) -> str:
    """A human-readable comparison report."""
    columns = [("new", new_name, new)] + ([("live", live_name or "", live)] if live else [])
    lines = [
        f"# Model comparison: {new_name}",
        "",
        f"Held-out test set: `{test_data}` ({new['examples']} examples).",
        "",
        "| metric | " + " | ".join(f"{label} `{name}`" for label, name, _ in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for metric in ("accuracy", "macro_f1", "fallback_rate", "threshold", "automated_precision"):
        if any(m.get(metric) is not None for _, _, m in columns):
            cells = [_number(m.get(metric)) for _, _, m in columns]
            lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    point = new.get("operating_point")
    if point is not None:
        lines += ["", _operating_point_line(point)]
    lines += ["", f"**Decision: {'promote' if verdict.promote else 'keep the live model'}** "
              f"({verdict.reason}).", ""]  # fmt: skip
    lines += ["## Per intent (new model)", "", "| intent | precision | recall | F1 | support |"]
    lines.append("|---|---:|---:|---:|---:|")
    for intent, values in new["per_intent"].items():
        lines.append(
            f"| {intent} | {values['precision']:.2f} | {values['recall']:.2f} | "
            f"{values['f1']:.2f} | {values['support']} |"
        )
    lines += ["", "## Confusions (new model)", ""]
    if not new["confusion"]:
        lines.append("None.")
    for truth, predictions in new["confusion"].items():
        wrong = ", ".join(f"{p} x{n}" for p, n in predictions.items())
        lines.append(f"- {truth} → {wrong}")
    return "\n".join(lines) + "\n"
