"""Which model archive to serve. No Rasa in it (the server process resolves it for workers)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from handoff.core.errors import HandoffError

__all__ = [
    "MODEL_SUFFIX",
    "ModelNotFoundError",
    "operating_point_file",
    "read_operating_threshold",
    "resolve_model_path",
    "write_operating_point",
]

MODEL_SUFFIX = ".tar.gz"
OPERATING_POINT_SUFFIX = ".operating-point.json"

logger = logging.getLogger(__name__)


class ModelNotFoundError(HandoffError, FileNotFoundError):
    """No trained model where the settings point; the message says how to make one."""

    code = "model_not_found"


def resolve_model_path(model_path: Path) -> Path:
    """Return the model archive to serve: ``model_path`` itself, or the newest one inside it."""
    if model_path.is_file():
        return model_path
    if model_path.is_dir():
        archives = sorted(model_path.glob(f"*{MODEL_SUFFIX}"), key=lambda p: p.stat().st_mtime)
        if archives:
            return archives[-1]
    raise ModelNotFoundError(
        f"no trained model at {model_path}; train one with `handoff train` "
        "(or `make run`, which trains when needed), or set HANDOFF_MODEL_PATH"
    )


def operating_point_file(model_file: Path) -> Path:
    """Where the handoff threshold chosen for ``model_file`` is kept: beside it
    (``assistant-<hash>.operating-point.json``), so every process serving the model finds it."""
    return model_file.with_name(model_file.name.removesuffix(MODEL_SUFFIX) + OPERATING_POINT_SUFFIX)


def write_operating_point(model_file: Path, point: dict[str, Any]) -> Path:
    """Store ``point`` (with its ``threshold``) beside the model, atomically."""
    target = operating_point_file(model_file)
    temporary = target.with_name(target.name + ".tmp")
    temporary.write_text(json.dumps(point, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, target)
    return target


def read_operating_threshold(model_file: Path) -> float | None:
    """The threshold stored beside ``model_file`` by ``handoff train``; None when there is
    none (the model's own FallbackClassifier threshold applies) or it cannot be read."""
    path = operating_point_file(model_file)
    if not path.exists():
        return None
    try:
        threshold = json.loads(path.read_text(encoding="utf-8"))["threshold"]
        if isinstance(threshold, bool) or not isinstance(threshold, int | float):
            raise TypeError(f"threshold is {threshold!r}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold {threshold} is outside 0..1")
    except (OSError, ValueError, KeyError, TypeError) as error:
        logger.warning(
            "Ignoring %s (%s); the model's own threshold applies. Run `handoff train` again "
            "to rewrite it.",
            path,
            error,
        )
        return None
    return float(threshold)
