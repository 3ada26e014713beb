"""Reading a Rasa project's training data and domain, and predicting intents with a model
file: what the learning loop needs from Rasa, behind plain types."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from handoff.assistant.training import domain_files

__all__ = ["Ranked", "TrainingData", "heldout_examples", "predict_rankings", "read_training_data"]


@dataclass(frozen=True)
class TrainingData:
    """The NLU examples (text, intent) of a data folder and the domain's intents and responses."""

    examples: list[tuple[str, str]]
    intents: frozenset[str]
    responses: frozenset[str]


def read_training_data(data_dir: Path, bot_dir: Path) -> TrainingData:
    """The training data under ``data_dir`` and the domain of ``bot_dir``, as on disk
    (blocking: a second or so; run it in a thread from async code)."""
    from rasa.shared.core.domain import Domain
    from rasa.shared.data import get_data_files, is_nlu_file
    from rasa.shared.importers.utils import training_data_from_paths

    nlu_files = get_data_files([str(data_dir)], is_nlu_file)
    training = training_data_from_paths(nlu_files, language="en")
    domain = Domain.load([str(path) for _, path in domain_files(bot_dir)])
    return TrainingData(
        examples=[(m.get("text"), m.get("intent")) for m in training.intent_examples],
        intents=frozenset(domain.intents),
        responses=frozenset(domain.responses),
    )


def heldout_examples(path: Path) -> list[tuple[str, str]]:
    """(text, intent) pairs of a Rasa NLU file."""
    from rasa.shared.nlu.training_data.loading import load_data

    if not path.exists():
        raise FileNotFoundError(
            f"held-out test set {path} does not exist; set HANDOFF_TEST_DATA to a Rasa NLU file"
        )
    data = load_data(str(path))
    return [(m.get("text"), m.get("intent")) for m in data.intent_examples]


@dataclass(frozen=True)
class Ranked:
    """The classifier's verdict on one text, before any fallback."""

    intent: str
    confidence: float
    runner_up: float | None
    """The second intent's confidence (None when there is no second intent)."""


async def predict_rankings(model_file: Path, texts: list[str]) -> tuple[list[Ranked], float]:
    """Load ``model_file`` (seconds to tens of seconds) with its FallbackClassifier switched
    off; return the classifier's verdict on each of ``texts`` and the model's ambiguity
    threshold (0 when the model has no FallbackClassifier)."""
    from rasa.core.agent import Agent

    from handoff.assistant.rasa_assistant import disable_fallback

    agent = await asyncio.to_thread(Agent.load, str(model_file))
    ambiguity = disable_fallback(agent)
    verdicts = []
    for text in texts:
        parsed = await agent.parse_message(text)
        ranking = parsed.get("intent_ranking") or [parsed.get("intent") or {}]
        verdicts.append(
            Ranked(
                str(ranking[0].get("name")),
                float(ranking[0].get("confidence") or 0.0),
                float(ranking[1].get("confidence") or 0.0) if len(ranking) > 1 else None,
            )
        )
    return verdicts, ambiguity
