"""Operational and learning metrics: computed from database rows, rendered for Prometheus
(``/metrics``) or people (``handoff report``).

:func:`compute` works on rows already read (pure); :func:`compute_in_database` gets the same
numbers from SQL aggregates (blocking: :class:`handoff.learning.metrics_reader.MetricsReader`
runs it off the event loop).
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from handoff.storage import schema
from handoff.storage.learning_store import ModelVersion, top_intent

__all__ = [
    "FALLBACK_INTENT",
    "compute",
    "compute_in_database",
    "render_prometheus",
    "render_report",
    "render_sign_in_refusals",
]

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
    return _assemble(
        len(conversations),
        len(messages),
        handoffs,
        per_intent,
        Counter(labels.values()),
        approved,
        models,
    )


def _assemble(
    conversations: int,
    user_messages: int,
    handoffs: Sequence[Mapping[str, Any]],
    per_intent: Mapping[str, Mapping[str, int]],
    labels_by_intent: Mapping[str, int],
    approved_by_intent: Mapping[str, int],
    models: Sequence[ModelVersion],
) -> dict[str, Any]:
    return {
        "conversations": conversations,
        "user_messages": user_messages,
        "handoffs": len(handoffs),
        "handoff_rate": round(len(handoffs) / conversations, 4) if conversations else None,
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
        "labels_by_intent": dict(sorted(labels_by_intent.items())),
        "approved_examples_by_intent": dict(sorted(approved_by_intent.items())),
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


# In SQL -----------------------------------------------------------------------------------

# Per dialect: whether a user message has a (non-empty) intent ranking, the name of its first
# entry, and the model's best guess (first entry named other than nlu_fallback: top_intent).
_RANKING_SQL = {
    "sqlite": {
        "has_ranking": "json_array_length(m.intent_ranking) > 0",
        "first_name": "json_extract(m.intent_ranking, '$[0].name')",
        "guess": """
            CASE WHEN json_type(m.intent_ranking, '$[0].name') = 'text'
                      AND json_extract(m.intent_ranking, '$[0].name')
                          NOT IN ('', 'nlu_fallback')
                 THEN json_extract(m.intent_ranking, '$[0].name')
                 ELSE (SELECT json_extract(e.value, '$.name') FROM json_each(m.intent_ranking) AS e
                       WHERE json_type(e.value, '$.name') = 'text'
                         AND json_extract(e.value, '$.name') NOT IN ('', 'nlu_fallback')
                       ORDER BY e.key LIMIT 1)
            END""",
    },
    "postgresql": {
        "has_ranking": """
            CASE WHEN json_typeof(m.intent_ranking) = 'array'
                 THEN json_array_length(m.intent_ranking) ELSE 0 END > 0""",
        "first_name": "m.intent_ranking -> 0 ->> 'name'",
        "guess": """
            (SELECT e.value ->> 'name'
             FROM json_array_elements(m.intent_ranking) WITH ORDINALITY AS e(value, n)
             WHERE json_typeof(e.value -> 'name') = 'string'
               AND e.value ->> 'name' NOT IN ('', 'nlu_fallback')
             ORDER BY e.n LIMIT 1)""",
    },
}

_LATEST_LABELS = """
    SELECT l.message_id, l.intent FROM labels AS l
    WHERE l.id IN (SELECT max(id) FROM labels WHERE created_at >= :since GROUP BY message_id)
"""

_PER_INTENT = """
    SELECT COALESCE(
               NULLIF((SELECT l.intent FROM labels AS l
                       WHERE l.message_id = ranked.id AND l.created_at >= :since
                       ORDER BY l.id DESC LIMIT 1), ''),
               ranked.guess,
               'unknown') AS intent,
           count(*) AS messages,
           sum(CASE WHEN ranked.first_name = 'nlu_fallback' THEN 1 ELSE 0 END) AS fallbacks
    FROM (SELECT m.id, {first_name} AS first_name, {guess} AS guess
          FROM messages AS m
          WHERE m.sender = 'user' AND m.created_at >= :since AND {has_ranking}) AS ranked
    GROUP BY 1
"""


def compute_in_database(db: Connection, since: float = 0.0) -> dict[str, Any]:
    """:func:`compute`'s result for messages since ``since``, aggregated by the database (SQLite
    or PostgreSQL): only handoffs and per-intent totals come back as rows. Blocking; run it in
    one transaction for a consistent snapshot."""
    ranking_sql = _RANKING_SQL[db.dialect.name]
    h, m, c = schema.handoffs.c, schema.messages.c, schema.candidates.c
    totals = db.execute(
        sa.select(
            sa.func.count(sa.distinct(m.conversation_id)).label("conversations"),
            sa.func.count().label("user_messages"),
        ).where(m.sender == "user", m.created_at >= since)
    ).one()
    handoffs = [
        dict(row._mapping)
        for row in db.execute(
            sa.select(
                h.reason, h.queued_at, h.claimed_at, h.first_agent_reply_at, h.closed_at
            ).where(h.queued_at >= since)
        )
    ]
    per_intent = {
        row.intent: {"messages": int(row.messages), "fallbacks": int(row.fallbacks)}
        for row in db.execute(sa.text(_PER_INTENT.format(**ranking_sql)), {"since": since})
    }
    labels = db.execute(
        sa.text(f"SELECT intent, count(*) AS n FROM ({_LATEST_LABELS}) AS latest GROUP BY intent"),
        {"since": since},
    )
    approved = db.execute(
        sa.select(c.intent, sa.func.count().label("n"))
        .where(c.kind == "example", c.status.in_(["approved", "exported"]))
        .group_by(c.intent)
    )
    models = [
        ModelVersion(**{col.name: row._mapping[col.name] for col in schema.model_versions.c})
        for row in db.execute(schema.model_versions.select().order_by(schema.model_versions.c.id))
    ]
    return _assemble(
        int(totals.conversations),
        int(totals.user_messages),
        handoffs,
        per_intent,
        {row.intent: int(row.n) for row in labels},
        {row.intent: int(row.n) for row in approved},
        models,
    )


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
