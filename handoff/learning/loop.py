"""The learning loop's I/O: export approved candidates into the training data, evaluate models
on the held-out set, record and promote model versions.

The decisions are made by pure functions (:mod:`handoff.learning.export`,
:mod:`handoff.learning.evaluation`);
this module reads and writes files, the database and Rasa models around them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from handoff.assistant.model_files import write_operating_point
from handoff.assistant.training import domain_files, learned_domain_file
from handoff.assistant.training_data import heldout_examples, predict_rankings, read_training_data
from handoff.core.errors import HandoffError
from handoff.learning.evaluation import FALLBACK_INTENT, score
from handoff.learning.export import (
    ApprovedExample,
    ApprovedResponse,
    ApprovedStory,
    ExistingData,
    Export,
    HeldOut,
    build_export,
    build_heldout,
    merge_learned,
    merge_nlu,
    normalize,
)
from handoff.learning.operating_point import (
    Prediction,
    automated,
    operating_point,
    precision_at,
)
from handoff.settings import PROJECT_ROOT, Settings
from handoff.storage.learning_store import Candidate, LearningStore, ModelVersion

__all__ = [
    "ExportError",
    "ExportResult",
    "Progress",
    "TrainOutcome",
    "approved_export",
    "evaluate_model",
    "existing_data",
    "learned_paths",
    "live_model_file",
    "metrics_for",
    "metrics_key",
    "promotion_problem",
    "run_export",
    "train_and_promote",
]

LEARNED_FILES = {"nlu": "nlu.yml", "stories": "stories.yml", "rules": "rules.yml"}
"""Files under ``data/learned/``; the domain additions go to ``bot/domain/learned.yml`` (see
:func:`~handoff.assistant.training.learned_domain_file`)."""

Progress = Callable[[str], None]


class ExportError(HandoffError, RuntimeError):
    """The export would produce invalid training data; nothing was written."""

    code = "invalid_export"


def learned_paths(settings: Settings) -> dict[str, Path]:
    learned = settings.data_dir / "learned"
    paths = {kind: learned / name for kind, name in LEARNED_FILES.items()}
    paths["domain"] = learned_domain_file(settings.bot_dir)
    return paths


# Reading the current training data -----------------------------------------------------------


def existing_data(settings: Settings) -> ExistingData:
    """Normalised example texts (entity markup resolved), intents and responses of the
    training data and domain as they are on disk."""
    data = read_training_data(settings.data_dir, settings.bot_dir)
    heldout = heldout_examples(settings.test_data) if settings.test_data.exists() else []
    return ExistingData(
        examples={normalize(text): intent for text, intent in data.examples},
        intents=data.intents,
        responses=data.responses,
        heldout={normalize(text): intent for text, intent in heldout},
    )


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    return document if isinstance(document, dict) else {}


def _dump(document: dict[str, Any]) -> str:
    return str(yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=1_000_000))


# Export ---------------------------------------------------------------------------------------


@dataclass
class ExportResult:
    written: list[int]
    skipped: dict[int, str]
    held: dict[int, str]
    held_out: list[int] = field(default_factory=list)
    """The part of ``written`` that went into the held-out test set."""
    files: list[str] = field(default_factory=list)
    """Files that changed (relative to the project root when inside it)."""
    export_id: int | None = None


def approved_export(
    candidates: list[Candidate], existing: ExistingData, redactions: tuple[str, ...]
) -> Export:
    """Build the export of approved candidates (pure apart from the argument conversion)."""
    examples = [
        ApprovedExample(c.id, c.text or "", c.intent or "")
        for c in candidates
        if c.kind == "example"
    ]
    responses = [
        ApprovedResponse(c.id, c.intent or "", c.text or "")
        for c in candidates
        if c.kind == "response"
    ]
    stories = [
        ApprovedStory(
            c.id,
            f"handoff {c.handoff_id} ({c.conversation_id})",
            [(str(t[0]), str(t[1])) for t in c.turns or []],
        )
        for c in candidates
        if c.kind == "story"
    ]
    return build_export(
        examples, responses, stories, existing, [("<redacted>", p) for p in redactions]
    )


async def run_export(
    settings: Settings, learning: LearningStore, progress: Progress = print
) -> ExportResult:
    """Write approved candidates into the learned training files, validated by Rasa first, and
    held-out ones into the held-out test set (``settings.test_data``).

    Running it again with nothing newly approved changes no file. Candidates written are
    marked ``exported``, those refused ``skipped`` (with the reason); a new intent with too
    few examples stays ``approved`` (``holdout``) for a later export.
    """
    approved = await learning.candidates(["approved"])
    held_out = await learning.candidates(["holdout"])
    progress(
        f"{len(approved)} approved candidate(s) to export"
        + (f", {len(held_out)} to hold out." if held_out else ".")
    )
    existing = await asyncio.to_thread(existing_data, settings)
    export = approved_export(approved, existing, settings.redact_patterns)
    heldout = build_heldout(
        [ApprovedExample(c.id, c.text or "", c.intent or "") for c in held_out],
        existing,
        export.domain.get("intents", []),
        [("<redacted>", p) for p in settings.redact_patterns],
    )
    skipped = {s.candidate_id: s.reason for s in [*export.skipped, *heldout.skipped]}
    held = {s.candidate_id: s.reason for s in [*export.held, *heldout.held]}
    result = ExportResult([*export.written, *heldout.written], skipped, held, heldout.written)
    if not result.written:
        if skipped:
            result.export_id = await learning.record_export([], [], skipped)
        progress("Nothing new to write.")
        return result

    paths = learned_paths(settings)
    current = {kind: _read_yaml(path) for kind, path in paths.items()}
    merged = merge_learned(current, export) if export.written else current
    changed = {
        kind: _dump(document)
        for kind, document in merged.items()
        if document != current.get(kind) and _has_content(kind, document)
    }
    if changed:
        progress("Validating the new training data with Rasa (rasa data validate)...")
        problems = await asyncio.to_thread(_validate_with, settings, paths, changed)
        if problems:
            raise ExportError(
                "Rasa rejects the training data this export would write; nothing was written.\n"
                + problems
            )
    for kind, text in changed.items():
        _write_atomically(paths[kind], text)
    result.files = [_display(paths[kind]) for kind in changed]
    if heldout.written:
        _write_heldout(settings.test_data, heldout)
        result.files.append(_display(settings.test_data))
    result.export_id = await learning.record_export(
        result.files, export.written, skipped, heldout.written
    )
    return result


def _write_heldout(path: Path, heldout: HeldOut) -> None:
    """Merge held-out examples into the held-out NLU file. Its comment lines before ``nlu:``
    are kept (others are lost: YAML has no comments once loaded)."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    document = yaml.safe_load(text) if text.strip() else None
    merged = merge_nlu(document if isinstance(document, dict) else {}, heldout.nlu)
    head = text.split("\nnlu:", 1)[0].splitlines()
    comments = "".join(f"{line}\n" for line in head if line.startswith("#"))
    body = _dump({key: value for key, value in merged.items() if key != "version"})
    version = _dump({"version": merged["version"]})
    _write_atomically(path, f"{version}\n{comments}{body}")


def _has_content(kind: str, document: dict[str, Any]) -> bool:
    key = {"nlu": "nlu", "stories": "stories", "rules": "rules"}.get(kind)
    if key is None:
        return bool(document.get("intents") or document.get("responses"))
    return bool(document.get(key))


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def _validate_with(settings: Settings, paths: dict[str, Path], changed: dict[str, str]) -> str:
    """Run ``rasa data validate --fail-on-warnings`` on a copy of the domain and data/ with
    the changed files in place; return its complaints ('' when valid)."""
    with tempfile.TemporaryDirectory(prefix="handoff-export-") as scratch:
        domain = Path(scratch) / "domain"
        data = Path(scratch) / "data"
        domain.mkdir()
        for name, path in domain_files(settings.bot_dir):
            (domain / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, domain / name)
        shutil.copytree(settings.data_dir, data)
        for kind, text in changed.items():
            original = paths[kind]
            if kind == "domain":
                target = domain / "learned.yml"
            else:
                target = data / original.relative_to(settings.data_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        rasa = Path(sys.executable).parent / "rasa"
        command = [
            str(rasa),
            "data",
            "validate",
            "--domain",
            str(domain),
            "--data",
            str(data),
            "--config",
            str(settings.bot_dir / "config.yml"),
            "--fail-on-warnings",
        ]
        result = subprocess.run(
            command, capture_output=True, text=True, cwd=scratch, check=False, timeout=600
        )
    if result.returncode == 0:
        return ""
    lines = (result.stdout + result.stderr).splitlines()
    relevant = [line for line in lines if "WARNING" in line or "ERROR" in line or "Error" in line]
    return "\n".join(relevant[-20:] or lines[-20:])


# Evaluation -----------------------------------------------------------------------------------


def metrics_key(test_data: Path, threshold: float | None, target_precision: float) -> str:
    """Identifies what a model's stored metrics were measured on."""
    digest = hashlib.sha256(test_data.read_bytes())
    digest.update(f"threshold={threshold};target_precision={target_precision}".encode())
    return digest.hexdigest()[:16]


async def evaluate_model(
    model_file: Path,
    examples: list[tuple[str, str]],
    threshold: float | None,
    target_precision: float,
) -> dict[str, Any]:
    """Load ``model_file`` (seconds to tens of seconds) and score it on ``examples`` at the
    handoff threshold chosen for ``target_precision`` (or at ``threshold`` when given).

    The metrics (:func:`~handoff.learning.evaluation.score`) gain ``operating_point`` (the
    chosen threshold, its precision and automation), ``threshold`` (the one scored at),
    ``automated_precision`` there and ``top_intent_accuracy`` (handoffs aside)."""
    rankings, ambiguity = await predict_rankings(model_file, [text for text, _ in examples])
    predictions = [
        Prediction(truth, r.intent, r.confidence, r.runner_up)
        for (_, truth), r in zip(examples, rankings, strict=True)
    ]
    point = operating_point(predictions, target_precision, ambiguity)
    used = point.threshold if threshold is None else threshold
    intents = [p.intent if automated(p, used, ambiguity) else FALLBACK_INTENT for p in predictions]
    metrics = score([truth for _, truth in examples], intents)
    precision, _ = precision_at(predictions, used, ambiguity)
    metrics["threshold"] = used
    metrics["top_intent_accuracy"] = round(
        sum(p.intent == p.truth for p in predictions) / len(predictions), 4
    )  # the classifier's own, handoffs aside (as `rasa test nlu` reports it)
    metrics["ambiguity_threshold"] = ambiguity
    metrics["automated_precision"] = None if precision is None else round(precision, 4)
    metrics["operating_point"] = point.as_dict()
    return metrics


async def metrics_for(
    version: ModelVersion,
    models_dir: Path,
    settings: Settings,
    learning: LearningStore,
    progress: Progress,
) -> dict[str, Any]:
    """The version's held-out metrics: stored ones if measured on the same test set, threshold
    setting and target precision, otherwise measured now (and stored). The chosen handoff
    threshold is written beside the model, where the assistant reads it at load."""
    key = metrics_key(settings.test_data, settings.fallback_threshold, settings.target_precision)
    model_file = models_dir / version.name
    if version.metrics is not None and version.metrics_key == key:
        progress(f"Using the stored held-out scores of {version.name}.")
        metrics = version.metrics
    else:
        if not model_file.exists():
            raise FileNotFoundError(f"model {version.name} is not in {models_dir}")
        progress(f"Evaluating {version.name} on {settings.test_data.name} (loading the model)...")
        started = time.perf_counter()
        metrics = await evaluate_model(
            model_file,
            heldout_examples(settings.test_data),
            settings.fallback_threshold,
            settings.target_precision,
        )
        progress(
            f"  accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, "
            f"fallback rate {metrics['fallback_rate']:.4f} ({time.perf_counter() - started:.0f} s)"
        )
        await learning.set_model_metrics(version.name, metrics, key)
    point = metrics.get("operating_point")
    if point is not None and model_file.exists():
        write_operating_point(model_file, point)
        progress("  " + describe_operating_point(point, settings.fallback_threshold))
    return metrics


def describe_operating_point(point: dict[str, Any], explicit: float | None) -> str:
    """One line for people: the chosen threshold and what it gives."""
    target = f"{point['target_precision']:.0%}"
    if not point["reached"]:
        text = (
            f"no threshold reaches {target} precision on the held-out set: the bot would hand "
            "off nearly everything (add training data or lower HANDOFF_TARGET_PRECISION)"
        )
    else:
        text = (
            f"handoff threshold {point['threshold']:.3f} for {target} precision: the bot "
            f"answers {point['automation']:.0%} of held-out messages itself, "
            f"{point['precision']:.1%} of them right"
        )
    if explicit is not None:
        text += f"; HANDOFF_FALLBACK_THRESHOLD={explicit} is set and wins"
    return text


# Training and promotion -----------------------------------------------------------------------


@dataclass
class TrainOutcome:
    model: ModelVersion
    promoted: bool
    reason: str
    report: Path | None
    live_before: str | None


async def train_and_promote(
    settings: Settings,
    learning: LearningStore,
    models_dir: Path,
    *,
    retrain: bool = False,
    promote: str = "auto",
    progress: Progress = print,
) -> TrainOutcome:
    """Train (or reuse) a model from bot/ and data/, evaluate it and the live model on the
    held-out set, write the comparison report and promote per ``promote``: ``auto`` (if not
    worse by more than the margin), ``always`` or ``never``."""
    from handoff.assistant.training import ensure_model
    from handoff.learning.evaluation import compare, render_markdown

    progress("Training the assistant (reused if bot/ and data/ are unchanged)...")
    trained = await asyncio.to_thread(
        ensure_model,
        models_dir,
        bot_dir=settings.bot_dir,
        data_dir=settings.data_dir,
        force=retrain,
    )
    progress(
        f"Model {trained.path.name}: "
        + ("up to date, reused" if trained.reused else f"trained in {trained.seconds:.0f} s")
    )
    version = await learning.register_model(
        trained.path.name, trained.training_hash, None if trained.reused else trained.seconds
    )
    live = await learning.live_model()
    if live is not None and live.name == version.name:
        return TrainOutcome(version, False, "this model is already live", None, live.name)

    new_metrics = await metrics_for(version, models_dir, settings, learning, progress)
    live_metrics = None
    if live is not None:
        try:
            live_metrics = await metrics_for(live, models_dir, settings, learning, progress)
        except FileNotFoundError as error:
            progress(f"The live model cannot be evaluated ({error}); comparing with nothing.")
    verdict = compare(new_metrics, live_metrics, settings.promotion_margin, promote == "always")
    if promote == "never":
        verdict = dataclasses.replace(
            verdict, promote=False, reason=f"not promoted on request (would be: {verdict.reason})"
        )

    reports = models_dir / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    stem = version.name.removesuffix(".tar.gz")
    report_md = reports / f"{stem}.md"
    report_md.write_text(
        render_markdown(
            version.name,
            new_metrics,
            live.name if live else None,
            live_metrics,
            verdict,
            _display(settings.test_data),
        ),
        encoding="utf-8",
    )
    (reports / f"{stem}.json").write_text(
        json.dumps(
            {
                "new": {"name": version.name, "metrics": new_metrics},
                "live": {"name": live.name, "metrics": live_metrics} if live else None,
                "promote": verdict.promote,
                "reason": verdict.reason,
                "paired": verdict.paired,
                "margin": settings.promotion_margin,
                "test_data": _display(settings.test_data),
                "at": time.time(),
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    status = "live" if verdict.promote else ("candidate" if promote == "never" else "rejected")
    await learning.set_model_outcome(version.name, status, str(report_md))
    refreshed = next(m for m in await learning.models() if m.name == version.name)
    return TrainOutcome(
        refreshed, verdict.promote, verdict.reason, report_md, live.name if live else None
    )


def promotion_problem(settings: Settings, name: str) -> str | None:
    """Why promoting the model ``name`` by hand would not work here (None: it would): the
    servers must serve a folder of models, and the archive must be in it."""
    if not settings.model_path.is_dir():
        return (
            f"HANDOFF_MODEL_PATH is one archive ({settings.model_path}): servers serve it as "
            "it is, so promoting another model changes nothing; point it at the models folder"
        )
    if "/" in name or not (settings.model_path / name).is_file():
        return f"no model archive {name!r} in {settings.model_path}"
    return None


async def live_model_file(settings: Settings, learning: LearningStore) -> Path | None:
    """The promoted model's archive, when ``model_path`` is a folder and one is promoted."""
    if not settings.model_path.is_dir():
        return None
    live = await learning.live_model()
    if live is None:
        return None
    path = settings.model_path / live.name
    return path if path.exists() else None
