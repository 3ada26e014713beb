"""Learning curve of the human-in-the-loop workflow on CLINC150 (or any data in its format).

Starts from --k labelled examples per intent, then streams the remaining training utterances
as user traffic, in random order, through a Rasa NLU model and the server's own routing
decision (``handoff.core.triggers.decide`` with the policy ``handoff serve`` builds). A message
the model is not sure of (``nlu_fallback`` from the FallbackClassifier) is handed off and a
simulated agent labels it with its true intent. Every --round-labels labels go through the
exporter (``handoff.learning.export.build_export``: redaction, normalisation, dedupe,
conflicts), the
NLU YAML it returns is written and the model is retrained on everything so far.

After each round it reports, on the test split of the chosen intents plus the out-of-scope
test queries: intent accuracy (in scope), automation rate (in-scope queries answered without
a handoff), precision of those automated answers, out-of-scope recall (out-of-scope queries
handed off), labels used and training time; next to the same numbers for a model trained on
as many randomly chosen labels, and once for the ceiling (all training data).

    .venv/bin/python -m benchmarks.learning_curve                     # 30 intents, minutes
    .venv/bin/python -m benchmarks.learning_curve --domains all --k 3 --round-labels 400 \
        --max-rounds 8 --verification-band 0.2 --no-ceiling       # all 150 intents, ~15 min
    .venv/bin/python -m benchmarks.learning_curve --pipeline diet     # DIET + TED: much slower
    .venv/bin/python -m benchmarks.learning_curve --max-rounds 1 --no-ceiling  # smoke

Writes benchmarks/results/learning-curve-<pipeline>.json and .png (--out to change).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from handoff.core.triggers import FALLBACK_INTENT as FALLBACK
from handoff.core.triggers import HandoffPolicy, decide, top_intent
from handoff.learning.export import ApprovedExample, ExistingData, build_export, normalize
from handoff.learning.operating_point import Prediction as OperatingPrediction
from handoff.learning.operating_point import automated as passes_fallback
from handoff.learning.operating_point import operating_point
from handoff.learning.verification_queue import QueueEntry, margin, order_queue

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "clinc150" / "data_full.json"
"""The team's shared folder beside the checkout (``../shared``), as in a fresh clone."""
DEFAULT_DOMAINS = ("banking", "credit_cards")
PIPELINES = {
    "default": ROOT / "bot" / "config.yml",
    "diet": ROOT / "bot" / "config-diet.yml",
    "sentence-encoder": ROOT / "bot" / "config-sentence-encoder.yml",
}
OOS_LABEL = "oos"
DEFAULT_MAX_ROUNDS = 0
DEFAULT_ROUND_LABELS = 200
DEFAULT_K = 5
DEFAULT_SEED = 42
DEFAULT_OUT = ROOT / "benchmarks" / "results"


# Data ---------------------------------------------------------------------------------------


class Utterance(NamedTuple):
    text: str
    intent: str


@dataclass(frozen=True)
class Dataset:
    intents: tuple[str, ...]
    train: tuple[Utterance, ...]
    test: tuple[Utterance, ...]
    oos_test: tuple[str, ...]


class DataError(ValueError):
    """The dataset files are missing or not in the CLINC150 format; the message says why."""


def _pairs(document: Mapping[str, Any], key: str, path: Path) -> list[Utterance]:
    raw = document.get(key, [])
    if not isinstance(raw, list) or not all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in raw
    ):
        raise DataError(f"{path}: {key!r} must be a list of [text, intent] pairs")
    return [Utterance(text, intent) for text, intent in raw]


def select_intents(
    domains: Mapping[str, Sequence[str]] | None, chosen: Sequence[str], train_intents: set[str]
) -> tuple[str, ...]:
    """The intents of the ``chosen`` domains (``["all"]``: every intent of the training data)."""
    if list(chosen) == ["all"]:
        return tuple(sorted(train_intents - {OOS_LABEL}))
    if domains is None:
        raise DataError("no domains file: pass --domains-file, or --domains all")
    unknown = [name for name in chosen if name not in domains]
    if unknown:
        raise DataError(
            f"unknown domain(s) {', '.join(unknown)}; known: {', '.join(sorted(domains))}"
        )
    intents = sorted({intent for name in chosen for intent in domains[name]})
    missing = [intent for intent in intents if intent not in train_intents]
    if missing:
        raise DataError(f"intents without training data: {', '.join(missing)}")
    return tuple(intents)


def load_dataset(
    data_path: Path, domains_path: Path | None, chosen: Sequence[str] = DEFAULT_DOMAINS
) -> Dataset:
    """Read a CLINC150-format file (``train``, ``test``, ``oos_test``: [text, intent] pairs)
    and keep the intents of the ``chosen`` domains (from ``domains_path``)."""
    try:
        document = json.loads(data_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"cannot read {data_path}: {error}") from error
    if not isinstance(document, dict) or "train" not in document or "test" not in document:
        raise DataError(f"{data_path}: expected a JSON object with 'train' and 'test' lists")
    train = _pairs(document, "train", data_path)
    test = _pairs(document, "test", data_path)
    oos_test = [u.text for u in _pairs(document, "oos_test", data_path)]
    domains: dict[str, list[str]] | None = None
    if domains_path is not None and domains_path.exists():
        try:
            domains = json.loads(domains_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise DataError(f"cannot read {domains_path}: {error}") from error
        if not isinstance(domains, dict):
            raise DataError(f"{domains_path}: expected an object: domain -> list of intents")
    intents = select_intents(domains, chosen, {u.intent for u in train})
    keep = set(intents)
    return Dataset(
        intents=intents,
        train=tuple(u for u in train if u.intent in keep),
        test=tuple(u for u in test if u.intent in keep),
        oos_test=tuple(oos_test),
    )


def initial_split(
    train: Sequence[Utterance], k: int, seed: int
) -> tuple[list[Utterance], list[Utterance]]:
    """Pick ``k`` random examples per intent (all of them if fewer); the rest, shuffled, is the
    traffic stream. Deterministic for a given seed."""
    rng = random.Random(seed)
    by_intent: dict[str, list[Utterance]] = {}
    for utterance in train:
        by_intent.setdefault(utterance.intent, []).append(utterance)
    initial: list[Utterance] = []
    stream: list[Utterance] = []
    for intent in sorted(by_intent):
        examples = list(by_intent[intent])
        rng.shuffle(examples)
        initial += examples[:k]
        stream += examples[k:]
    rng.shuffle(stream)
    return initial, stream


def random_pool(stream: Sequence[Utterance], seed: int) -> list[Utterance]:
    """The order in which the random-labelling baseline labels the stream: its budget of ``n``
    labels is the first ``n`` (so budgets are nested)."""
    pool = list(stream)
    random.Random(seed + 1).shuffle(pool)
    return pool


# Routing and the simulated agent ------------------------------------------------------------


def handed_off(parse_data: Mapping[str, Any], policy: HandoffPolicy) -> bool:
    """The server's decision for the first message of a conversation."""
    return decide(parse_data, policy, fallback_streak=0).reason is not None


@dataclass
class TrafficStats:
    messages: int = 0
    handed_off: int = 0
    automated: int = 0
    automated_correct: int = 0
    verified: int = 0
    """Automated answers an agent verified (and so labelled): see ``Loop.verification_band``."""


def needs_verification(
    parse_data: Mapping[str, Any], policy: HandoffPolicy, threshold: float, band: float
) -> bool:
    """Whether the server queues a bot answer for verification: its confidence is within
    ``band`` above the handoff threshold (as ``ConversationService._queue_if_uncertain``)."""
    intent, confidence = top_intent(parse_data)
    if band <= 0 or intent is None:
        return False
    return confidence < max(threshold, policy.intent_thresholds.get(intent, 0.0)) + band


@dataclass
class Loop:
    """Bookkeeping of the simulated workflow: traffic, handoffs, the agent's labels."""

    policy: HandoffPolicy
    round_labels: int
    initial_labels: int
    threshold: float = 0.0
    """The FallbackClassifier threshold (only used with a verification band)."""
    verification_band: float = 0.0
    """0: only handed-off messages are labelled; else automated answers this close above the
    threshold are verified by an agent too, which labels them."""
    verification_budget: int = 0
    """0: every answer in the band is verified at once; else answers in the band wait in a
    queue and agents verify this many entries of it per round, in ``verification_order``."""
    verification_order: str = "margin"
    """``margin``: the server's order (``handoff.learning.verification_queue``: smallest margin
    first, near-duplicates collapsed into one decision); ``arrival``: oldest first."""
    agent_labels: int = 0
    """Agents' decisions: handoff labels plus verifications (a collapsed entry is one)."""
    pending: list[Utterance] = field(default_factory=list)
    queue: dict[int, tuple[QueueEntry, Utterance]] = field(default_factory=dict)
    traffic: TrafficStats = field(default_factory=TrafficStats)
    round_traffic: TrafficStats = field(default_factory=TrafficStats)

    def observe(self, utterance: Utterance, parse_data: Mapping[str, Any]) -> bool:
        """Route one user message; a handed-off (or verified) one is labelled by the agent
        with its true intent. Returns whether it was handed off."""
        is_handoff = handed_off(parse_data, self.policy)
        intent, confidence = top_intent(parse_data)
        correct = intent == utterance.intent
        in_band = not is_handoff and needs_verification(
            parse_data, self.policy, self.threshold, self.verification_band
        )
        verified = in_band and not self.verification_budget
        for stats in (self.traffic, self.round_traffic):
            stats.messages += 1
            if is_handoff:
                stats.handed_off += 1
            else:
                stats.automated += 1
                stats.automated_correct += correct
                stats.verified += verified
        if is_handoff or verified:
            self.pending.append(utterance)
            self.agent_labels += 1
        elif in_band and intent is not None:
            ranking = parse_data.get("intent_ranking")
            entry = QueueEntry(
                self.traffic.messages,
                utterance.text,
                intent,
                "uncertain",
                margin(ranking, confidence),
            )
            self.queue[entry.id] = (entry, utterance)
        return is_handoff

    @property
    def labels_used(self) -> int:
        return self.initial_labels + self.agent_labels

    def round_due(self) -> bool:
        return len(self.pending) >= self.round_labels

    def verify_from_queue(self) -> list[Utterance]:
        """Agents work through ``verification_budget`` entries of the queue; the rest waits."""
        entries = [entry for entry, _ in self.queue.values()]
        if self.verification_order == "margin":
            chosen = [group.ids for group in order_queue(entries)]
        else:
            chosen = [(entry.id,) for entry in sorted(entries, key=lambda e: e.id)]
        labels = []
        for ids in chosen[: self.verification_budget]:
            labels += [self.queue.pop(i)[1] for i in ids]
            self.agent_labels += 1
        for stats in (self.traffic, self.round_traffic):
            stats.verified += len(labels)
        return labels

    def take_labels(self) -> tuple[list[Utterance], TrafficStats]:
        """The labels of this round (handoffs, then verifications) and its traffic; starts the
        next round."""
        if self.verification_budget:
            self.pending += self.verify_from_queue()
        labels, stats = self.pending, self.round_traffic
        self.pending, self.round_traffic = [], TrafficStats()
        return labels, stats


# Exporting labels as training data ----------------------------------------------------------


@dataclass
class ExportResult:
    document: dict[str, Any]
    """The NLU YAML document ``build_export`` returned."""
    written: int
    duplicates: int
    conflicts: int
    other_skipped: int


class Exporter:
    """Runs labels through the project's exporter, remembering what it already exported."""

    def __init__(self, intents: Sequence[str]) -> None:
        self.intents = frozenset(intents)
        self.examples: dict[str, str] = {}
        """normalised text -> intent, of everything exported so far."""
        self._next_id = 1

    def export(self, labels: Sequence[Utterance]) -> ExportResult:
        approved = []
        for utterance in labels:
            approved.append(ApprovedExample(self._next_id, utterance.text, utterance.intent))
            self._next_id += 1
        existing = ExistingData(examples=dict(self.examples), intents=self.intents)
        export = build_export(approved, [], [], existing)
        for block in export.nlu["nlu"]:
            for line in block["examples"].splitlines():
                if line.startswith("- "):
                    self.examples[normalize(line[2:])] = block["intent"]
        reasons = [skip.reason for skip in [*export.skipped, *getattr(export, "held", [])]]
        duplicates = sum(reason == "duplicate" for reason in reasons)
        conflicts = sum(reason.startswith("conflict") for reason in reasons)
        return ExportResult(
            document=export.nlu,
            written=len(export.written),
            duplicates=duplicates,
            conflicts=conflicts,
            other_skipped=len(reasons) - duplicates - conflicts,
        )

    @property
    def size(self) -> int:
        """Training examples exported so far."""
        return len(self.examples)


class _LiteralDumper(yaml.SafeDumper):
    """Writes multi-line strings (the examples lists) as ``|`` blocks, as people do."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_LiteralDumper.add_representer(str, _represent_str)


def write_yaml(document: Mapping[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.dump(
        dict(document), Dumper=_LiteralDumper, sort_keys=False, allow_unicode=True, width=100
    )
    path.write_text(text, encoding="utf-8")


# Pipeline config ----------------------------------------------------------------------------


def nlu_config(
    config: Mapping[str, Any], epochs: int | None = None, threshold: float | None = None
) -> dict[str, Any]:
    """An NLU-only copy of a bot config: no policies; DIET ``epochs`` and the
    FallbackClassifier ``threshold`` replaced when given."""
    pipeline = [dict(component) for component in config.get("pipeline") or []]
    names = [str(component.get("name", "")).rsplit(".", 1)[-1] for component in pipeline]
    if "FallbackClassifier" not in names:
        raise ValueError("the pipeline has no FallbackClassifier: nothing would be handed off")
    for name, component in zip(names, pipeline, strict=True):
        if name == "DIETClassifier" and epochs is not None:
            component["epochs"] = epochs
        if name == "FallbackClassifier" and threshold is not None:
            component["threshold"] = threshold
    result = {key: value for key, value in config.items() if key not in ("policies", "pipeline")}
    result["pipeline"] = pipeline
    return result


def diet_epochs(config: Mapping[str, Any]) -> int | None:
    """DIET's epochs in an NLU config (None without DIET; Rasa's default 300 if unset)."""
    for component in config.get("pipeline") or []:
        if str(component.get("name", "")).endswith("DIETClassifier"):
            return int(component.get("epochs", 300))
    return None


def ambiguity_threshold(config: Mapping[str, Any]) -> float:
    """The FallbackClassifier's ambiguity threshold (Rasa's default 0.1 if unset)."""
    for component in config.get("pipeline") or []:
        if str(component.get("name", "")).endswith("FallbackClassifier"):
            return float(component.get("ambiguity_threshold", 0.1))
    raise ValueError("the pipeline has no FallbackClassifier")


def fallback_threshold(config: Mapping[str, Any]) -> float:
    """The FallbackClassifier threshold of an NLU config (Rasa's default 0.3 if unset)."""
    for component in config.get("pipeline") or []:
        if str(component.get("name", "")).endswith("FallbackClassifier"):
            return float(component.get("threshold", 0.3))
    raise ValueError("the pipeline has no FallbackClassifier")


# Metrics ------------------------------------------------------------------------------------


class Prediction(NamedTuple):
    truth: str | None
    """The true intent; None for an out-of-scope query."""
    predicted: str | None
    """The best real intent (what the bot would answer)."""
    handed_off: bool
    confidence: float = 0.0
    """The best real intent's confidence."""
    runner_up: float | None = None
    """The second real intent's confidence."""
    policy_handoff: bool = False
    """Handed off whatever the threshold (an always-human or request intent, a per-intent
    threshold)."""


def without_fallback(parse_data: Mapping[str, Any]) -> dict[str, Any]:
    """The parse as if there were no FallbackClassifier: its pseudo-intent removed."""
    ranking = [c for c in parse_data.get("intent_ranking") or [] if c.get("name") != FALLBACK]
    intent = ranking[0] if ranking else parse_data.get("intent") or {}
    return {**parse_data, "intent": intent, "intent_ranking": ranking}


def predict(truth: str | None, parse_data: Mapping[str, Any], policy: HandoffPolicy) -> Prediction:
    plain = without_fallback(parse_data)
    ranking = plain["intent_ranking"]
    return Prediction(
        truth,
        top_intent(parse_data)[0],
        handed_off(parse_data, policy),
        float(ranking[0].get("confidence") or 0.0) if ranking else 0.0,
        float(ranking[1].get("confidence") or 0.0) if len(ranking) > 1 else None,
        handed_off(plain, policy),
    )


def at_target_precision(
    predictions: Sequence[Prediction], target: float, ambiguity: float
) -> dict[str, Any]:
    """The operating point ``handoff train`` would choose on these queries (the threshold
    chosen on the in-scope test queries themselves, as ``handoff train`` does on its held-out
    set: optimistic on small sets) and what it gives, out-of-scope recall included."""
    eligible = [p for p in predictions if p.truth is not None and not p.policy_handoff]
    in_scope = [p for p in predictions if p.truth is not None]
    oos = [p for p in predictions if p.truth is None]
    if not eligible:
        return {"threshold": None}
    point = operating_point(
        [OperatingPrediction(p.truth or "", p.predicted or "", p.confidence, p.runner_up)
         for p in eligible],
        target,
        ambiguity,
    )  # fmt: skip

    def answered(p: Prediction) -> bool:
        return not p.policy_handoff and passes_fallback(
            OperatingPrediction("", "", p.confidence, p.runner_up), point.threshold, ambiguity
        )

    answered_in_scope = [p for p in in_scope if answered(p)]
    return {
        "target_precision": target,
        "threshold": round(point.threshold, 4),
        "reached": point.reached,
        "automation_rate": _ratio(len(answered_in_scope), len(in_scope)),
        "automated_precision": _ratio(
            sum(p.predicted == p.truth for p in answered_in_scope), len(answered_in_scope)
        ),
        "oos_recall": _ratio(sum(not answered(p) for p in oos), len(oos)),
    }


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def compute_metrics(predictions: Sequence[Prediction]) -> dict[str, Any]:
    """Accuracy, automation rate, precision of automated answers and out-of-scope recall.

    - ``accuracy``: in-scope queries whose best intent is right (whether handed off or not).
    - ``automation_rate``: in-scope queries answered without a handoff.
    - ``automated_precision``: of those, the share answered with the right intent.
    - ``automated_precision_with_oos``: the same over every automated answer, out-of-scope
      queries (always wrong when automated) included.
    - ``oos_recall``: out-of-scope queries handed off.
    - ``automated_accuracy``: in-scope queries answered by the bot and right (Larson et al.'s
      in-scope accuracy with a threshold).
    """
    in_scope = [p for p in predictions if p.truth is not None]
    oos = [p for p in predictions if p.truth is None]
    correct = sum(p.predicted == p.truth for p in in_scope)
    automated = [p for p in in_scope if not p.handed_off]
    automated_correct = sum(p.predicted == p.truth for p in automated)
    oos_automated = sum(not p.handed_off for p in oos)
    return {
        "in_scope": len(in_scope),
        "oos": len(oos),
        "accuracy": _ratio(correct, len(in_scope)),
        "automation_rate": _ratio(len(automated), len(in_scope)),
        "automated_precision": _ratio(automated_correct, len(automated)),
        "automated_precision_with_oos": _ratio(automated_correct, len(automated) + oos_automated),
        "oos_recall": _ratio(len(oos) - oos_automated, len(oos)),
        "automated_accuracy": _ratio(automated_correct, len(in_scope)),
    }


# Output -------------------------------------------------------------------------------------

TABLE_COLUMNS = (
    ("round", "round", "{:>5}"),
    ("labels", "labels_used", "{:>6}"),
    ("train ex", "training_examples", "{:>8}"),
    ("acc", "hitl.accuracy", "{:>5}"),
    ("auto", "hitl.automation_rate", "{:>5}"),
    ("prec", "hitl.automated_precision", "{:>5}"),
    ("oos rec", "hitl.oos_recall", "{:>7}"),
    ("thr@P", "hitl.at_target.threshold", "{:>5}"),
    ("auto@P", "hitl.at_target.automation_rate", "{:>6}"),
    ("prec@P", "hitl.at_target.automated_precision", "{:>6}"),
    ("oos@P", "hitl.at_target.oos_recall", "{:>5}"),
    ("train s", "train_s", "{:>7}"),
    ("rand acc", "random.accuracy", "{:>8}"),
    ("rand auto", "random.automation_rate", "{:>9}"),
    ("rand prec", "random.automated_precision", "{:>9}"),
    ("rand oos", "random.oos_recall", "{:>8}"),
)


def _lookup(row: Mapping[str, Any], key: str) -> Any:
    value: Any = row
    for part in key.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if value <= 1 else f"{value:.0f}"
    return str(value)


def format_header() -> str:
    return " ".join(spec.format(title) for title, _, spec in TABLE_COLUMNS)


def format_row(row: Mapping[str, Any]) -> str:
    return " ".join(spec.format(_cell(_lookup(row, key))) for _, key, spec in TABLE_COLUMNS)


def _at_target(metrics: Mapping[str, Any], metric: str) -> float | None:
    """``metric`` at the target-precision operating point, else at the config's threshold."""
    point = metrics.get("at_target") or {}
    value = point.get(metric) if point.get("reached") else None
    return value if value is not None else metrics.get(metric)


def plot(results: Mapping[str, Any], path: Path) -> None:
    """Automation and out-of-scope recall at the target-precision operating point, and
    accuracy, against labels used: human-in-the-loop, random, ceiling."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

    rounds = results["rounds"]
    labels = [row["labels_used"] for row in rounds]
    ceiling = results.get("ceiling") or {}
    setting = results["settings"]
    target = setting.get("target_precision") or 0.95
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2), sharex=True)
    for axis, metric, title in (
        (axes[0], "automation_rate", f"automation at {target:.0%} precision (in scope)"),
        (axes[1], "accuracy", "intent accuracy (in scope)"),
        (axes[2], "oos_recall", "out-of-scope recall at that threshold"),
    ):
        for arm, style, name in (("hitl", "o-", "agent labels"), ("random", "s--", "random")):
            if all(row[arm] is not None for row in rounds):
                values = [_at_target(row[arm], metric) for row in rounds]
                axis.plot(labels, values, style, label=name)
        if _at_target(ceiling, metric) is not None:
            axis.axhline(
                _at_target(ceiling, metric),
                color="grey",
                linestyle=":",
                label=f"all training data ({ceiling.get('training_examples', '?')})",
            )
        axis.set_title(title)
        axis.set_xlabel("labels used")
        axis.set_ylim(0, 1)
        axis.grid(alpha=0.3)
    axes[0].legend(loc="lower right")
    band = setting.get("verification_band") or 0
    verifying = ""
    if band:
        budget = setting.get("verification_budget") or 0
        verifying = f"; verifying answers up to {band:g} above the threshold" + (
            f", {budget} per round by {setting.get('verification_order')}" if budget else ""
        )
    figure.suptitle(
        f"{setting['dataset']['name']}: {len(setting['dataset']['intents'])} intents, "
        f"pipeline {setting['pipeline']}, k={setting['k']}, {setting['round_labels']} "
        f"labels per round{verifying}"
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


# Rasa ---------------------------------------------------------------------------------------


class Clock:
    """Progress lines with the time since the start."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def say(self, message: str) -> None:
        print(f"[{time.perf_counter() - self.started:7.1f} s] {message}", flush=True)


def quiet_rasa() -> None:
    """Environment for Rasa/TensorFlow, set before they are imported; no debug logs."""
    os.environ.setdefault("RASA_TELEMETRY_ENABLED", "false")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("SQLALCHEMY_SILENCE_UBER_WARNING", "1")
    os.environ.setdefault("RASA_MAX_CACHE_SIZE", "0")  # every model sees new data: no cache
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", message=".*deprecated.*")
    import logging

    from rasa.utils.log_utils import configure_structlog

    configure_structlog(logging.WARNING)  # else Rasa logs every parse at DEBUG
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # tf.function retracing notes


@contextlib.contextmanager
def _output_to(log: Path | None) -> Iterator[None]:
    """Send Rasa's prints and warnings to ``log`` (None: leave them on the terminal)."""
    if log is None:
        yield
        return
    with (
        log.open("a", encoding="utf-8") as stream,
        contextlib.redirect_stdout(stream),
        contextlib.redirect_stderr(stream),
    ):
        yield


def train(config: Path, data_dir: Path, out_dir: Path, name: str, log: Path | None) -> Path:
    """Train an NLU model on every YAML file in ``data_dir``; return the archive."""
    from rasa.model_training import train_nlu

    with _output_to(log):
        model = train_nlu(str(config), str(data_dir), str(out_dir), fixed_model_name=name)
    if not model:
        raise RuntimeError(f"Rasa NLU training failed for {data_dir}; see {log or 'above'}")
    return Path(model)


class Parser:
    """A loaded NLU model, parsing as the server does (``Agent.parse_message``)."""

    def __init__(self, model: Path, log: Path | None) -> None:
        import asyncio

        from rasa.core.agent import Agent

        with _output_to(log):
            self.agent = Agent.load(str(model))
        self.loop = asyncio.new_event_loop()

    def parse(self, text: str) -> dict[str, Any]:
        result: dict[str, Any] = self.loop.run_until_complete(self.agent.parse_message(text))
        return result

    def serve_at(self, threshold: float) -> None:
        """Hand off below ``threshold`` from now on (the FallbackClassifier's threshold)."""
        from handoff.assistant.rasa_assistant import apply_fallback_threshold

        apply_fallback_threshold(self.agent, threshold)

    def close(self) -> None:
        import gc

        self.loop.close()
        del self.agent
        gc.collect()


class Target(NamedTuple):
    """The operating point to report: ``handoff train``'s target precision and the model's
    ambiguity threshold."""

    precision: float
    ambiguity: float
    calibrate: bool = True
    """Serve each round's model at its chosen threshold (as ``handoff serve`` does after
    ``handoff train``); False when a threshold was set explicitly."""


def evaluate(
    parser: Parser, dataset: Dataset, policy: HandoffPolicy, clock: Clock, name: str, target: Target
) -> dict[str, Any]:
    """Metrics on the in-scope test split plus the out-of-scope test queries, at the model's
    threshold and (``at_target``) at the threshold chosen for ``target``."""
    queries: list[tuple[str | None, str]] = [(u.intent, u.text) for u in dataset.test]
    queries += [(None, text) for text in dataset.oos_test]
    started = time.perf_counter()
    predictions = []
    for index, (truth, text) in enumerate(queries, 1):
        predictions.append(predict(truth, parser.parse(text), policy))
        if index % 500 == 0 and index < len(queries):
            clock.say(f"  evaluating {name}: {index}/{len(queries)} test queries")
    metrics = compute_metrics(predictions)
    metrics["at_target"] = at_target_precision(predictions, target.precision, target.ambiguity)
    metrics["eval_s"] = round(time.perf_counter() - started, 1)
    return metrics


@dataclass
class Arm:
    """One line of the curve: its training data folder, exporter and current model."""

    name: str
    work: Path
    exporter: Exporter
    files: int = 0

    @property
    def data_dir(self) -> Path:
        return self.work / "data"

    def add(self, labels: Sequence[Utterance]) -> ExportResult:
        result = self.exporter.export(labels)
        if result.document["nlu"]:
            self.files += 1
            write_yaml(result.document, self.data_dir / f"part-{self.files:03d}.yml")
        return result

    def train_and_evaluate(
        self,
        config: Path,
        dataset: Dataset,
        policy: HandoffPolicy,
        clock: Clock,
        label: str,
        log: Path | None,
        target: Target,
    ) -> tuple[dict[str, Any], Parser]:
        clock.say(f"  training {self.name} model on {self.exporter.size} examples ({label})")
        started = time.perf_counter()
        for old in (self.work / "models").glob("*.tar.gz"):
            old.unlink()
        model = train(config, self.data_dir, self.work / "models", label, log)
        seconds = time.perf_counter() - started
        loading = time.perf_counter()
        parser = Parser(model, log)
        load_seconds = time.perf_counter() - loading
        metrics = evaluate(parser, dataset, policy, clock, self.name, target)
        chosen = metrics["at_target"]["threshold"]
        if target.calibrate and chosen is not None:
            parser.serve_at(chosen)
            metrics["served_threshold"] = chosen
        metrics["train_s"] = round(seconds, 1)
        metrics["load_s"] = round(load_seconds, 1)
        metrics["training_examples"] = self.exporter.size
        clock.say(
            f"  {self.name}: trained in {seconds:.0f} s; accuracy {_cell(metrics['accuracy'])}, "
            f"automation {_cell(metrics['automation_rate'])}, "
            f"oos recall {_cell(metrics['oos_recall'])}; at {target.precision:.0%} precision: "
            f"threshold {_cell(metrics['at_target']['threshold'])}, "
            f"automation {_cell(metrics['at_target'].get('automation_rate'))}, "
            f"oos recall {_cell(metrics['at_target'].get('oos_recall'))}"
        )
        return metrics, parser


# The benchmark ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.learning_curve",
        description=__doc__.split("\n\n")[0],
        epilog=(
            "With the defaults and the default pipeline it takes a few minutes on 2 vCPUs, "
            "all 150 intents about 15 (see docs/benchmarks.md); DIET takes many times "
            "longer. Models and training data go to a temporary folder, removed "
            "at the end unless --keep-work."
        ),
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="CLINC150-format JSON: train, test, oos_test as [text, intent] pairs "
        "(default ../shared/datasets/clinc150/data_full.json beside the checkout)",
    )
    data.add_argument(
        "--domains-file",
        type=Path,
        help="JSON object: domain -> list of intents (default: domains.json next to --data)",
    )
    data.add_argument(
        "--domains",
        default=",".join(DEFAULT_DOMAINS),
        help=f"comma-separated domains, or 'all' for every intent (default "
        f"{','.join(DEFAULT_DOMAINS)}: 30 intents)",
    )
    loop = parser.add_argument_group("simulated workflow")
    loop.add_argument(
        "--k",
        type=int,
        default=DEFAULT_K,
        help=f"initial examples per intent (default {DEFAULT_K})",
    )
    loop.add_argument(
        "--round-labels",
        type=int,
        default=DEFAULT_ROUND_LABELS,
        help=f"agent labels per export-and-retrain round (default {DEFAULT_ROUND_LABELS})",
    )
    loop.add_argument(
        "--max-rounds",
        type=int,
        default=DEFAULT_MAX_ROUNDS,
        help="stop after this many retraining rounds (default 0: when the traffic runs out; "
        "with the defaults that is after 4-5 rounds)",
    )
    loop.add_argument(
        "--max-traffic",
        type=int,
        default=0,
        help="stream at most this many user messages (default 0: every remaining training "
        "utterance)",
    )
    loop.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help=f"sampling seed (default {DEFAULT_SEED})"
    )
    loop.add_argument(
        "--threshold",
        type=float,
        help="FallbackClassifier threshold (default: HANDOFF_FALLBACK_THRESHOLD if set, else "
        "the pipeline config's, 0.6)",
    )
    loop.add_argument(
        "--target-precision",
        type=float,
        default=None,
        help="the precision of automated answers each round's threshold is chosen for, as "
        "`handoff train` does (default: HANDOFF_TARGET_PRECISION, 0.95); with --threshold "
        "the model is served at that threshold instead and this is only reported",
    )
    loop.add_argument(
        "--verification-band",
        type=float,
        default=0.0,
        help="also label the bot's answers whose confidence is less than this above the "
        "threshold, as agents verifying them do (HANDOFF_VERIFICATION_BAND; default 0: only "
        "handed-off messages are labelled)",
    )
    loop.add_argument(
        "--verification-budget",
        type=int,
        default=0,
        help="with --verification-band: answers in the band wait in the verification queue "
        "and agents verify this many queue entries per round (default 0: all of them at once)",
    )
    loop.add_argument(
        "--verification-order",
        choices=("margin", "arrival"),
        default="margin",
        help="the order agents work through the queue with --verification-budget: margin "
        "(the server's: smallest margin between the two best intents first, near-duplicates "
        "as one entry) or arrival (oldest first) (default: margin)",
    )
    loop.add_argument(
        "--threshold-only",
        action="store_true",
        help="route on confidence alone: ignore the server's handoff intents, always-human "
        "intents (report_fraud is one of CLINC150's banking intents) and per-intent thresholds",
    )
    model = parser.add_argument_group("model")
    model.add_argument(
        "--pipeline",
        choices=sorted(PIPELINES),
        default="default",
        help="default: the NLU pipeline of bot/config.yml; sentence-encoder: that of "
        "bot/config-sentence-encoder.yml (default: default)",
    )
    model.add_argument(
        "--epochs",
        type=int,
        help="DIET epochs (default: the pipeline config's, 60)",
    )
    output = parser.add_argument_group("output")
    output.add_argument("--no-baseline", action="store_true", help="skip the random baseline")
    output.add_argument("--no-ceiling", action="store_true", help="skip the all-data ceiling")
    output.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="folder for learning-curve-<pipeline>.json and .png (default benchmarks/results)",
    )
    output.add_argument("--keep-work", action="store_true", help="keep the models and YAML files")
    output.add_argument(
        "--verbose", action="store_true", help="show Rasa's output (default: <work>/rasa.log)"
    )
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.k < 1 or args.round_labels < 1 or (args.epochs is not None and args.epochs < 1):
        parser.error("--k, --round-labels and --epochs must be at least 1")
    if args.max_rounds < 0 or args.max_traffic < 0:
        parser.error("--max-rounds and --max-traffic must be 0 (no limit) or positive")
    if args.threshold is not None and not 0 <= args.threshold <= 1:
        parser.error("--threshold must be between 0 and 1")
    if args.target_precision is not None and not 0 < args.target_precision <= 1:
        parser.error("--target-precision must be above 0 and at most 1")
    if not 0 <= args.verification_band <= 1:
        parser.error("--verification-band must be between 0 and 1")
    if args.verification_budget < 0:
        parser.error("--verification-budget must be 0 (no limit) or positive")
    if args.verification_budget and not args.verification_band:
        parser.error("--verification-budget needs a --verification-band above 0")


def routing_policy(threshold_only: bool) -> tuple[HandoffPolicy, float | None, float]:
    """The policy ``handoff serve`` builds from the settings, their threshold override and
    target precision."""
    from handoff.settings import load_settings
    from handoff.web.app import handoff_policy

    settings = load_settings()
    if threshold_only:
        policy = HandoffPolicy(
            request_intents=frozenset(), always_human_intents=frozenset(), intent_thresholds={}
        )
        return policy, settings.fallback_threshold, settings.target_precision
    return handoff_policy(settings), settings.fallback_threshold, settings.target_precision


@dataclass
class Run:
    """Everything one learning-curve run needs, prepared by :func:`main`."""

    args: argparse.Namespace
    dataset: Dataset
    policy: HandoffPolicy
    config_path: Path
    initial: list[Utterance]
    stream: list[Utterance]
    work: Path
    log: Path | None
    clock: Clock
    results: dict[str, Any]
    target: Target

    def arm(self, name: str) -> Arm:
        return Arm(name, self.work / name, Exporter(self.dataset.intents))

    def train_and_evaluate(self, arm: Arm, label: str) -> tuple[dict[str, Any], Parser]:
        return arm.train_and_evaluate(
            self.config_path, self.dataset, self.policy, self.clock, label, self.log, self.target
        )

    def print_table(self) -> None:
        print(format_header(), flush=True)
        for row in self.results["rounds"]:
            print(format_row(row), flush=True)


def run_rounds(run: Run) -> None:
    """Round 0 on the initial labels, then stream traffic and retrain every R labels."""
    args, clock, rounds = run.args, run.clock, run.results["rounds"]
    hitl, baseline = run.arm("hitl"), run.arm("random")
    pool = random_pool(run.stream, args.seed)
    loop = Loop(
        run.policy,
        args.round_labels,
        initial_labels=len(run.initial),
        threshold=run.results["settings"]["threshold"],
        verification_band=args.verification_band,
        verification_budget=args.verification_budget,
        verification_order=args.verification_order,
    )

    clock.say("round 0: the initial labels")
    export = hitl.add(run.initial)
    baseline.add(run.initial)
    metrics, current = run.train_and_evaluate(hitl, "round-00")
    loop.threshold = metrics.get("served_threshold", loop.threshold)
    rounds.append(row_of(0, loop, metrics, dict(metrics), export, TrafficStats()))
    rounds[-1]["baseline_budget"] = 0
    run.print_table()
    position = 0
    while position < len(run.stream) and not (args.max_rounds and len(rounds) > args.max_rounds):
        loop.observe(run.stream[position], current.parse(run.stream[position].text))
        position += 1
        if position % 250 == 0:
            clock.say(
                f"  traffic {position}/{len(run.stream)}: {loop.traffic.handed_off} handed off "
                f"so far, {len(loop.pending)} labels waiting for the next export"
            )
        if not (loop.round_due() or (position == len(run.stream) and loop.pending)):
            continue
        number = len(rounds)
        labels, traffic = loop.take_labels()
        clock.say(
            f"round {number}: {len(labels)} agent labels from {traffic.messages} messages "
            f"({traffic.handed_off / traffic.messages:.0%} handed off; "
            f"{position}/{len(run.stream)} streamed)"
        )
        export = hitl.add(labels)
        current.close()
        metrics, current = run.train_and_evaluate(hitl, f"round-{number:02d}")
        loop.threshold = metrics.get("served_threshold", loop.threshold)
        random_metrics: dict[str, Any] | None = None
        if not args.no_baseline:
            baseline.add(pool[rounds[-1]["baseline_budget"] : loop.agent_labels])
            random_metrics, random_parser = run.train_and_evaluate(baseline, f"round-{number:02d}")
            random_parser.close()
        rounds.append(row_of(number, loop, metrics, random_metrics, export, traffic))
        run.print_table()
        write_results(run)
    current.close()


def run_ceiling(run: Run) -> None:
    run.clock.say("ceiling: every training utterance of these intents")
    ceiling = run.arm("ceiling")
    ceiling.add(run.dataset.train)
    metrics, parser = run.train_and_evaluate(ceiling, "ceiling")
    parser.close()
    metrics["labels_used"] = len(run.dataset.train)
    run.results["ceiling"] = metrics


def row_of(
    number: int,
    loop: Loop,
    metrics: dict[str, Any],
    random_metrics: dict[str, Any] | None,
    export: ExportResult,
    traffic: TrafficStats,
) -> dict[str, Any]:
    """One round's results (``hitl``: the handoff-labelled model; ``random``: the baseline)."""
    return {
        "round": number,
        "labels_used": loop.labels_used,
        "agent_labels": loop.agent_labels,
        "baseline_budget": loop.agent_labels,
        "training_examples": metrics["training_examples"],
        "train_s": metrics["train_s"],
        "export": {k: v for k, v in asdict(export).items() if k != "document"},
        "traffic": {"round": asdict(traffic), "total": asdict(loop.traffic)},
        "hitl": metrics,
        "random": random_metrics,
    }


def write_results(run: Run) -> None:
    """Write (or rewrite, after every round) the JSON and the plot."""
    run.args.out.mkdir(parents=True, exist_ok=True)
    stem = run.args.out / f"learning-curve-{run.args.pipeline}"
    stem.with_suffix(".json").write_text(json.dumps(run.results, indent=2) + "\n", "utf-8")
    plot(run.results, stem.with_suffix(".png"))
    run.clock.say(f"  wrote {stem}.json and .png")


def settings_summary(
    args: argparse.Namespace,
    dataset: Dataset,
    chosen: Sequence[str],
    config: Mapping[str, Any],
    policy: HandoffPolicy,
    traffic: int,
) -> dict[str, Any]:
    return {
        "dataset": {
            "name": f"{args.data.parent.name}/{args.data.name}",
            "path": str(args.data),
            "domains": list(chosen),
            "intents": list(dataset.intents),
            "train": len(dataset.train),
            "test_in_scope": len(dataset.test),
            "test_oos": len(dataset.oos_test),
        },
        "pipeline": args.pipeline,
        "config": dict(config),
        "k": args.k,
        "round_labels": args.round_labels,
        "seed": args.seed,
        "epochs": diet_epochs(config),
        "max_rounds": args.max_rounds,
        "traffic": traffic,
        "threshold": fallback_threshold(config),
        "target_precision": args.target_precision,
        "verification_band": args.verification_band,
        "verification_budget": args.verification_budget,
        "verification_order": args.verification_order,
        "policy": {
            "request_intents": sorted(policy.request_intents),
            "always_human_intents": sorted(policy.always_human_intents),
            "intent_thresholds": dict(policy.intent_thresholds),
            "fallbacks_before_handoff": policy.fallbacks_before_handoff,
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    clock = Clock()
    chosen = [name.strip() for name in args.domains.split(",") if name.strip()]
    try:
        dataset = load_dataset(
            args.data, args.domains_file or args.data.parent / "domains.json", chosen
        )
    except DataError as error:
        parser.error(str(error))
    clock.say("loading Rasa...")
    quiet_rasa()
    from handoff.settings import SettingsError

    try:
        policy, settings_threshold, target_precision = routing_policy(args.threshold_only)
    except SettingsError as error:
        parser.error(f"server settings: {error}")
    threshold = args.threshold if args.threshold is not None else settings_threshold
    if args.target_precision is None:
        args.target_precision = target_precision
    config = nlu_config(
        yaml.safe_load(PIPELINES[args.pipeline].read_text(encoding="utf-8")), args.epochs, threshold
    )
    initial, stream = initial_split(dataset.train, args.k, args.seed)
    if args.max_traffic:
        stream = stream[: args.max_traffic]
    work = Path(tempfile.mkdtemp(prefix="learning-curve-"))
    write_yaml(config, work / "config.yml")
    summary = settings_summary(args, dataset, chosen, config, policy, len(stream))
    run = Run(
        args=args,
        dataset=dataset,
        policy=policy,
        config_path=work / "config.yml",
        initial=initial,
        stream=stream,
        work=work,
        log=None if args.verbose else work / "rasa.log",
        clock=clock,
        results={"settings": summary, "rounds": [], "ceiling": None},
        target=Target(
            args.target_precision, ambiguity_threshold(config), calibrate=threshold is None
        ),
    )
    clock.say(
        f"{len(dataset.intents)} intents ({', '.join(chosen)}): {len(initial)} initial labels, "
        f"{len(stream)} messages of traffic, {len(dataset.test)} in-scope + "
        f"{len(dataset.oos_test)} out-of-scope test queries"
    )
    clock.say(
        f"pipeline {args.pipeline} (DIET {summary['epochs']} epochs); handoff below confidence "
        f"{summary['threshold']}; Rasa's output goes to {run.log or 'the terminal'}"
    )
    always = sorted(policy.always_human_intents & set(dataset.intents))
    if always:
        clock.say(
            f"note: the server always hands off {', '.join(always)} "
            "(HANDOFF_ALWAYS_HUMAN_INTENTS): never automated here either (--threshold-only: not)"
        )
    try:
        run_rounds(run)
        if not args.no_ceiling:
            run_ceiling(run)
        run.results["wall_s"] = round(time.perf_counter() - clock.started, 1)
        write_results(run)
        print_summary(run.results)
    finally:
        if args.keep_work:
            clock.say(f"models and training data kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def print_summary(results: Mapping[str, Any]) -> None:
    ceiling = results.get("ceiling")
    if ceiling:
        print(
            f"ceiling ({ceiling['training_examples']} examples): accuracy "
            f"{_cell(ceiling['accuracy'])}, automation {_cell(ceiling['automation_rate'])}, "
            f"precision {_cell(ceiling['automated_precision'])}, oos recall "
            f"{_cell(ceiling['oos_recall'])}; trained in {ceiling['train_s']:.0f} s"
        )
    print(f"total {results['wall_s'] / 60:.1f} min", flush=True)


if __name__ == "__main__":
    sys.exit(main())
