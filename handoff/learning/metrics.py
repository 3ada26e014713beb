"""Operational and learning metrics: computed from database rows, rendered for Prometheus
(``/metrics``) or people (``handoff report``). Pure functions, no I/O."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from handoff.storage.learning_store import ModelVersion, top_intent

FALLBACK_INTENT = "nlu_fallback"


def _summary(values: Sequence[float]) -> dict[str, float | int | None]:
    ordered = sorted(values)
    if not ordered:
        return {"count": 0, "sum": 0.0, "median": None, "p90": None}
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return {
        "count": len(ordered),
        "sum": round(sum(ordered), 3),
        "median": round(statistics.median(ordered), 3),
        "p90": round(p90, 3),
    }


def compute(
    rows: Mapping[str, list[dict[str, Any]]], models: Sequence[ModelVersion]
) -> dict[str, Any]:
    """Metrics from :meth:`handoff.storage.learning_store.LearningStore.metrics_rows` and the model
    registry.

    A user message's intent is the agent's label when it has one, else the model's best guess;
    it "fell back" when the model's top prediction was ``nlu_fallback``.
    """
    handoffs = rows["handoffs"]
    messages = rows["user_messages"]
    labels = {row["message_id"]: row["intent"] for row in rows["labels"]}  # latest wins
    conversations = {row["conversation_id"] for row in messages}

    per_intent: dict[str, dict[str, int]] = {}
    for row in messages:
        ranking = row["intent_ranking"] or []
        if not ranking:
            continue
        guess, _ = top_intent(ranking)
        intent = labels.get(row["id"]) or guess or "unknown"
        counts = per_intent.setdefault(intent, {"messages": 0, "fallbacks": 0})
        counts["messages"] += 1
        counts["fallbacks"] += ranking[0].get("name") == FALLBACK_INTENT

    approved = Counter(
        row["intent"] for row in rows["candidates"] if row["status"] in ("approved", "exported")
    )
    return {
        "conversations": len(conversations),
        "user_messages": len(messages),
        "handoffs": len(handoffs),
        "handoff_rate": round(len(handoffs) / len(conversations), 4) if conversations else None,
        "handoffs_by_reason": dict(Counter(row["reason"] for row in handoffs)),
        "queue_wait_seconds": _summary(
            [h["claimed_at"] - h["queued_at"] for h in handoffs if h["claimed_at"]]
        ),
        "first_agent_reply_seconds": _summary(
            [
                h["first_agent_reply_at"] - h["queued_at"]
                for h in handoffs
                if h["first_agent_reply_at"]
            ]
        ),
        "handoff_duration_seconds": _summary(
            [h["closed_at"] - h["queued_at"] for h in handoffs if h["closed_at"]]
        ),
        "fallback_by_intent": {
            intent: {**counts, "rate": round(counts["fallbacks"] / counts["messages"], 4)}
            for intent, counts in sorted(per_intent.items())
        },
        "labels_by_intent": dict(sorted(Counter(labels.values()).items())),
        "approved_examples_by_intent": dict(sorted(approved.items())),
        "models": [
            {
                "name": m.name,
                "status": m.status,
                "trained_at": m.trained_at,
                "promoted_at": m.promoted_at,
                "training_seconds": m.training_seconds,
                **{
                    key: (m.metrics or {}).get(key)
                    for key in ("accuracy", "macro_f1", "fallback_rate")
                },
            }
            for m in models
        ],
    }


# Prometheus text format ---------------------------------------------------------------------


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _sample(name: str, value: float | int | None, **labels: str) -> str | None:
    if value is None:
        return None
    inner = ",".join(f'{key}="{_label(str(v))}"' for key, v in labels.items())
    return f"{name}{{{inner}}} {value}" if inner else f"{name} {value}"


def render_prometheus(metrics: Mapping[str, Any], serving_model: str | None) -> str:
    """The Prometheus text exposition of :func:`compute`'s result."""
    out: list[str] = []

    def family(name: str, kind: str, help_text: str, samples: list[str | None]) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(sample for sample in samples if sample is not None)

    family(
        "handoff_conversations_total",
        "counter",
        "Conversations with at least one user message.",
        [_sample("handoff_conversations_total", metrics["conversations"])],
    )
    family(
        "handoff_user_messages_total",
        "counter",
        "User messages received.",
        [_sample("handoff_user_messages_total", metrics["user_messages"])],
    )
    family(
        "handoff_handoffs_total",
        "counter",
        "Conversations handed to a person, by reason.",
        [
            _sample("handoff_handoffs_total", count, reason=reason)
            for reason, count in sorted(metrics["handoffs_by_reason"].items())
        ],
    )
    family(
        "handoff_handoff_rate",
        "gauge",
        "Handoffs per conversation.",
        [_sample("handoff_handoff_rate", metrics["handoff_rate"])],
    )
    for key, help_text in (
        ("queue_wait_seconds", "Time from handoff to an agent's claim."),
        ("first_agent_reply_seconds", "Time from handoff to the agent's first reply."),
        ("handoff_duration_seconds", "Time from handoff to hand-back or close."),
    ):
        name = f"handoff_{key}"
        summary = metrics[key]
        family(
            name,
            "summary",
            help_text,
            [
                _sample(name, summary["median"], quantile="0.5"),
                _sample(name, summary["p90"], quantile="0.9"),
                _sample(f"{name}_sum", summary["sum"]),
                _sample(f"{name}_count", summary["count"]),
            ],
        )
    by_intent = metrics["fallback_by_intent"]
    per_intent: list[tuple[str, str, str, dict[str, Any]]] = [
        (
            "handoff_intent_messages_total",
            "counter",
            "User messages by intent (agent label, else the model's best guess).",
            {i: v["messages"] for i, v in by_intent.items()},
        ),
        (
            "handoff_intent_fallbacks_total",
            "counter",
            "User messages the model was not confident about, by intent.",
            {i: v["fallbacks"] for i, v in by_intent.items()},
        ),
        (
            "handoff_fallback_rate",
            "gauge",
            "Share of an intent's messages the model was not confident about.",
            {i: v["rate"] for i, v in by_intent.items()},
        ),
        (
            "handoff_labels_total",
            "counter",
            "User messages agents labelled, by intent.",
            metrics["labels_by_intent"],
        ),
        (
            "handoff_approved_examples_total",
            "counter",
            "Training examples approved in review (exported or not), by intent.",
            metrics["approved_examples_by_intent"],
        ),
    ]
    for name, kind, help_text, values in per_intent:
        family(name, kind, help_text, [_sample(name, n, intent=i) for i, n in values.items()])
    models = metrics["models"]
    family(
        "handoff_model_info",
        "gauge",
        "Recorded model versions (1 per version) and their registry status.",
        [_sample("handoff_model_info", 1, model=m["name"], status=m["status"]) for m in models],
    )
    for key in ("accuracy", "macro_f1", "fallback_rate"):
        name = f"handoff_model_{key}"
        family(
            name,
            "gauge",
            f"Held-out {key.replace('_', ' ')} of each model version.",
            [_sample(name, m[key], model=m["name"]) for m in models],
        )
    family(
        "handoff_serving_model_info",
        "gauge",
        "The model this server process answers with.",
        [_sample("handoff_serving_model_info", 1, model=serving_model) if serving_model else None],
    )
    return "\n".join(out) + "\n"


def render_sign_in_refusals(refused: Mapping[str, int], reasons: Sequence[str]) -> str:
    """Prometheus text of the refused sign-ins counted by this process (every reason listed,
    0 included, so that a rate can be taken from the first scrape)."""
    name = "handoff_sign_ins_refused_total"
    lines = [
        f"# HELP {name} Sign-ins refused by this server process since it started, by reason "
        "(bad_credentials, throttled, busy); per process: sum over processes.",
        f"# TYPE {name} counter",
    ]
    lines += [f'{name}{{reason="{_label(r)}"}} {refused.get(r, 0)}' for r in reasons]
    return "\n".join(lines) + "\n"


def render_report(metrics: Mapping[str, Any], since_label: str) -> str:
    """A plain-text report for ``handoff report``."""

    def seconds(summary: Mapping[str, Any]) -> str:
        if not summary["count"]:
            return "n/a"
        return (
            f"median {summary['median']:.1f} s, p90 {summary['p90']:.1f} s (n={summary['count']})"
        )

    rate = metrics["handoff_rate"]
    lines = [
        f"Handoff report ({since_label})",
        "",
        f"Conversations:        {metrics['conversations']}",
        f"User messages:        {metrics['user_messages']}",
        f"Handoffs:             {metrics['handoffs']}"
        + (f" ({rate:.1%} of conversations)" if rate is not None else ""),
    ]
    for reason, count in sorted(metrics["handoffs_by_reason"].items()):
        lines.append(f"  {reason:<20}{count}")
    lines += [
        f"Queue wait:           {seconds(metrics['queue_wait_seconds'])}",
        f"First agent reply:    {seconds(metrics['first_agent_reply_seconds'])}",
        f"Handoff duration:     {seconds(metrics['handoff_duration_seconds'])}",
        "",
        f"{'intent':<28}{'messages':>9}{'fallback':>10}{'labels':>8}{'approved':>10}",
    ]
    intents = sorted(
        set(metrics["fallback_by_intent"])
        | set(metrics["labels_by_intent"])
        | set(metrics["approved_examples_by_intent"])
    )
    for intent in intents:
        fb = metrics["fallback_by_intent"].get(intent, {"messages": 0, "rate": 0.0})
        lines.append(
            f"{intent:<28}{fb['messages']:>9}{fb['rate']:>10.1%}"
            f"{metrics['labels_by_intent'].get(intent, 0):>8}"
            f"{metrics['approved_examples_by_intent'].get(intent, 0):>10}"
        )
    lines += ["", f"{'model':<34}{'status':<11}{'accuracy':>9}{'macro-F1':>10}{'fallback':>10}"]
    for m in metrics["models"]:
        scores = [
            f"{m[key]:.4f}" if m[key] is not None else "-"
            for key in ("accuracy", "macro_f1", "fallback_rate")
        ]
        lines.append(
            f"{m['name']:<34}{m['status']:<11}{scores[0]:>9}{scores[1]:>10}{scores[2]:>10}"
        )
    return "\n".join(lines) + "\n"
