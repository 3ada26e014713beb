"""Start and stop a server process for a benchmark: ``handoff serve`` (own port, own SQLite
file) or any command that answers HTTP once ready (see :func:`serving_process`)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
START_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 30.0


class Server(NamedTuple):
    base: str
    """http://127.0.0.1:<port>"""
    workdir: Path
    """Its temporary folder (SQLite file, log); removed when the server stops cleanly."""
    pid: int


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


@contextmanager
def serving_process(
    command: Sequence[str],
    ready_url: str,
    workdir: Path,
    env: dict[str, str],
    name: str,
    cwd: Path | None = None,
) -> Iterator[int]:
    """Run ``command`` (in ``cwd``, default ours; output to ``workdir/server.log``) until
    ``ready_url`` answers 200; yield its pid; stop it afterwards (SIGTERM, then SIGKILL after
    30 s). The work folder is removed unless the server failed, so its log stays for reading."""
    started = time.perf_counter()
    log_path = workdir / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(command), cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    failed = True
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start; see {log_path}")
            try:
                with urllib.request.urlopen(ready_url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.5)
        print(f"{name} ready after {time.perf_counter() - started:.1f} s")
        yield process.pid
        failed = process.poll() is not None
    finally:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        if not failed:
            shutil.rmtree(workdir, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_server(
    port: int, model: Path, extra_env: dict[str, str] | None = None
) -> Iterator[Server]:
    """Yield a ``handoff serve`` :class:`Server` that answers; stop it afterwards."""
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            raise RuntimeError(f"port {port} is in use; pass another --port")
    workdir = Path(tempfile.mkdtemp(prefix="handoff-bench-"))
    env = {
        **os.environ,
        "HANDOFF_DATABASE_URL": f"sqlite:///{workdir / 'bench.db'}",
        "HANDOFF_LOG_LEVEL": "WARNING",
        **(extra_env or {}),
    }
    print(f"Starting a server on port {port} (loading the model takes about half a minute)...")
    base = f"http://127.0.0.1:{port}"
    command = [str(BIN / "handoff"), "serve", "--port", str(port), "--model", str(model)]
    with serving_process(command, f"{base}/health", workdir, env, "Server") as pid:
        yield Server(base, workdir, pid)
