"""Running a Rasa component the way Rasa's graph runs it, in a subprocess: Rasa and TensorFlow
never load in the pytest process (see conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def run_rasa_script(script: str) -> dict[str, Any]:
    """Run ``script`` with this interpreter from ``/`` (so components import through the
    installed package, not the working folder); it must print one ``RESULT <json>`` line."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "RASA_TELEMETRY_ENABLED": "false"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path("/"),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    parsed: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
    return parsed
