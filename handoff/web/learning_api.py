"""HTTP API of the learning loop for the console: review (maintainers), verification (agents
and maintainers), the model registry, and Prometheus ``/metrics``.

Same sign-in and Origin rules as the rest of the agent API (see :mod:`handoff.web.agent_channel`).
"""

from __future__ import annotations

import hmac
import time
from typing import Any

from sanic import Blueprint, Request, response
from sanic.response import HTTPResponse

from handoff.core.safe_json import ProtocolError
from handoff.learning.cockpit import DAY_S, build_cockpit
from handoff.learning.loop import promotion_problem
from handoff.learning.metrics import render_prometheus, render_sign_in_refusals
from handoff.learning.review import (
    DecisionError,
    apply_decisions,
    apply_verifications,
    current_review,
    parse_decisions,
    parse_verifications,
)
from handoff.learning.verification_queue import QueueEntry, margin, order_queue
from handoff.storage.learning_store import NotFoundError, Verification
from handoff.storage.records import Agent
from handoff.web import auth
from handoff.web.agent_channel import guard_agent_routes
from handoff.web.context import request_context
from handoff.web.http_errors import error_response, json_error
from handoff.web.requests import json_body, signed_in_agent

__all__ = ["blueprint"]

blueprint = Blueprint("learning_api")
blueprint.on_request(guard_agent_routes)


async def _agent(request: Request, maintainer: bool = False) -> Agent | HTTPResponse:
    agent = await signed_in_agent(request)
    if agent is None:
        return json_error("unauthenticated", "sign in first (POST /api/login)")
    if maintainer and not agent.is_maintainer:
        return json_error("forbidden", "only maintainers review training data")
    return agent


def _decisions(request: Request) -> Any:
    body = json_body(request)
    return body.get("decisions")


@blueprint.route("/api/review", methods=["GET", "HEAD"])
async def review(request: Request) -> HTTPResponse:
    """Pending candidates grouped by intent, with flags."""
    checked = await _agent(request, maintainer=True)
    if isinstance(checked, HTTPResponse):
        return checked
    ctx = request_context(request)
    current = await current_review(ctx.settings, ctx.learning)
    return response.json(current.to_dict())


@blueprint.post("/api/review")
async def decide(request: Request) -> HTTPResponse:
    """Apply ``{"decisions": [{"id", "action": approve|reject|edit, "text"?, "intent"?}]}``
    all together or not at all."""
    checked = await _agent(request, maintainer=True)
    if isinstance(checked, HTTPResponse):
        return checked
    try:
        decisions = parse_decisions(_decisions(request))
        ctx = request_context(request)
        applied = await apply_decisions(ctx.settings, ctx.learning, decisions, checked.id)
    except (ProtocolError, DecisionError) as error:
        return error_response(error)
    except NotFoundError as error:
        return json_error("not_reviewable", error.message)
    return response.json(
        {"candidates": [{"id": c.id, "status": c.status, "note": c.note} for c in applied]}
    )


@blueprint.route("/api/verifications", methods=["GET", "HEAD"])
async def verifications(request: Request) -> HTTPResponse:
    """Bot answers waiting for verification (uncertain or marked unhelpful by the user), most
    instructive first, near-duplicates collapsed into ``duplicates`` (see
    ``handoff.learning.verification_queue``)."""
    checked = await _agent(request)
    if isinstance(checked, HTTPResponse):
        return checked
    learning = request_context(request).learning
    pending = {v.id: v for v in await learning.verifications()}
    groups = order_queue(
        QueueEntry(
            v.id, v.text, v.predicted_intent, v.reason, margin(v.intent_ranking, v.confidence)
        )
        for v in pending.values()
    )
    return response.json(
        {
            "verifications": [
                {
                    **_verification_json(pending[group.lead.id], group.lead.margin),
                    "duplicates": [
                        _verification_json(pending[entry.id], entry.margin)
                        for entry in group.duplicates
                    ],
                }
                for group in groups
            ]
        }
    )


def _verification_json(item: Verification, item_margin: float) -> dict[str, Any]:
    return {
        "id": item.id,
        "conversation_id": item.conversation_id,
        "message_id": item.message_id,
        "text": item.text,
        "predicted_intent": item.predicted_intent,
        "confidence": item.confidence,
        "margin": round(item_margin, 4),
        "reason": item.reason,
        "created_at": item.created_at,
    }


@blueprint.post("/api/verifications")
async def verify(request: Request) -> HTTPResponse:
    """Apply ``{"decisions": [{"id", "action": confirm|correct|dismiss, "intent"?}]}``;
    confirmations and corrections become example candidates for review."""
    checked = await _agent(request)
    if isinstance(checked, HTTPResponse):
        return checked
    ctx = request_context(request)
    assistant = ctx.assistant.current
    known = assistant.intent_names() if assistant else []
    try:
        decisions = parse_verifications(_decisions(request))
        created = await apply_verifications(ctx.learning, decisions, checked.id, known)
    except (ProtocolError, DecisionError) as error:
        return error_response(error)
    except NotFoundError as error:
        return json_error("not_pending", error.message)
    return response.json({"candidates": created})


@blueprint.route("/api/models", methods=["GET", "HEAD"])
async def models(request: Request) -> HTTPResponse:
    """The model registry and the model this process serves."""
    checked = await _agent(request)
    if isinstance(checked, HTTPResponse):
        return checked
    ctx = request_context(request)
    learning, holder = ctx.learning, ctx.assistant
    serving = holder.current.info.name if holder.current else None
    return response.json(
        {
            "serving": serving,
            "models": [
                {
                    "name": m.name,
                    "status": m.status,
                    "trained_at": m.trained_at,
                    "promoted_at": m.promoted_at,
                    "metrics": {
                        k: (m.metrics or {}).get(k)
                        for k in ("accuracy", "macro_f1", "fallback_rate", "examples")
                    },
                }
                for m in await learning.models()
            ],
        }
    )


MAX_COCKPIT_DAYS = 365


@blueprint.route("/api/cockpit", methods=["GET", "HEAD"])
async def cockpit(request: Request) -> HTTPResponse:
    """The maintainer's cockpit (``?days=N``, default 30): per-day rates, the models with
    their scores, the learning curve, what waits for people (see
    :mod:`handoff.learning.cockpit`)."""
    checked = await _agent(request, maintainer=True)
    if isinstance(checked, HTTPResponse):
        return checked
    raw = request.args.get("days", "30")
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_COCKPIT_DAYS):
        return json_error(
            "invalid_field", f"days must be a whole number from 1 to {MAX_COCKPIT_DAYS}"
        )
    days = int(raw)
    ctx = request_context(request)
    now = time.time()
    rows = await ctx.learning.cockpit_rows(now - days * DAY_S)
    scrape = await ctx.metrics.read()
    view = build_cockpit(
        rows,
        await ctx.learning.models(),
        scrape.values.get("fallback_by_intent", {}),
        now=now,
        days=days,
    )
    holder = ctx.assistant
    view["serving"] = holder.current.info.name if holder.current else None
    return response.json(view)


@blueprint.post("/api/models/promote")
async def promote(request: Request) -> HTTPResponse:
    """Make an earlier (or any registered) model live: ``{"name": "assistant-….tar.gz"}``
    (maintainers). Every server process swaps to it within ``HANDOFF_MODEL_POLL_SECONDS``."""
    checked = await _agent(request, maintainer=True)
    if isinstance(checked, HTTPResponse):
        return checked
    ctx = request_context(request)
    try:
        name = json_body(request).get("name")
    except ProtocolError as error:
        return error_response(error)
    if not isinstance(name, str) or not name:
        return json_error("invalid_field", 'give the model\'s name: {"name": "assistant-….tar.gz"}')
    problem = promotion_problem(ctx.settings, name)
    if problem:
        return json_error("invalid_field", problem)
    try:
        model = await ctx.learning.promote(name, by=checked.username)
    except NotFoundError as error:
        return error_response(error)
    return response.json({"promoted": model.name, "swap_within_s": ctx.settings.model_poll_seconds})


@blueprint.route("/metrics", methods=["GET", "HEAD"])
async def metrics(request: Request) -> HTTPResponse:
    """Prometheus metrics (all time). Needs ``Authorization: Bearer <HANDOFF_METRICS_TOKEN>``
    when that setting is set. The stored numbers are computed off the event loop and may be
    up to :data:`~handoff.learning.metrics_reader.METRICS_MAX_AGE_S` old (concurrent scrapes share
    one computation); the serving model, the sign-in refusals and the intent-guess lag are this
    process's now."""
    ctx = request_context(request)
    settings = ctx.settings
    if settings.metrics_token:
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given, f"Bearer {settings.metrics_token}"):
            return json_error("unauthenticated", "send Authorization: Bearer <metrics token>")
    reader, holder = ctx.metrics, ctx.assistant
    scrape = await reader.read()
    body = render_prometheus(scrape.values, holder.current.info.name if holder.current else None)
    body += render_sign_in_refusals(auth.REFUSED_SIGN_INS, auth.REFUSAL_REASONS)
    body += (
        "# HELP handoff_metrics_scrape_seconds Time to compute these metrics.\n"
        "# TYPE handoff_metrics_scrape_seconds gauge\n"
        f"handoff_metrics_scrape_seconds {scrape.seconds:.4f}\n"
    )
    guesses = ctx.service.intent_guesses
    body += (
        "# HELP handoff_intent_guess_lag_seconds How long the oldest message relayed to an agent"
        " has waited for its intent guesses (this process).\n"
        "# TYPE handoff_intent_guess_lag_seconds gauge\n"
        f"handoff_intent_guess_lag_seconds {guesses.lag_seconds(time.monotonic()):.3f}\n"
        "# HELP handoff_intent_guesses_skipped_total Relayed messages shown without guesses"
        " because a newer message of their conversation was waiting (this process).\n"
        "# TYPE handoff_intent_guesses_skipped_total counter\n"
        f"handoff_intent_guesses_skipped_total {guesses.skipped}\n"
    )
    return response.text(body, content_type="text/plain; version=0.0.4; charset=utf-8")
