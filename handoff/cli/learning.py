"""The learning-loop commands behind ``handoff train|export|review|report|models`` (see
``handoff <command> --help``). Output is for people; failures raise :class:`CommandError`."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from handoff.core.errors import HandoffError
from handoff.learning.candidates import Review, ReviewItem
from handoff.learning.cockpit import DAY_S, build_cockpit, model_view, render_cockpit_html
from handoff.learning.loop import ExportError, promotion_problem, run_export, train_and_promote
from handoff.learning.metrics import compute, render_report
from handoff.learning.review import DecisionError, apply_decisions, current_review, parse_decisions
from handoff.settings import Settings
from handoff.storage.learning_store import Decision, LearningStore, NotFoundError
from handoff.storage.migrate import upgrade
from handoff.storage.store import Store

__all__ = ["CommandError", "run"]

DEFAULT_HTML_DAYS = 30
"""Days the HTML report charts when ``--days 0`` (all time) is given."""


class CommandError(HandoffError):
    """What went wrong and what to do; ``exit_code`` 1 (failed) or 2 (bad usage)."""

    code = "command_failed"

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _models_dir(args: argparse.Namespace, settings: Settings) -> Path:
    out: Path | None = getattr(args, "out", None)
    if out is not None:
        return out
    path = settings.model_path
    return path.parent if path.name.endswith(".tar.gz") else path


async def run(args: argparse.Namespace, settings: Settings) -> int:
    upgrade(settings.database_url)
    store = await Store.open(settings.database_url)
    learning = LearningStore(store.engine)
    try:
        if args.command == "train":
            return await _train(args, settings, learning)
        if args.command == "export":
            return await _export(settings, learning)
        if args.command == "review":
            return await _review(args, settings, store, learning)
        if args.command == "models":
            return await _models(args, settings, learning)
        if args.html is not None:
            return await _report_html(args, learning)
        return await _report(args, learning)
    finally:
        await store.close()


async def _train(args: argparse.Namespace, settings: Settings, learning: LearningStore) -> int:
    models_dir = _models_dir(args, settings)
    try:
        outcome = await train_and_promote(
            settings, learning, models_dir, retrain=args.retrain, promote=args.promote
        )
    except FileNotFoundError as error:
        raise CommandError(str(error)) from None
    except Exception as error:  # Rasa reports invalid data with many exception types
        raise CommandError(f"training failed: {error}") from error
    if outcome.report is not None:
        print(f"Report: {outcome.report} (and .json)")
    verb = "Promoted" if outcome.promoted else "Not promoted"
    print(f"{verb}: {outcome.reason}.")
    # The last line names the model archive (scripts and tests read it).
    print(f"Model: {models_dir / outcome.model.name}")
    return 0


async def _export(settings: Settings, learning: LearningStore) -> int:
    try:
        result = await run_export(settings, learning)
    except ExportError as error:
        raise CommandError(str(error)) from None
    for candidate_id, reason in sorted(result.skipped.items()):
        print(f"  skipped #{candidate_id}: {reason}")
    for candidate_id, reason in sorted(result.held.items()):
        print(f"  waiting #{candidate_id}: {reason}")
    if result.files:
        print(f"Wrote {len(result.written)} candidate(s) into: {', '.join(result.files)}")
        if result.held_out:
            print(
                f"{len(result.held_out)} of them went into the held-out test set: models are "
                "scored on them, never trained on them."
            )
        print("Next: `handoff train` trains, evaluates and promotes a model with them.")
    return 0


def _flags(item: ReviewItem) -> str:
    flags = []
    if item.conflicts:
        flags.append("CONFLICT with " + ", ".join(item.conflicts))
    if item.low_value:
        flags.append(f"LOW VALUE ({item.candidate.model_confidence:.2f})")
    if item.in_training_data:
        flags.append("ALREADY IN TRAINING DATA")
    if item.duplicates:
        flags.append(f"+{len(item.duplicates)} near-duplicate(s)")
    return f"  [{'; '.join(flags)}]" if flags else ""


def _print_review(review: Review, base_url: str) -> None:
    if not review.groups and not review.stories:
        print("No pending candidates.")
        return
    for group in review.groups:
        new = " (NEW INTENT)" if group.new_intent else ""
        print(f"\n{group.intent}{new}")
        for item in group.responses:
            c = item.candidate
            print(f"  #{c.id:<5} response utter_{group.intent}: {c.text!r}{_flags(item)}")
        for item in group.examples:
            c = item.candidate
            print(f"  #{c.id:<5} {c.text!r}{_flags(item)}")
            print(f"         {base_url}/console#conversation={c.conversation_id}")
    if review.stories:
        print("\nstories")
        for item in review.stories:
            c = item.candidate
            turns = " -> ".join(f"{intent}/{name}" for intent, name in c.turns or [])
            print(f"  #{c.id:<5} {turns}")
            print(f"         {base_url}/console#conversation={c.conversation_id}")


def _ids_for(args: argparse.Namespace, review: Review) -> list[int]:
    items = [*(i for g in review.groups for i in (*g.examples, *g.responses)), *review.stories]
    if args.intent:
        return [i.candidate.id for i in items if i.candidate.intent == args.intent]
    if args.clean:
        return [i.candidate.id for i in items if not (i.conflicts or i.low_value)]
    return list(args.ids)


async def _review(
    args: argparse.Namespace, settings: Settings, store: Store, learning: LearningStore
) -> int:
    review = await current_review(settings, learning)
    if args.review_action is None:
        _print_review(review, f"http://{settings.host}:{settings.port}")
        return 0
    if not args.reviewer:
        raise CommandError("say who reviews: handoff review --as USERNAME ...", 2)
    reviewer = await store.agent_by_username(args.reviewer)
    if reviewer is None or reviewer.disabled or not reviewer.is_maintainer:
        raise CommandError(
            f"{args.reviewer!r} is not an active maintainer account (see `handoff agents list`)",
            2,
        )
    if args.review_action == "edit":
        raw = [{"id": args.id, "action": "edit", "text": args.text, "intent": args.intent}]
    else:
        ids = _ids_for(args, review)
        if not ids:
            raise CommandError("no candidates selected: give ids, --intent or --clean", 2)
        action = args.review_action.replace("-", "_")
        raw = [{"id": i, "action": action} for i in ids]
    try:
        decisions: list[Decision] = parse_decisions(raw)
        applied = await apply_decisions(settings, learning, decisions, reviewer.id)
    except (DecisionError, NotFoundError) as error:
        raise CommandError(str(error), 2) from None
    for candidate in applied:
        print(
            f"#{candidate.id} {candidate.status}"
            + (f" ({candidate.note})" if candidate.note else "")
        )
    return 0


async def _report(args: argparse.Namespace, learning: LearningStore) -> int:
    since = time.time() - args.days * 86400 if args.days > 0 else 0.0
    metrics = compute(await learning.metrics_rows(since), await learning.models())
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        label = f"last {args.days:g} days" if args.days > 0 else "all time"
        print(render_report(metrics, label), end="")
    return 0


async def _models(args: argparse.Namespace, settings: Settings, learning: LearningStore) -> int:
    if args.models_command == "promote":
        problem = promotion_problem(settings, args.name)
        if problem:
            raise CommandError(problem, 2)
        try:
            model = await learning.promote(args.name, by=args.by)
        except NotFoundError as error:
            raise CommandError(str(error), 2) from None
        print(
            f"{model.name} is live. Running servers switch to it within "
            f"{settings.model_poll_seconds:g} s (GET /health names the model each serves)."
        )
        return 0
    views = [model_view(model) for model in await learning.models()]
    if args.json:
        print(json.dumps(views, indent=2))
        return 0
    if not views:
        print("No models yet: `handoff train` trains and registers one.")
        return 0
    print(f"{'model':<32} {'status':<9} {'accuracy (95% interval)':<24} {'auto':>5}  promoted")
    for view in reversed(views):
        interval = view["accuracy_interval"]
        accuracy = (
            f"{view['accuracy']:.3f} ({interval[0]:.3f}-{interval[1]:.3f})"
            if view["accuracy"] is not None and interval
            else ""
        )
        automation = f"{view['automation']:.0%}" if view["automation"] is not None else ""
        promoted = (
            f"{_when(view['promoted_at'])} by {view['promoted_by'] or '?'}"
            if view["promoted_at"]
            else ""
        )
        print(f"{view['name']:<32} {view['status']:<9} {accuracy:<24} {automation:>5}  {promoted}")
    return 0


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(timestamp))


async def _report_html(args: argparse.Namespace, learning: LearningStore) -> int:
    days = int(args.days) if args.days >= 1 else DEFAULT_HTML_DAYS
    now = time.time()
    rows = await learning.cockpit_rows(now - days * DAY_S)
    models = await learning.models()
    all_time = compute(await learning.metrics_rows(0.0), models)
    data = build_cockpit(rows, models, all_time["fallback_by_intent"], now=now, days=days)
    args.html.write_text(render_cockpit_html(data, days), encoding="utf-8")
    print(f"Wrote {args.html} (the last {days} days, {len(models)} models); open it in a browser.")
    return 0
