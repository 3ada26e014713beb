"""``benchmarks.relay_load --floor``: the bare relay it measures ours against runs, speaks the
load generator's protocol and delivers every message once (a few seconds, real processes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.server_process import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_the_floor_server_relays_every_message_once_each_way(tmp_path: Path) -> None:
    results_file = tmp_path / "floor.json"
    run = subprocess.run(
        [
            sys.executable,
            *("-m", "benchmarks.relay_load", "--floor"),
            *("--levels", "4", "--agents", "2", "--duration", "2", "--stall", "2"),
            *("--search-steps", "0", "--port", str(free_port()), "--json", str(results_file)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    results = json.loads(results_file.read_text())
    (level,) = results["levels"]
    assert level["conversations"] == 4 and level["messages"] == 8
    assert (level["lost_to_agent"], level["lost_to_user"]) == (0, 0)
    assert (level["duplicated_to_agent"], level["duplicated_to_user"]) == (0, 0)
    assert results["checkout"] == "benchmarks.relay_floor"


def test_the_floor_takes_no_options_of_our_server() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.relay_load", "--floor", "--no-assistant"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "--floor runs no server of ours" in run.stderr
