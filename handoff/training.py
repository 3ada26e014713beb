"""Training the bundled assistant, reusing a model whose training inputs have not changed."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from handoff.settings import PROJECT_ROOT

BOT_DIR = PROJECT_ROOT / "bot"
DATA_DIR = PROJECT_ROOT / "data"
DOMAIN_FILE = BOT_DIR / "domain.yml"
CONFIG_FILE = BOT_DIR / "config.yml"
MODEL_PREFIX = "assistant"
HASH_CHARS = 12


@dataclass(frozen=True)
class TrainedModel:
    path: Path
    training_hash: str
    reused: bool
    seconds: float


def training_inputs(bot_dir: Path = BOT_DIR, data_dir: Path = DATA_DIR) -> list[Path]:
    """Every file whose content shapes the model: bot config, domain, components, data."""
    files: Iterable[Path] = [
        *bot_dir.rglob("*.yml"),
        *bot_dir.rglob("*.py"),
        *data_dir.rglob("*.yml"),
        *data_dir.rglob("*.yaml"),
    ]
    return sorted({f for f in files if "__pycache__" not in f.parts})


def training_hash(files: Iterable[Path], root: Path = PROJECT_ROOT) -> str:
    """Hash of the files' paths and contents plus the Rasa version (hex)."""
    import rasa

    digest = hashlib.sha256(f"rasa={rasa.__version__}\n".encode())
    for path in sorted(files):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def model_file_for(models_dir: Path, hash_hex: str) -> Path:
    return models_dir / f"{MODEL_PREFIX}-{hash_hex[:HASH_CHARS]}.tar.gz"


def ensure_model(models_dir: Path, *, force: bool = False) -> TrainedModel:
    """Return a model trained on the current bot/ and data/, training one only if needed.

    A reused model's modification time is refreshed so that it counts as the newest one in
    ``models_dir`` (the server serves the newest). Rasa prints progress while training.
    """
    started = time.perf_counter()
    inputs = training_inputs()
    hash_hex = training_hash(inputs)
    target = model_file_for(models_dir, hash_hex)
    if target.exists() and not force:
        os.utime(target)
        return TrainedModel(target, hash_hex, reused=True, seconds=time.perf_counter() - started)

    from rasa.model_training import train

    models_dir.mkdir(parents=True, exist_ok=True)
    result = train(
        domain=str(DOMAIN_FILE),
        config=str(CONFIG_FILE),
        training_files=[str(DATA_DIR)],
        output=str(models_dir),
        fixed_model_name=target.name.removesuffix(".tar.gz"),
        force_training=True,
    )
    if result.code != 0 or not result.model:
        raise RuntimeError(f"Rasa training failed (exit code {result.code}); see the log above")
    return TrainedModel(
        Path(result.model), hash_hex, reused=False, seconds=time.perf_counter() - started
    )
