"""Reading a Rasa project's training data and domain, and predicting intents with a model
file: what the learning loop needs from Rasa, behind plain types."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from handoff.assistant.training import domain_dir

__all__ = ["TrainingData", "heldout_examples", "predict_intents", "read_training_data"]


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
    domain = Domain.load(str(domain_dir(bot_dir)))
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


async def predict_intents(model_file: Path, texts: list[str], threshold: float | None) -> list[str]:
    """Load ``model_file`` (tens of seconds) and predict the intent of each of ``texts``, with
    the fallback threshold set to ``threshold`` (the model's own when ``None``)."""
    from rasa.core.agent import Agent

    from handoff.assistant.rasa_assistant import apply_fallback_threshold

    agent = await asyncio.to_thread(Agent.load, str(model_file))
    apply_fallback_threshold(agent, threshold)
    predictions = []
    for text in texts:
        parsed = await agent.parse_message(text)
        predictions.append(str((parsed.get("intent") or {}).get("name")))
    return predictions
