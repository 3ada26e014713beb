"""What an operator sees from ``handoff``: our own lines and the warnings that matter.

Rasa, TensorFlow, sanic and their dependencies print pages of deprecation notices, colour codes
and progress bars. :func:`quiet_dependencies` runs before any of them is imported: it sets
their environment, routes Python warnings through logging with a filter, and turns Rasa's
progress bars off when the output is not a terminal (in a log file each bar update is a line
of its own). Warnings a person can act on, such as Rasa's remarks on the training data, still
reach the log, one line each.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from typing import TextIO

__all__ = [
    "NOT_ACTIONABLE_CATEGORIES",
    "NOT_ACTIONABLE_MESSAGES",
    "is_actionable",
    "quiet_dependencies",
    "quiet_library_loggers",
    "route_sanic_logs_to_root",
]

NOT_ACTIONABLE_CATEGORIES: tuple[type[Warning], ...] = (
    DeprecationWarning,
    PendingDeprecationWarning,
    FutureWarning,
    ImportWarning,
    ResourceWarning,
)
"""Warnings about dependencies' own code: nothing an operator of this server can change."""

NOT_ACTIONABLE_MESSAGES = (
    "Slot auto-fill has been removed",  # Rasa 3 says it for every slot, whatever its mappings
    "non-integer arguments to randrange",
)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")

logger = logging.getLogger("handoff.warnings")


def quiet_dependencies(project_root: str) -> None:
    """Environment and warning handling for Rasa and TensorFlow; call before importing them."""
    os.environ.setdefault("RASA_TELEMETRY_ENABLED", "false")  # no internet here
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("RASA_CACHE_DIRECTORY", os.path.join(project_root, ".rasa", "cache"))
    os.environ.setdefault("SQLALCHEMY_SILENCE_UBER_WARNING", "1")
    # Rasa's conversation lock tickets expire after this many seconds (Rasa: 60). A process
    # killed while holding one blocks that conversation's tracker until it expires.
    os.environ.setdefault("TICKET_LOCK_LIFETIME", "10")
    if not _is_terminal(sys.stderr):
        # Rasa draws its progress bars unless its LOG_LEVEL is WARNING or ERROR.
        os.environ.setdefault("LOG_LEVEL", "WARNING")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.showwarning = _show_warning


QUIET_LOGGERS = ("alembic.runtime.plugins",)
"""Loggers whose INFO lines describe the library's own set-up, not this server."""

_SET_UP_CHATTER = ("Context impl ", "Will assume ")
"""Alembic's INFO lines before every migration run; its "Running upgrade" lines stay."""


def quiet_library_loggers() -> None:
    """After logging is configured: drop libraries' set-up chatter, keep what they did."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("alembic.runtime.migration").addFilter(_drop_set_up_chatter)
    logging.getLogger("sanic.error").addFilter(_drop_connection_opened)


def _drop_connection_opened(record: logging.LogRecord) -> bool:
    """websockets logs "connection open" at INFO for every client, through sanic's error
    logger: a thousand lines for a thousand chats. Real errors on that logger still pass."""
    return not (record.levelno == logging.INFO and record.msg == "connection open")


SANIC_LOGGERS = ("sanic.root", "sanic.error", "sanic.access", "sanic.server")


def route_sanic_logs_to_root() -> None:
    """Send sanic's log lines through our handler only. Creating a sanic app with its defaults
    (Rasa's HTTP API does) installs sanic's own handlers, so every line would print twice."""
    for name in SANIC_LOGGERS:
        library_logger = logging.getLogger(name)
        for handler in list(library_logger.handlers):
            library_logger.removeHandler(handler)
        library_logger.propagate = True


def _drop_set_up_chatter(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(_SET_UP_CHATTER)


def is_actionable(category: type[Warning], message: str) -> bool:
    """Whether a warning is worth an operator's attention (see the constants above)."""
    if issubclass(category, NOT_ACTIONABLE_CATEGORIES):
        return False
    return not any(noise in message for noise in NOT_ACTIONABLE_MESSAGES)


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    text = _ANSI.sub("", str(message)).strip()
    if is_actionable(category, text):
        logger.warning("%s: %s", category.__name__, text)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
