"""Start and stop a plain ``rasa run`` REST server for a benchmark (free port, own work folder).

The comparison point for ``handoff serve``: the same model behind Rasa's own REST channel
(``POST /webhooks/rest/webhook``), no HTTP API (no ``--enable-api``), logging at WARNING like
the benchmark's ``handoff serve``. Trackers go to a SQLite file by default, as ours do.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from benchmarks.server_process import free_port, serving_process

BIN = Path(sys.executable).parent
BOT_ENDPOINTS = Path(__file__).resolve().parent.parent / "bot" / "endpoints.yml"
TRACKER_STORES = ("sqlite", "memory")


def newest_model(path: Path) -> Path:
    """``path`` itself if it is a file, else the newest ``*.tar.gz`` in it (as ``handoff
    serve`` and ``rasa run`` choose)."""
    if path.is_file():
        return path
    archives = sorted(path.glob("*.tar.gz"), key=lambda p: p.stat().st_mtime)
    if not archives:
        raise FileNotFoundError(f"no model archive in {path}; train one with `handoff train`")
    return archives[-1]


def endpoints_yaml(tracker_store: str, workdir: Path) -> str:
    """The endpoints file: a SQLite tracker store in ``workdir``, or Rasa's in-memory one, and
    the bundled bot's action server (the one ``handoff serve`` runs), so both servers run the
    same custom actions."""
    actions = yaml.safe_load(BOT_ENDPOINTS.read_text(encoding="utf-8"))["action_endpoint"]
    action = f"action_endpoint:\n  url: {actions['url']}\n"
    if tracker_store == "memory":
        return f"# Rasa's default in-memory tracker store\n{action}"
    return (
        f"tracker_store:\n  type: SQL\n  dialect: sqlite\n  db: {workdir / 'rasa-trackers.db'}\n"
        + action
    )


@contextmanager
def running_rasa(model: Path, tracker_store: str = "sqlite") -> Iterator[str]:
    """Yield the base URL of a ``rasa run`` serving ``model`` over REST; stop it afterwards."""
    if tracker_store not in TRACKER_STORES:
        raise ValueError(f"tracker_store must be one of {TRACKER_STORES}")
    workdir = Path(tempfile.mkdtemp(prefix="rasa-bench-"))
    (workdir / "credentials.yml").write_text("rest:\n")
    (workdir / "endpoints.yml").write_text(endpoints_yaml(tracker_store, workdir))
    port = free_port()
    env = {
        **os.environ,
        "RASA_TELEMETRY_ENABLED": "false",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "SQLALCHEMY_SILENCE_UBER_WARNING": "1",
    }
    command = [
        str(BIN / "rasa"),
        "run",
        "--model",
        str(model),
        "--interface",
        "127.0.0.1",
        "--port",
        str(port),
        "--credentials",
        str(workdir / "credentials.yml"),
        "--endpoints",
        str(workdir / "endpoints.yml"),
        "--quiet",
    ]
    print(
        f"Starting `rasa run` on port {port} ({tracker_store} tracker store; loading the model)..."
    )
    base = f"http://127.0.0.1:{port}"
    with serving_process(command, f"{base}/webhooks/rest/", workdir, env, "rasa run", cwd=workdir):
        yield base
