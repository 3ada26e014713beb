"""The bundled assistant's training data: Rasa's validator, size, and a clean held-out set."""

from __future__ import annotations

import re
import subprocess
from collections import defaultdict
from pathlib import Path

import yaml

from tests.conftest import BIN_DIR, PROJECT_ROOT, TEST_ENV

DATA_DIR = PROJECT_ROOT / "data"
HELDOUT_FILE = PROJECT_ROOT / "tests" / "data" / "heldout_nlu.yml"
RASA_WARNING_LOG = re.compile(r"^\S+ \S+ WARNING ")
ANNOTATION = re.compile(r"\[([^\]]+)\](?:\([^)]*\)|\{[^}]*\})")


def plain(example: str) -> str:
    """An example without entity markup, lower-cased, spaces folded."""
    return " ".join(ANNOTATION.sub(r"\1", example).lower().split())


def examples_by_intent(files: list[Path]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = defaultdict(list)
    for path in files:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for block in document.get("nlu", []):
            if "intent" in block:
                lines = block["examples"].splitlines()
                found[block["intent"]] += [
                    ln.strip()[2:] for ln in lines if ln.strip().startswith("- ")
                ]
    return found


def test_rasa_data_validate_passes_without_warnings() -> None:
    result = subprocess.run(
        [
            str(BIN_DIR / "rasa"),
            "data",
            "validate",
            "--domain",
            "bot/domain",
            "--data",
            "data",
            "--config",
            "bot/config.yml",
            "--fail-on-warnings",
        ],
        cwd=PROJECT_ROOT,
        env=TEST_ENV,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    # Rasa reports data problems as WARNING log lines or UserWarnings; dependencies'
    # deprecation notices (TensorFlow, SQLAlchemy, setuptools) are not about our data.
    warnings = [
        line
        for line in output.splitlines()
        if RASA_WARNING_LOG.match(line) or "UserWarning" in line
    ]
    assert not warnings, "\n".join(warnings)


def test_enough_intents_with_enough_distinct_examples() -> None:
    training = examples_by_intent(sorted(DATA_DIR.rglob("*.yml")))
    assert len(training) >= 25
    for intent, examples in training.items():
        distinct = {plain(e) for e in examples}
        assert len(distinct) >= 12, f"{intent} has only {len(distinct)} distinct examples"
    for required in ("human_handoff", "out_of_scope", "greet"):
        assert required in training


def test_heldout_set_covers_every_intent_and_never_appears_in_training() -> None:
    training = examples_by_intent(sorted(DATA_DIR.rglob("*.yml")))
    heldout = examples_by_intent([HELDOUT_FILE])
    assert set(heldout) == set(training)
    training_texts = {plain(e) for examples in training.values() for e in examples}
    leaked = [e for examples in heldout.values() for e in examples if plain(e) in training_texts]
    assert not leaked, f"held-out examples also in training data: {leaked}"


def test_fallback_classifier_threshold_is_in_the_bot_config() -> None:
    config = yaml.safe_load((PROJECT_ROOT / "bot" / "config.yml").read_text(encoding="utf-8"))
    fallback = [c for c in config["pipeline"] if c["name"] == "FallbackClassifier"]
    assert len(fallback) == 1
    assert 0 < fallback[0]["threshold"] < 1
