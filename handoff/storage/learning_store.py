"""The learning loop's persistent state: training-data candidates, the verification queue,
exports and the model registry. Shares the engine of :class:`handoff.storage.store.Store`.

Each public method is one transaction. Rows come out as plain dataclasses.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from handoff.core.errors import HandoffError
from handoff.storage import schema
from handoff.storage.records import Message

__all__ = [
    "REVIEWABLE",
    "Candidate",
    "Decision",
    "Label",
    "LearningStore",
    "ModelVersion",
    "NotFoundError",
    "Verification",
    "VerificationDecision",
    "top_intent",
]

C = schema.candidates.c
V = schema.verifications.c
REVIEWABLE = ("pending", "approved", "rejected", "skipped", "holdout")
"""Candidate statuses a review decision may still change (exported and held-out are final)."""
M = schema.model_versions.c


@dataclass(frozen=True)
class Candidate:
    id: int
    kind: str
    """``example`` (text -> intent), ``response`` (a new ``utter_<intent>``) or ``story``."""
    status: str
    """``pending``, ``approved``, ``rejected``, ``exported`` or ``skipped``."""
    source: str
    intent: str | None
    text: str | None
    turns: list[list[str]] | None
    new_intent: bool
    conversation_id: str | None
    message_id: int | None
    handoff_id: int | None
    model_intent: str | None
    model_confidence: float | None
    proposed_by: int | None
    reviewed_by: int | None
    reviewed_at: float | None
    note: str | None
    export_id: int | None
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class Verification:
    id: int
    message_id: int
    conversation_id: str
    text: str
    predicted_intent: str
    confidence: float
    reason: str
    """``uncertain`` (confidence just above the handoff threshold) or ``unhelpful``."""
    status: str
    """``pending``, ``confirmed``, ``corrected`` or ``dismissed``."""
    intent: str | None
    verified_by: int | None
    verified_at: float | None
    created_at: float
    intent_ranking: list[dict[str, Any]] | None = None
    """The message's stored intent ranking (only filled in by ``verifications``)."""


@dataclass(frozen=True)
class ModelVersion:
    id: int
    name: str
    training_hash: str
    trained_at: float
    training_seconds: float | None
    metrics: dict[str, Any] | None
    metrics_key: str | None
    status: str
    """``candidate``, ``live``, ``retired`` (was live) or ``rejected`` (lost the comparison)."""
    promoted_at: float | None
    report: str | None
    promoted_by: str | None = None
    """``handoff train`` (it won the comparison), or the maintainer who promoted it by hand."""


@dataclass(frozen=True)
class Label:
    """An agent's intent for a user message (the latest one counts)."""

    intent: str
    new_intent: bool


@dataclass(frozen=True)
class Decision:
    """A reviewer's decision on one candidate: ``approve``, ``reject`` or ``edit`` (which
    approves with a new ``text`` and/or ``intent``)."""

    candidate_id: int
    action: str
    text: str | None = None
    intent: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class VerificationDecision:
    """``confirm`` (the bot was right), ``correct`` (to ``intent``) or ``dismiss`` (not a usable
    example)."""

    verification_id: int
    action: str
    intent: str | None = None


class NotFoundError(HandoffError, LookupError):
    """An id that does not exist (or is not in a state the action applies to)."""

    code = "not_found"


def _row(cls: Any, table: sa.Table, row: Any) -> Any:
    return cls(**{column.name: row._mapping[column.name] for column in table.c})


def top_intent(ranking: Sequence[Mapping[str, Any]] | None) -> tuple[str | None, float | None]:
    """The model's best guess from a stored intent ranking (``nlu_fallback`` skipped)."""
    for item in ranking or []:
        if item.get("name") and item.get("name") != "nlu_fallback":
            return str(item["name"]), float(item.get("confidence") or 0.0)
    return None, None


class LearningStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    # Candidates ------------------------------------------------------------------------------

    async def label_message(
        self,
        message: Message,
        intent: str,
        is_new_intent: bool,
        agent_id: int,
        source: str = "label",
    ) -> Candidate:
        """Record an agent's label and make (or update, while pending) the message's example
        candidate; ``source`` says how the agent labelled it (``label`` in a handoff,
        ``approval`` or ``correction`` of a held bot answer)."""
        now = time.time()
        async with self.engine.begin() as db:
            await db.execute(
                schema.labels.insert().values(
                    message_id=message.id,
                    intent=intent,
                    is_new_intent=is_new_intent,
                    agent_id=agent_id,
                    created_at=now,
                )
            )
            return await _upsert_example(db, message, intent, is_new_intent, source, agent_id, now)

    async def labels(self, message_ids: Sequence[int]) -> dict[int, Label]:
        """The latest label of each message that has one."""
        if not message_ids:
            return {}
        lab = schema.labels.c
        query = (
            sa.select(lab.message_id, lab.intent, lab.is_new_intent)
            .where(lab.message_id.in_(list(message_ids)))
            .order_by(lab.id)
        )
        async with self.engine.connect() as db:
            rows = await db.execute(query)
        return {int(r.message_id): Label(r.intent, bool(r.is_new_intent)) for r in rows}

    async def add_candidates(self, rows: Sequence[dict[str, Any]]) -> list[int]:
        """Insert response/story candidates (dicts of column values), skipping any whose
        ``(kind, handoff_id, intent)`` is already recorded, so a retry adds nothing twice."""
        now = time.time()
        ids: list[int] = []
        async with self.engine.begin() as db:
            for row in rows:
                exists = (
                    await db.execute(
                        sa.select(C.id).where(
                            C.kind == row["kind"],
                            C.handoff_id == row.get("handoff_id"),
                            C.intent.is_(None)
                            if row.get("intent") is None
                            else C.intent == row.get("intent"),
                        )
                    )
                ).first()
                if exists:
                    continue
                result = await db.execute(
                    schema.candidates.insert().values(
                        status="pending", created_at=now, updated_at=now, **row
                    )
                )
                ids.append(int(result.inserted_primary_key[0]))
        return ids

    async def candidates(
        self, statuses: Iterable[str] = ("pending",), ids: Iterable[int] | None = None
    ) -> list[Candidate]:
        query = schema.candidates.select().where(C.status.in_(list(statuses))).order_by(C.id)
        if ids is not None:
            query = query.where(C.id.in_(list(ids)))
        async with self.engine.connect() as db:
            rows = await db.execute(query)
        return [_row(Candidate, schema.candidates, row) for row in rows]

    async def decide(self, decisions: Sequence[Decision], reviewer_id: int) -> list[Candidate]:
        """Apply review decisions all together, or none (:class:`NotFoundError` when an id is
        unknown or no longer pending/approved)."""
        now = time.time()
        status_of = {
            "approve": "approved",
            "edit": "approved",
            "reject": "rejected",
            "hold_out": "holdout",
        }
        async with self.engine.begin() as db:
            for decision in decisions:
                values: dict[str, Any] = {
                    "status": status_of[decision.action],
                    "reviewed_by": reviewer_id,
                    "reviewed_at": now,
                    "updated_at": now,
                    "note": decision.note,
                }
                if decision.text is not None:
                    values["text"] = decision.text
                if decision.intent is not None:
                    values["intent"] = decision.intent
                result = await db.execute(
                    schema.candidates.update()
                    .where(
                        C.id == decision.candidate_id,
                        C.status.in_(REVIEWABLE),
                    )
                    .values(**values)
                )
                if result.rowcount != 1:
                    raise NotFoundError(
                        f"no candidate {decision.candidate_id} that can still be reviewed "
                        "(exported candidates are final)"
                    )
            rows = await db.execute(
                schema.candidates.select().where(C.id.in_([d.candidate_id for d in decisions]))
            )
            return [_row(Candidate, schema.candidates, row) for row in rows]

    async def record_export(
        self,
        files: Sequence[str],
        written: Sequence[int],
        skipped: Mapping[int, str],
        held_out: Sequence[int] = (),
    ) -> int:
        """Record an export and mark its candidates ``exported`` (training data), ``held_out``
        (written to the held-out test set) or ``skipped`` (with why)."""
        now = time.time()
        async with self.engine.begin() as db:
            result = await db.execute(
                schema.exports.insert().values(
                    created_at=now,
                    files=list(files),
                    written=len(written) + len(held_out),
                    skipped=len(skipped),
                )
            )
            export_id = int(result.inserted_primary_key[0])
            for ids, status in ((written, "exported"), (held_out, "held_out")):
                if ids:
                    await db.execute(
                        schema.candidates.update()
                        .where(C.id.in_(list(ids)))
                        .values(status=status, export_id=export_id, updated_at=now, note=None)
                    )
            for candidate_id, reason in skipped.items():
                await db.execute(
                    schema.candidates.update()
                    .where(C.id == candidate_id)
                    .values(status="skipped", export_id=export_id, updated_at=now, note=reason)
                )
        return export_id

    async def rescore(self, scores: Mapping[int, tuple[str | None, float | None]]) -> None:
        """Store the live model's (intent, confidence) for candidates, e.g. after a swap."""
        async with self.engine.begin() as db:
            for candidate_id, (intent, confidence) in scores.items():
                await db.execute(
                    schema.candidates.update()
                    .where(C.id == candidate_id)
                    .values(model_intent=intent, model_confidence=confidence)
                )

    # Verification ----------------------------------------------------------------------------

    async def queue_verification(
        self, message: Message, predicted_intent: str, confidence: float, reason: str
    ) -> None:
        """Queue a bot-answered message for verification; ``unhelpful`` overrides
        ``uncertain`` on a message already queued."""
        async with self.engine.begin() as db:
            existing = (
                await db.execute(sa.select(V.id, V.reason).where(V.message_id == message.id))
            ).first()
            if existing is None:
                await db.execute(
                    schema.verifications.insert().values(
                        message_id=message.id,
                        conversation_id=message.conversation_id,
                        text=message.text,
                        predicted_intent=predicted_intent,
                        confidence=confidence,
                        reason=reason,
                        status="pending",
                        created_at=time.time(),
                    )
                )
            elif reason == "unhelpful" and existing.reason != "unhelpful":
                await db.execute(
                    schema.verifications.update()
                    .where(V.id == existing.id)
                    .values(reason=reason, status="pending")
                )

    async def verifications(self, statuses: Iterable[str] = ("pending",)) -> list[Verification]:
        """Verifications in these statuses, by arrival, with their messages' intent rankings
        (``handoff.learning.verification_queue`` orders them for agents)."""
        ranking = schema.messages.c.intent_ranking
        query = (
            sa.select(schema.verifications, ranking)
            .join(schema.messages, schema.messages.c.id == V.message_id)
            .where(V.status.in_(list(statuses)))
            .order_by(V.id)
        )
        async with self.engine.connect() as db:
            rows = await db.execute(query)
        return [
            Verification(
                **{column.name: row._mapping[column.name] for column in schema.verifications.c},
                intent_ranking=row._mapping[ranking],
            )
            for row in rows
        ]

    async def verify(
        self,
        decisions: Sequence[VerificationDecision],
        agent_id: int,
        known_intents: Iterable[str],
    ) -> list[int]:
        """Apply verification decisions all together; confirmations and corrections become
        example candidates (returned ids)."""
        now = time.time()
        known = set(known_intents)
        created: list[int] = []
        async with self.engine.begin() as db:
            for decision in decisions:
                row = (
                    await db.execute(
                        schema.verifications.select().where(
                            V.id == decision.verification_id, V.status == "pending"
                        )
                    )
                ).first()
                if row is None:
                    raise NotFoundError(f"no pending verification {decision.verification_id}")
                item = _row(Verification, schema.verifications, row)
                if decision.action == "dismiss":
                    status, intent = "dismissed", None
                elif decision.action == "confirm" or decision.intent == item.predicted_intent:
                    status, intent = "confirmed", item.predicted_intent
                else:
                    status, intent = "corrected", decision.intent
                await db.execute(
                    schema.verifications.update()
                    .where(V.id == item.id)
                    .values(status=status, intent=intent, verified_by=agent_id, verified_at=now)
                )
                if intent is None:
                    continue
                message = Message(
                    id=item.message_id,
                    conversation_id=item.conversation_id,
                    handoff_id=None,
                    sender="user",
                    agent_id=None,
                    client_message_id=None,
                    text=item.text,
                    intent_ranking=[{"name": item.predicted_intent, "confidence": item.confidence}],
                    response_name=None,
                    created_at=item.created_at,
                )
                candidate = await _upsert_example(
                    db, message, intent, intent not in known, "verification", agent_id, now
                )
                created.append(candidate.id)
        return created

    # Model registry --------------------------------------------------------------------------

    async def register_model(
        self, name: str, training_hash: str, training_seconds: float | None
    ) -> ModelVersion:
        """Record a trained model (once; a re-registration returns the existing record)."""
        async with self.engine.begin() as db:
            row = (await db.execute(schema.model_versions.select().where(M.name == name))).first()
            if row is None:
                await db.execute(
                    schema.model_versions.insert().values(
                        name=name,
                        training_hash=training_hash,
                        trained_at=time.time(),
                        training_seconds=training_seconds,
                        status="candidate",
                    )
                )
                row = (
                    await db.execute(schema.model_versions.select().where(M.name == name))
                ).first()
        return _row(ModelVersion, schema.model_versions, row)  # type: ignore[no-any-return]

    async def set_model_metrics(self, name: str, metrics: dict[str, Any], key: str) -> None:
        async with self.engine.begin() as db:
            await db.execute(
                schema.model_versions.update()
                .where(M.name == name)
                .values(metrics=metrics, metrics_key=key)
            )

    async def set_model_outcome(
        self, name: str, status: str, report: str | None, by: str = "handoff train"
    ) -> None:
        """Mark a model ``live`` (the previous live one becomes ``retired``; ``by`` who made
        it live) or ``rejected``."""
        now = time.time()
        async with self.engine.begin() as db:
            if status == "live":
                await db.execute(
                    schema.model_versions.update()
                    .where(M.status == "live", M.name != name)
                    .values(status="retired")
                )
            values: dict[str, Any] = {"status": status, "report": report}
            if status == "live":
                values["promoted_at"] = now
                values["promoted_by"] = by
            await db.execute(schema.model_versions.update().where(M.name == name).values(**values))

    async def promote(self, name: str, by: str) -> ModelVersion:
        """Make the registered model ``name`` live by hand (e.g. roll back to an earlier one);
        running servers switch to it. :class:`NotFoundError` if it is not registered."""
        async with self.engine.begin() as db:
            row = (await db.execute(schema.model_versions.select().where(M.name == name))).first()
        if row is None:
            raise NotFoundError(f"no model {name!r} in the registry (see `handoff models list`)")
        await self.set_model_outcome(name, "live", row.report, by=by)
        return next(m for m in await self.models() if m.name == name)

    async def cockpit_rows(self, since: float) -> dict[str, list[dict[str, Any]]]:
        """The rows the maintainer's cockpit charts from (:mod:`handoff.learning.cockpit`):
        since ``since``, plus what waits for people now."""
        h, m, a = schema.handoffs.c, schema.messages.c, schema.approvals.c
        async with self.engine.connect() as db:
            handoffs = await db.execute(
                sa.select(h.conversation_id, h.queued_at, h.first_agent_reply_at).where(
                    h.queued_at >= since
                )
            )
            user_messages = await db.execute(
                sa.select(m.conversation_id, m.created_at, m.handoff_id, m.intent_ranking).where(
                    m.sender == "user", m.created_at >= since
                )
            )
            labels = await db.execute(
                sa.select(C.source, C.created_at).where(C.kind == "example", C.created_at >= since)
            )
            pending = {
                "review": (
                    await db.execute(sa.select(sa.func.count()).where(C.status == "pending"))
                ).scalar_one(),
                "verification": (
                    await db.execute(sa.select(sa.func.count()).where(V.status == "pending"))
                ).scalar_one(),
                "held": (
                    await db.execute(sa.select(sa.func.count()).where(a.status == "pending"))
                ).scalar_one(),
            }
            return {
                "handoffs": [dict(r._mapping) for r in handoffs],
                "user_messages": [dict(r._mapping) for r in user_messages],
                "examples": [dict(r._mapping) for r in labels],
                "pending": [pending],
            }

    async def live_model(self) -> ModelVersion | None:
        async with self.engine.connect() as db:
            row = (
                await db.execute(schema.model_versions.select().where(M.status == "live"))
            ).first()
        return _row(ModelVersion, schema.model_versions, row) if row else None

    async def models(self) -> list[ModelVersion]:
        async with self.engine.connect() as db:
            rows = await db.execute(schema.model_versions.select().order_by(M.id))
        return [_row(ModelVersion, schema.model_versions, row) for row in rows]

    # Metrics ---------------------------------------------------------------------------------

    async def metrics_rows(self, since: float = 0.0) -> dict[str, list[dict[str, Any]]]:
        """The raw rows :mod:`handoff.learning.metrics` computes from (messages since ``since``)."""
        h, m, lab = schema.handoffs.c, schema.messages.c, schema.labels.c
        async with self.engine.connect() as db:
            handoffs = await db.execute(
                sa.select(
                    h.conversation_id, h.reason, h.queued_at, h.claimed_at,
                    h.first_agent_reply_at, h.closed_at,
                ).where(h.queued_at >= since)
            )  # fmt: skip
            user_messages = await db.execute(
                sa.select(m.id, m.conversation_id, m.intent_ranking).where(
                    m.sender == "user", m.created_at >= since
                )
            )
            labels = await db.execute(
                sa.select(lab.message_id, lab.intent)
                .order_by(lab.id)
                .where(lab.created_at >= since)
            )
            candidates = await db.execute(
                sa.select(C.kind, C.status, C.intent).where(C.kind == "example")
            )
            return {
                "handoffs": [dict(r._mapping) for r in handoffs],
                "user_messages": [dict(r._mapping) for r in user_messages],
                "labels": [dict(r._mapping) for r in labels],
                "candidates": [dict(r._mapping) for r in candidates],
            }


async def _upsert_example(
    db: AsyncConnection,
    message: Message,
    intent: str,
    is_new_intent: bool,
    source: str,
    agent_id: int | None,
    now: float,
) -> Candidate:
    model_intent, model_confidence = top_intent(message.intent_ranking)
    pending = (
        await db.execute(
            sa.select(C.id).where(
                C.kind == "example", C.message_id == message.id, C.status == "pending"
            )
        )
    ).first()
    if pending is not None:
        candidate_id = int(pending.id)
        await db.execute(
            schema.candidates.update()
            .where(C.id == candidate_id)
            .values(intent=intent, new_intent=is_new_intent, source=source, updated_at=now)
        )
    else:
        result = await db.execute(
            schema.candidates.insert().values(
                kind="example",
                status="pending",
                source=source,
                intent=intent,
                text=message.text,
                new_intent=is_new_intent,
                conversation_id=message.conversation_id,
                message_id=message.id,
                handoff_id=message.handoff_id,
                model_intent=model_intent,
                model_confidence=model_confidence,
                proposed_by=agent_id,
                created_at=now,
                updated_at=now,
            )
        )
        candidate_id = int(result.inserted_primary_key[0])
    row = (await db.execute(schema.candidates.select().where(C.id == candidate_id))).one()
    return _row(Candidate, schema.candidates, row)  # type: ignore[no-any-return]
