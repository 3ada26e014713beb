"""Training the assistant, reusing a model whose training inputs have not changed."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from handoff.settings import PROJECT_ROOT

__all__ = [
    "TrainedModel",
    "domain_files",
    "domain_path",
    "ensure_model",
    "learned_domain_file",
    "model_file_for",
    "training_domain",
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


NOT_MODEL_CODE = frozenset({"actions", "tests", "models", "data", "results", "venv"})
"""Folders of a project whose Python files do not shape the model (custom actions run on the
action server; custom components live anywhere else)."""


def domain_path(bot_dir: Path) -> Path:
    """The project's domain: its ``domain/`` folder (Rasa merges every domain file in it),
    else its ``domain.yml``."""
    folder = bot_dir / "domain"
    single = bot_dir / "domain.yml"
    return single if not folder.is_dir() and single.is_file() else folder


def learned_domain_file(bot_dir: Path) -> Path:
    """Where ``handoff export`` writes learned intents and responses: ``domain/learned.yml``,
    or ``domain.learned.yml`` beside a single ``domain.yml``."""
    domain = domain_path(bot_dir)
    return domain / "learned.yml" if domain.name == "domain" else bot_dir / "domain.learned.yml"


def domain_files(bot_dir: Path) -> list[tuple[str, Path]]:
    """The domain's files as (name inside a domain folder, path): a folder's files, or a
    single ``domain.yml`` and its learned additions (when there are any)."""
    domain = domain_path(bot_dir)
    if domain.name == "domain":
        files = [*domain.rglob("*.yml"), *domain.rglob("*.yaml")]
        return sorted((p.relative_to(domain).as_posix(), p) for p in files)
    learned = learned_domain_file(bot_dir)
    return [("domain.yml", domain)] + ([("learned.yml", learned)] if learned.exists() else [])


@contextmanager
def training_domain(bot_dir: Path) -> Iterator[Path]:
    """The one domain path to give Rasa: the folder or file itself, or a temporary folder
    holding a single ``domain.yml`` and its learned additions (Rasa reads one path)."""
    files = domain_files(bot_dir)
    if domain_path(bot_dir).name == "domain" or len(files) == 1:
        yield domain_path(bot_dir)
        return
    with tempfile.TemporaryDirectory(prefix="handoff-domain-") as scratch:
        for name, path in files:
            shutil.copyfile(path, Path(scratch) / name)
        yield Path(scratch)


def _model_code(bot_dir: Path) -> list[Path]:
    """Python files of ``bot_dir`` that may shape the model (custom components)."""
    found = []
    for path in bot_dir.rglob("*.py"):
        parts = path.relative_to(bot_dir).parts[:-1]
        if any(part in NOT_MODEL_CODE or part.startswith((".", "__")) for part in parts):
            continue
        found.append(path)
    return found


def training_inputs(bot_dir: Path = BOT_DIR, data_dir: Path = DATA_DIR) -> list[tuple[str, Path]]:
    """Every file whose content shapes the model (``config.yml``, the domain, custom
    components, the data), as (name relative to ``bot/`` or ``data/``, path) pairs."""
    bot_files = [
        bot_dir / "config.yml",
        *(path for _, path in domain_files(bot_dir)),
        *_model_code(bot_dir),
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
    with training_domain(bot_dir) as domain:
        result = train(
            domain=str(domain),
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
