"""Server settings that change behaviour: Rasa's HTTP API (opt-in, with the model in the server
process), the fallback threshold (reaching the worker processes), and refused combinations."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import (
    HANDOFF,
    RASA_API_TOKEN,
    TEST_ENV,
    RunningServer,
    http_json,
    start_server,
    stop_server,
)

pytestmark = pytest.mark.slow

STRICT_THRESHOLD = 0.995
PROBE = "card"
"""A one-word message the bot understands, but not with near-certainty."""


@pytest.fixture(scope="module")
def rasa_api_server(
    trained_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """The model in the server process (no workers), as Rasa's HTTP API needs; its token set."""
    running = start_server(
        trained_model,
        tmp_path_factory.mktemp("rasa-api"),
        extra_env={"HANDOFF_RASA_API_TOKEN": RASA_API_TOKEN, "HANDOFF_ASSISTANT_WORKERS": "0"},
    )
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def strict_server(
    trained_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """A server on the same model with its worker process: no Rasa API token, a very high
    fallback threshold."""
    running = start_server(
        trained_model,
        tmp_path_factory.mktemp("strict"),
        extra_env={"HANDOFF_FALLBACK_THRESHOLD": str(STRICT_THRESHOLD)},
    )
    yield running
    stop_server(running)


def test_rasa_http_api_requires_the_token(rasa_api_server: RunningServer) -> None:
    server = rasa_api_server
    assert http_json("GET", f"{server.base_url}/health")[1]["assistant"] == {"workers": 0}
    status, body = http_json("GET", f"{server.base_url}/status?token={RASA_API_TOKEN}")
    assert status == 200
    assert body["model_file"].endswith(".tar.gz")
    assert http_json("GET", f"{server.base_url}/status")[0] == 401
    assert http_json("GET", f"{server.base_url}/status?token=wrong")[0] == 401


def test_rasa_http_api_never_mounts_model_loading_or_training(
    rasa_api_server: RunningServer,
) -> None:
    server = rasa_api_server
    token = f"?token={RASA_API_TOKEN}"
    body = json.dumps({"model_file": "/tmp/evil.tar.gz"}).encode()
    assert http_json("PUT", f"{server.base_url}/model{token}", body)[0] in (404, 405)
    assert http_json("DELETE", f"{server.base_url}/model{token}")[0] in (404, 405)
    assert http_json("POST", f"{server.base_url}/model/train{token}", b"{}")[0] in (404, 405)


def test_rasa_http_api_is_off_by_default(strict_server: RunningServer) -> None:
    assert http_json("GET", f"{strict_server.base_url}/status?token={RASA_API_TOKEN}")[0] == 404


def test_fallback_threshold_setting_overrides_the_trained_one(
    rasa_api_server: RunningServer, strict_server: RunningServer
) -> None:
    server = rasa_api_server
    status, parsed = http_json(
        "POST",
        f"{server.base_url}/model/parse?token={RASA_API_TOKEN}",
        json.dumps({"text": PROBE}).encode(),
    )
    assert status == 200
    confidence = parsed["intent_ranking"][0]["confidence"]
    trained_threshold = http_json("GET", f"{server.base_url}/health")[1]["fallback_threshold"]
    assert trained_threshold <= confidence < STRICT_THRESHOLD, (
        f"probe {PROBE!r} has confidence {confidence}; pick another probe message"
    )
    assert parsed["intent"]["name"] != "nlu_fallback"

    health = http_json("GET", f"{strict_server.base_url}/health")[1]
    assert health["fallback_threshold"] == STRICT_THRESHOLD
    status, replies = http_json(
        "POST",
        f"{strict_server.base_url}/webhooks/rest/webhook",
        json.dumps({"sender": "strict-1", "message": PROBE}).encode(),
    )
    assert status == 200
    # Below the threshold the FallbackClassifier predicts nlu_fallback: the user is handed off.
    assert replies[0]["custom"] == {"handoff": "queued"}, replies


def test_serve_without_a_model_says_how_to_make_one(tmp_path: Path) -> None:
    result = subprocess.run(
        [HANDOFF, "serve", "--model", str(tmp_path / "empty")],
        env=TEST_ENV,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert "handoff train" in result.stderr


def test_serve_with_a_bad_setting_names_it() -> None:
    result = subprocess.run(
        [HANDOFF, "serve"],
        env={**TEST_ENV, "HANDOFF_PORT": "eighty"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "HANDOFF_PORT" in result.stderr


def test_serve_refuses_rasa_http_api_with_worker_processes() -> None:
    result = subprocess.run(
        [HANDOFF, "serve"],
        env={**TEST_ENV, "HANDOFF_RASA_API_TOKEN": "t", "HANDOFF_ASSISTANT_WORKERS": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "HANDOFF_ASSISTANT_WORKERS=0" in result.stderr
