"""Training the assistant, reusing a model whose training inputs have not changed."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from handoff.settings import PROJECT_ROOT

__all__ = [
    "TrainedModel",
    "domain_dir",
    "ensure_model",
    "model_file_for",
    "training_hash",
    "training_inputs",
]

BOT_DIR = PROJECT_ROOT / "bot"
DATA_DIR = PROJECT_ROOT / "data"
MODEL_PREFIX = "assistant"
HASH_CHARS = 12


@dataclass(frozen=True)
class TrainedModel:
    path: Path
    training_hash: str
    reused: bool
    seconds: float


def domain_dir(bot_dir: Path) -> Path:
    """The domain folder: Rasa merges every domain file in it."""
    return bot_dir / "domain"


def training_inputs(bot_dir: Path = BOT_DIR, data_dir: Path = DATA_DIR) -> list[tuple[str, Path]]:
    """Every file whose content shapes the model (``config.yml``, the domain, custom
    components, the data), as (name relative to ``bot/`` or ``data/``, path) pairs."""
    bot_files = [
        bot_dir / "config.yml",
        *domain_dir(bot_dir).rglob("*.yml"),
        *bot_dir.rglob("*.py"),
    ]
    data_files = [*data_dir.rglob("*.yml"), *data_dir.rglob("*.yaml")]
    named = [(f"bot/{p.relative_to(bot_dir).as_posix()}", p) for p in bot_files] + [
        (f"data/{p.relative_to(data_dir).as_posix()}", p) for p in data_files
    ]
    return sorted({(name, path) for name, path in named if "__pycache__" not in path.parts})


def training_hash(files: Iterable[tuple[str, Path]]) -> str:
    """Hash of the files' names and contents plus the Rasa version (hex). Copies of ``bot/``
    and ``data/`` elsewhere hash the same."""
    import rasa

    digest = hashlib.sha256(f"rasa={rasa.__version__}\n".encode())
    for name, path in sorted(files):
        digest.update(name.encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def model_file_for(models_dir: Path, hash_hex: str) -> Path:
    return models_dir / f"{MODEL_PREFIX}-{hash_hex[:HASH_CHARS]}.tar.gz"


def ensure_model(
    models_dir: Path,
    *,
    bot_dir: Path = BOT_DIR,
    data_dir: Path = DATA_DIR,
    force: bool = False,
) -> TrainedModel:
    """Return a model trained on ``bot_dir`` and ``data_dir``, training one only if needed.

    A reused model's modification time is refreshed so that it counts as the newest one in
    ``models_dir``. Rasa prints progress while training.
    """
    started = time.perf_counter()
    hash_hex = training_hash(training_inputs(bot_dir, data_dir))
    target = model_file_for(models_dir, hash_hex)
    if target.exists() and not force:
        os.utime(target)
        return TrainedModel(target, hash_hex, reused=True, seconds=time.perf_counter() - started)

    from rasa.model_training import train

    models_dir.mkdir(parents=True, exist_ok=True)
    result = train(
        domain=str(domain_dir(bot_dir)),
        config=str(bot_dir / "config.yml"),
        training_files=[str(data_dir)],
        output=str(models_dir),
        fixed_model_name=target.name.removesuffix(".tar.gz"),
        force_training=True,
    )
    if result.code != 0 or not result.model:
        raise RuntimeError(f"Rasa training failed (exit code {result.code}); see the log above")
    return TrainedModel(
        Path(result.model), hash_hex, reused=False, seconds=time.perf_counter() - started
    )
