"""Start and stop a server process for a benchmark: ``handoff serve`` (own port, own SQLite
file; ours or another checkout's, e.g. the previous main in a ``git worktree``) or any command
that answers HTTP once ready (see :func:`serving_process`)."""

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


__all__ = [
    "Server",
    "child_pids",
    "free_port",
    "rss_bytes",
    "rss_with_children",
    "running_server",
    "serving_process",
]


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


def child_pids(pid: int) -> list[int]:
    """The direct children of process ``pid`` (every thread's ``children`` list in /proc)."""
    children: set[int] = set()
    for listing in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            children.update(int(child) for child in listing.read_text().split())
        except OSError:  # the thread ended meanwhile
            continue
    return sorted(children)


def rss_with_children(pid: int) -> tuple[int, int]:
    """Resident memory of process ``pid`` and the sum over its descendants (the assistant
    workers of ``handoff serve``), in bytes. A child that exits while being read counts 0."""
    total = 0
    pending = child_pids(pid)
    while pending:
        child = pending.pop()
        try:
            total += rss_bytes(child)
            pending.extend(child_pids(child))
        except (OSError, RuntimeError):  # gone (or a zombie without VmRSS)
            continue
    return rss_bytes(pid), total


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
    port: int,
    model: Path,
    extra_env: dict[str, str] | None = None,
    checkout: Path | None = None,
) -> Iterator[Server]:
    """Yield a ``handoff serve`` :class:`Server` that answers; stop it afterwards.

    ``checkout``: run that checkout's server code instead of ours (``python -m
    handoff.cli.main`` with our venv's python, ``cwd`` and ``PYTHONPATH`` the checkout, so
    ``handoff`` is imported from there, not from our editable install)."""
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
    print(f"Starting a server on port {port} (loading the model takes 10 s to a minute)...")
    base = f"http://127.0.0.1:{port}"
    serve = ["serve", "--port", str(port), "--model", str(model)]
    command = [str(BIN / "handoff"), *serve]
    if checkout is not None:
        checkout = checkout.resolve()
        env["PYTHONPATH"] = os.pathsep.join(
            [str(checkout), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        command = [sys.executable, "-m", "handoff.cli.main", *serve]
        print(f"(the server of {checkout})")
    with serving_process(command, f"{base}/health", workdir, env, "Server", cwd=checkout) as pid:
        yield Server(base, workdir, pid)
