"""Rasa's structured logs at the operator's level (they print at DEBUG unless configured)."""

from __future__ import annotations

import logging

__all__ = ["configure_rasa_logging"]


def configure_rasa_logging(level: str) -> None:
    """Set Rasa's structlog output to ``level`` (a logging level name such as ``"INFO"``)."""
    from rasa.utils.log_utils import configure_structlog

    configure_structlog(logging.getLevelName(level))
