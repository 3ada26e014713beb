"""Start and stop a ``handoff serve`` process for a benchmark (own port, own SQLite file)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@contextmanager
def running_server(
    port: int, model: Path, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[str, Path]]:
    """Yield (base URL, work folder) of a server that answers; stop it afterwards."""
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
    started = time.perf_counter()
    with (workdir / "server.log").open("wb") as log:
        process = subprocess.Popen(
            [str(BIN / "handoff"), "serve", "--port", str(port), "--model", str(model)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start; see {workdir / 'server.log'}")
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.5)
        print(f"Server ready after {time.perf_counter() - started:.1f} s")
        yield base, workdir
    finally:
        process.terminate()
        process.wait(timeout=30)
