"""Sign-in flood: how long ``/health`` waits while wrong passwords arrive at once.

Starts ``handoff serve`` with no model (sign-in needs none), creates one account, then sends
``--concurrent`` wrong-password sign-ins at once while another thread probes ``/health`` on a
kept-alive connection. Prints the probes' median and worst latency and the flood's duration.
``--tree`` runs another checkout of the project (e.g. a ``git worktree`` of the previous
main) with this virtualenv, so two versions are measured in turns in one run.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct-horse-battery"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_tree(tree: Path, concurrent: int) -> dict[str, float]:
    """One flood against a server started from ``tree``."""
    work = Path(tempfile.mkdtemp(prefix="sign-in-flood-"))
    not_a_model = work / "none.tar.gz"
    not_a_model.touch()
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "HANDOFF_DATABASE_URL": f"sqlite:///{work / 'handoff.db'}",
        "HANDOFF_SIGN_IN_USERNAME_FAILURES": "100000",  # measure the checks, not the lock-out
        "HANDOFF_SIGN_IN_ADDRESS_FAILURES": "100000",
        "HANDOFF_SIGN_IN_FORGET_SECONDS": "100000",
        "HANDOFF_SIGN_IN_MAX_LOCKOUT_SECONDS": "900",
    }
    command = [
        sys.executable,
        "-c",
        "import sys; from handoff.cli.main import main; sys.exit(main())",
    ]
    subprocess.run(
        [*command, "agents", "add", "flood", "--name", "Flood", "--password-stdin"],
        input=PASSWORD + "\n",
        env=env,
        cwd=tree,
        text=True,
        check=True,
        capture_output=True,
    )
    log = (work / "server.log").open("wb")
    server = subprocess.Popen(
        [*command, "serve", "--port", str(port), "--model", str(not_a_model)],
        env=env,
        cwd=tree,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(base + "/health", timeout=2)
            except urllib.error.HTTPError:
                break  # 503: up, model failed as intended
            except OSError:
                time.sleep(0.2)
        return flood(port, base, concurrent)
    finally:
        server.terminate()
        server.wait(timeout=20)


def flood(port: int, base: str, concurrent: int) -> dict[str, float]:
    probes: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while not stop.is_set():
            started = time.perf_counter()
            connection.request("GET", "/health")
            connection.getresponse().read()
            probes.append(time.perf_counter() - started)
            time.sleep(0.02)

    def wrong_sign_in(_: int) -> None:
        body = json.dumps({"username": "flood", "password": "wrong-password-123"}).encode()
        request = urllib.request.Request(
            base + "/api/login",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "Origin": base},
        )
        with contextlib.suppress(urllib.error.HTTPError):
            urllib.request.urlopen(request, timeout=60)

    prober = threading.Thread(target=probe)
    prober.start()
    time.sleep(0.3)
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrent) as pool:
        list(pool.map(wrong_sign_in, range(concurrent)))
    seconds = time.perf_counter() - started
    stop.set()
    prober.join()
    return {
        "flood_s": seconds,
        "health_median_ms": statistics.median(probes) * 1000,
        "health_max_ms": max(probes) * 1000,
        "probes": len(probes),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, action="append", help="checkout(s) to compare")
    parser.add_argument("--concurrent", type=int, default=20, help="wrong sign-ins at once")
    parser.add_argument("--rounds", type=int, default=2, help="turns per checkout")
    args = parser.parse_args()
    trees = args.tree or [ROOT]
    for round_ in range(1, args.rounds + 1):
        for tree in trees:
            print(f"round {round_}, {tree}: ...", flush=True)
            print(f"  {json.dumps(run_tree(tree, args.concurrent))}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
