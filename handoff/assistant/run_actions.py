"""``python -m handoff.assistant.run_actions ARGS``: rasa-sdk's action server (``python -m
rasa_sdk ARGS``, the same arguments) with the server's operator output: dependencies'
deprecation notices dropped (rasa-sdk's imports print them whatever ``PYTHONWARNINGS`` says),
warnings that matter kept. :mod:`handoff.assistant.action_server` starts it; run it by hand
as you would ``rasa run actions``.
"""

from __future__ import annotations

import runpy

from handoff.operator_output import quiet_dependencies
from handoff.settings import PROJECT_ROOT

__all__ = ["main"]


def main() -> None:
    quiet_dependencies(str(PROJECT_ROOT))
    runpy.run_module("rasa_sdk", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
