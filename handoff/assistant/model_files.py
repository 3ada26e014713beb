"""Which model archive to serve. No Rasa in it (the server process resolves it for workers)."""

from __future__ import annotations

from pathlib import Path

from handoff.core.errors import HandoffError

__all__ = ["MODEL_SUFFIX", "ModelNotFoundError", "resolve_model_path"]

MODEL_SUFFIX = ".tar.gz"


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
