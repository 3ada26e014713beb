"""What an operator reads in the server's log: our lines and the warnings that matter."""

from __future__ import annotations

import pytest

from handoff.operator_output import is_actionable
from tests.conftest import RunningServer


class PyparsingDeprecationWarning(DeprecationWarning):
    """Stands for the subclasses dependencies define (pyparsing, TensorFlow, ...)."""


@pytest.mark.parametrize(
    ("category", "message", "shown"),
    [
        (DeprecationWarning, "load_module() is deprecated", False),
        (PyparsingDeprecationWarning, "'parseString' deprecated", False),
        (FutureWarning, "the default will change", False),
        (UserWarning, "Slot auto-fill has been removed in 3.0 and replaced", False),
        (UserWarning, "Issue found in 'data/nlu.yml': intent 'x' has no examples", True),
        (RuntimeWarning, "coroutine was never awaited", True),
    ],
)
def test_only_actionable_warnings_are_shown(
    category: type[Warning], message: str, shown: bool
) -> None:
    assert is_actionable(category, message) is shown


@pytest.mark.slow
def test_the_server_log_holds_no_dependency_noise(server: RunningServer) -> None:
    log = server.log_path.read_text(errors="replace")
    assert "Ready: model" in log
    for noise in (
        "DeprecationWarning",
        "alembic.runtime.plugins",
        "Context impl",
        "\x1b[",  # colour codes
        "it/s]",  # progress bars
        "connection open",  # one line per websocket client
    ):
        assert noise not in log, noise
    assert log.count("Starting worker") == 1, "sanic's start line, once"
