"""How long users go without bot answers when the only assistant worker dies.

Starts ``handoff serve`` with one worker, then, --kills times: SIGKILL the worker, and send a
message over the REST channel every 0.2 s until one is answered by the bot; the time from the
kill to that answer is the gap (the server notices the death, starts a new worker, which
imports Rasa and loads the model). Prints each gap and the median.

    .venv/bin/python -m benchmarks.worker_restart            # about a minute with the default
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import statistics
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from benchmarks.reply_latency import REST_PATH
from benchmarks.server_process import ROOT, free_port, running_server

POLL_S = 0.2
GIVE_UP_S = 300.0


def health(base: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{base}/health", timeout=10) as response:
        body: dict[str, Any] = json.loads(response.read())
    return body


def answered(base: str, sender: str) -> bool:
    """One REST message; whether the bot answered it (not an error, not a handoff)."""
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        body = json.dumps({"sender": sender, "message": "thank you"})
        connection.request("POST", REST_PATH, body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        raw = response.read()
    except OSError:
        return False
    finally:
        connection.close()
    if response.status != 200:
        return False
    answers = json.loads(raw)
    return bool(answers) and not any((a.get("custom") or {}).get("handoff") for a in answers)


def gap_after_kill(base: str) -> float:
    """SIGKILL the worker; seconds until the bot answers again."""
    [pid] = health(base)["assistant"]["pids"]
    sender = uuid.uuid4().hex
    killed = time.perf_counter()
    os.kill(pid, signal.SIGKILL)
    while time.perf_counter() - killed < GIVE_UP_S:
        if answered(base, sender):
            return time.perf_counter() - killed
        time.sleep(POLL_S)
    raise RuntimeError(f"no bot answer {GIVE_UP_S:.0f} s after killing worker {pid}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.worker_restart", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--model", type=Path, default=ROOT / "models", help="model (or folder: newest)"
    )
    parser.add_argument("--kills", type=int, default=3, help="how many times (default 3)")
    args = parser.parse_args(argv)
    if args.kills < 1:
        parser.error("--kills must be at least 1")
    env = {"HANDOFF_ASSISTANT_WORKERS": "1"}
    with running_server(free_port(), args.model, env) as server:
        if not answered(server.base, uuid.uuid4().hex):
            print("the bot does not answer 'thank you'; is the model trained?", file=sys.stderr)
            return 1
        gaps = []
        for number in range(1, args.kills + 1):
            gaps.append(gap_after_kill(server.base))
            restarts = health(server.base)["assistant"]["restarts"]
            print(f"kill {number}: bot answers again after {gaps[-1]:.1f} s (restarts {restarts})")
        print(f"median gap: {statistics.median(gaps):.1f} s over {len(gaps)} kills")
    return 0


if __name__ == "__main__":
    sys.exit(main())
