"""Scoring a model on held-out examples and deciding whether to promote it: pure functions.

A prediction of ``nlu_fallback`` (the model was not confident) counts as wrong for accuracy and
F1 and is also counted in the fallback rate.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Verdict", "compare", "render_markdown", "score"]

FALLBACK_INTENT = "nlu_fallback"


def score(truths: Sequence[str], predictions: Sequence[str]) -> dict[str, Any]:
    """Intent accuracy, macro-F1 over the true intents, fallback rate, per-intent precision /
    recall / F1 / support, and the confusion (true intent -> predicted intent -> count) of the
    mistakes."""
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
    }


@dataclass(frozen=True)
class Verdict:
    promote: bool
    reason: str


def compare(
    new: Mapping[str, Any], live: Mapping[str, Any] | None, margin: float, force: bool = False
) -> Verdict:
    """Promote ``new`` unless its accuracy or macro-F1 is below ``live``'s by more than
    ``margin``; always when ``force`` or when nothing is live."""
    if live is None:
        return Verdict(True, "no model is live yet")
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
    for metric in ("accuracy", "macro_f1", "fallback_rate"):
        lines.append(
            f"| {metric} | " + " | ".join(f"{m[metric]:.4f}" for _, _, m in columns) + " |"
        )
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
