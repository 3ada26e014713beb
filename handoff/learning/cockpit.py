"""The maintainer's cockpit: how the assistant is doing over time, and every model it had.

:func:`build_cockpit` turns the rows of :meth:`~handoff.storage.learning_store.LearningStore.
cockpit_rows`, the model registry and the all-time metrics (:func:`handoff.learning.metrics.
compute`) into what the console's cockpit and ``handoff report --html`` draw. Pure: no I/O,
the clock is an argument.

Per day (UTC), from the first day asked for to today:

``conversations``
    conversations with a user message that day;
``handoff_rate``
    handoffs that day over those conversations;
``automation_rate``
    the share of that day's user messages the bot answered itself: not relayed in a handoff,
    not the one that started a handoff, not below the handoff threshold;
``first_reply_median_s``
    the median time from queueing to an agent's first reply, over the handoffs queued that
    day;
``labels`` / ``approvals``
    example candidates recorded that day from agents' labels in handoffs and verifications,
    and from approvals and corrections of held answers.

Models: each with its held-out accuracy and a 95 % Wilson interval (the uncertainty of a
score on a few hundred messages), automation and threshold at its operating point, and who
promoted it when; the learning curve is the accuracy of each model that was live, in the
order they went live.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from handoff.settings import PROJECT_ROOT
from handoff.storage.learning_store import ModelVersion

__all__ = ["DAY_S", "build_cockpit", "model_view", "render_cockpit_html", "wilson_interval"]

DAY_S = 86_400.0
APPROVAL_SOURCES = frozenset({"approval", "correction"})
Z_95 = 1.959964
FALLBACK_INTENT = "nlu_fallback"
TRIGGER_WINDOW_S = 5.0
"""A handoff queued this soon after a user message was triggered by it."""


def wilson_interval(correct: int, total: int) -> tuple[float, float] | None:
    """The 95 % Wilson score interval of a proportion ``correct / total`` (None if no data)."""
    if total <= 0:
        return None
    p = correct / total
    z2 = Z_95 * Z_95
    centre = (p + z2 / (2 * total)) / (1 + z2 / total)
    half = Z_95 * math.sqrt(p * (1 - p) / total + z2 / (4 * total * total)) / (1 + z2 / total)
    return round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)


def _day(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).strftime("%Y-%m-%d")


def model_view(model: ModelVersion) -> dict[str, Any]:
    """A registered model as the cockpit and ``handoff models list`` show it."""
    metrics = model.metrics or {}
    accuracy, examples = metrics.get("accuracy"), metrics.get("examples")
    interval = (
        wilson_interval(round(accuracy * examples), examples)
        if isinstance(accuracy, (int, float)) and isinstance(examples, int)
        else None
    )
    point = metrics.get("operating_point") or {}
    return {
        "name": model.name,
        "status": model.status,
        "trained_at": model.trained_at,
        "promoted_at": model.promoted_at,
        "promoted_by": model.promoted_by,
        "accuracy": accuracy,
        "accuracy_interval": interval,
        "macro_f1": metrics.get("macro_f1"),
        "examples": examples,
        "automation": point.get("automation"),
        "threshold": metrics.get("threshold"),
    }


def build_cockpit(
    rows: Mapping[str, Sequence[Mapping[str, Any]]],
    models: Sequence[ModelVersion],
    fallback_by_intent: Mapping[str, Mapping[str, Any]],
    *,
    now: float,
    days: int,
) -> dict[str, Any]:
    """What the cockpit shows for the last ``days`` days up to ``now`` (see the module
    docstring); ``fallback_by_intent`` as :func:`handoff.learning.metrics.compute` gives it."""
    first = now - (days - 1) * DAY_S
    labels = [_day(first + i * DAY_S) for i in range(days)]
    index = {label: i for i, label in enumerate(labels)}

    conversations: dict[str, set[str]] = defaultdict(set)
    messages, automated = [0] * days, [0] * days
    queued: dict[str, list[float]] = defaultdict(list)
    for row in rows["handoffs"]:
        queued[row["conversation_id"]].append(row["queued_at"])
    for row in rows["user_messages"]:
        day = index.get(_day(row["created_at"]))
        if day is None:
            continue
        conversations[labels[day]].add(row["conversation_id"])
        messages[day] += 1
        ranking = row.get("intent_ranking") or []
        handed_off = any(
            0.0 <= at - row["created_at"] <= TRIGGER_WINDOW_S
            for at in queued[row["conversation_id"]]
        )
        if (
            ranking
            and ranking[0].get("name") != FALLBACK_INTENT
            and row.get("handoff_id") is None
            and not handed_off
        ):
            automated[day] += 1

    handoffs, replies = [0] * days, [list[float]() for _ in range(days)]
    for row in rows["handoffs"]:
        day = index.get(_day(row["queued_at"]))
        if day is None:
            continue
        handoffs[day] += 1
        if row.get("first_agent_reply_at"):
            replies[day].append(row["first_agent_reply_at"] - row["queued_at"])

    taught, approvals = [0] * days, [0] * days
    for row in rows["examples"]:
        day = index.get(_day(row["created_at"]))
        if day is None:
            continue
        if row["source"] in APPROVAL_SOURCES:
            approvals[day] += 1
        else:
            taught[day] += 1

    def rate(numerators: Sequence[int], denominators: Sequence[int]) -> list[float | None]:
        pairs = zip(numerators, denominators, strict=True)
        return [round(n / d, 4) if d else None for n, d in pairs]

    per_day_conversations = [len(conversations[label]) for label in labels]
    views = [model_view(model) for model in models]
    curve = sorted(
        (view for view in views if view["promoted_at"] and view["accuracy"] is not None),
        key=lambda view: view["promoted_at"],
    )
    pending = dict(rows["pending"][0]) if rows.get("pending") else {}
    return {
        "days": labels,
        "conversations": per_day_conversations,
        "handoff_rate": rate(handoffs, per_day_conversations),
        "automation_rate": rate(automated, messages),
        "first_reply_median_s": [
            round(statistics.median(values), 1) if values else None for values in replies
        ],
        "labels": taught,
        "approvals": approvals,
        "fallback_by_intent": sorted(
            (
                {"intent": intent, "rate": counts["rate"], "messages": counts["messages"]}
                for intent, counts in fallback_by_intent.items()
            ),
            key=lambda item: (-item["rate"], -item["messages"], item["intent"]),
        )[:12],
        "models": views,
        "learning_curve": [
            {
                "name": view["name"],
                "promoted_at": view["promoted_at"],
                "accuracy": view["accuracy"],
                "interval": view["accuracy_interval"],
            }
            for view in curve
        ],
        "pending": pending,
    }


CHARTS_JS = PROJECT_ROOT / "agent_console" / "charts.js"
"""The console's chart drawing, inlined into the HTML report (one implementation)."""

_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Assistant cockpit: {title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #1d2330; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
td, th {{ border-bottom: 1px solid #dde1ea; padding: .25rem .5rem; text-align: left; }}
tr.live td {{ font-weight: 600; }}
.charts {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(36rem, 1fr)); gap: 1rem; }}
.chart {{ margin: 0; }} .chart figcaption {{ font-weight: 600; }}
.chart svg {{ max-width: 100%; height: auto; background: #fafbfd; }}
.chart .axis {{ stroke: #8890a0; }} .chart .grid {{ stroke: #e3e6ee; }}
.chart .tick {{ font-size: 10px; fill: #556; }}
.legend {{ list-style: none; display: flex; gap: 1rem; padding: 0; font-size: .8rem; }}
.legend li::before {{ content: ""; display: inline-block; width: .7rem; height: .7rem;
  margin-right: .3rem; background: var(--swatch); }}
.muted {{ color: #667; }}
</style>
</head>
<body>
<h1>Assistant cockpit</h1>
<p class="muted">{title}. Made by <code>handoff report --html</code>; the agent console's
Cockpit (maintainers) shows the same, live.</p>
<div id="models"></div>
<div id="charts" class="charts"></div>
<script>const COCKPIT = {data};</script>
<script>{charts}</script>
<script>
document.getElementById("models").appendChild(
  HandoffCharts.modelsTable(COCKPIT.models, COCKPIT.serving, null));
HandoffCharts.render(document.getElementById("charts"), COCKPIT);
</script>
</body>
</html>
"""


def render_cockpit_html(cockpit: Mapping[str, Any], days: int) -> str:
    """One self-contained page (no network) drawing ``cockpit`` with the console's charts."""
    data = json.dumps(dict(cockpit), ensure_ascii=True).replace("</", "<\\/")
    title = f"the last {days} days, to {cockpit['days'][-1]}" if cockpit["days"] else ""
    return _HTML.format(title=title, data=data, charts=CHARTS_JS.read_text(encoding="utf-8"))
