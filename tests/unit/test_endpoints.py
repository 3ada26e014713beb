"""Rasa's endpoints.yml: read with Rasa's reader, refused with a reason when it cannot be
honoured (no server, no model)."""

from __future__ import annotations

from pathlib import Path

import pytest

# What handoff.assistant.endpoints imports of Rasa when it reads a file: Rasa's own imports
# warn (deprecated APIs of its dependencies), so they happen here, at collection.
import rasa.core.brokers.broker
import rasa.core.tracker_store
import rasa.shared.utils.io
import rasa.utils.endpoints  # noqa: F401

from handoff.assistant.action_server import plan_action_server
from handoff.assistant.endpoints import (
    EndpointsError,
    RasaEndpoints,
    check_agreement,
    read_endpoints,
)

TRACKERS = "sqlite:////srv/handoff/handoff-rasa.db"

# Reading a YAML file, Rasa checks it against its schema with pykwalify, which loads through
# pkg_resources: deprecation notices of Rasa's dependencies, not of ours.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def endpoints_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "endpoints.yml"
    path.write_text(text, encoding="utf-8")
    return path


def test_no_file_means_no_endpoints(tmp_path: Path) -> None:
    assert read_endpoints(None) == RasaEndpoints(None)
    assert read_endpoints(tmp_path / "endpoints.yml") == RasaEndpoints(None)


def test_sections_are_read_with_environment_variables_as_rasa_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACTIONS_PORT", "5123")
    path = endpoints_file(
        tmp_path,
        "action_endpoint:\n  url: http://127.0.0.1:${ACTIONS_PORT}/webhook\n"
        "nlg:\n  url: http://nlg.example:6001/nlg\n"
        f"event_broker:\n  type: sql\n  dialect: sqlite\n  db: {tmp_path / 'events.db'}\n"
        "lock_store:\n  type: in_memory\n",
    )
    endpoints = read_endpoints(path)
    assert endpoints.action_url == "http://127.0.0.1:5123/webhook"
    assert endpoints.nlg.url == "http://nlg.example:6001/nlg"
    assert endpoints.event_broker.type == "sql"
    assert endpoints.describe() == [
        "response generation (nlg): http://nlg.example:6001/nlg",
        "event broker: sql",
    ]
    check_agreement(endpoints, tracker_database_url=TRACKERS, redis_url=None)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("action_endpoint:\n  url: [http://x\n", "cannot be read"),
        ("- just\n- a list\n", "cannot be read"),
        ("action_endpoint:\n  url: http://127.0.0.1:${NOT_SET_ANYWHERE}/webhook\n", "NOT_SET"),
        ('action_endpoint:\n  url: "http://127.0.0.1:${HOME}/webhook"\n', "without quotes"),
        ("action_enpoint:\n  url: http://127.0.0.1:5055/webhook\n", "unknown section"),
        ("models:\n  url: http://models.example/model.tar.gz\n", "loads and swaps models"),
        ("nlu:\n  url: http://nlu.example/parse\n", "model's own NLU"),
        ("action_endpoint: http://127.0.0.1:5055/webhook\n", "must be a mapping"),
        ("action_endpoint:\n  url: 127.0.0.1:5055\n", "needs an http(s) url"),
        ("event_broker:\n  type: carrier pigeon\n", "unknown event_broker type"),
        ("event_broker:\n  type: nowhere.brokers.Pigeon\n", "cannot be imported"),
        ("event_broker:\n  type: pathlib.Path\n", "is not an EventBroker"),
    ],
)
def test_what_cannot_be_honoured_is_refused_with_the_fix(
    tmp_path: Path, text: str, fragment: str
) -> None:
    with pytest.raises(EndpointsError, match=r"endpoints\.yml") as refused:
        read_endpoints(endpoints_file(tmp_path, text))
    assert fragment in str(refused.value)
    assert refused.value.code == "invalid_endpoints"


@pytest.mark.parametrize(
    ("text", "redis_url", "fragment"),
    [
        ("tracker_store:\n  type: redis\n  url: localhost\n", None, "keeps Rasa's trackers"),
        ("tracker_store:\n  type: sql\n  db: /other/rasa.db\n", None, "keeps Rasa's trackers"),
        ("lock_store:\n  type: redis\n  url: localhost\n", None, "set HANDOFF_REDIS_URL"),
        ("lock_store:\n  type: in_memory\n", "redis://127.0.0.1:6379/0", "Redis lock store"),
        ("lock_store:\n  type: redis\n  url: localhost\n  db: 3\n", "redis://localhost/0", "same"),
        ("event_broker:\n  type: sql\n  db: /srv/handoff/handoff-rasa.db\n", None, "of its own"),
    ],
)
def test_stores_that_disagree_with_the_server_are_refused(
    tmp_path: Path, text: str, redis_url: str | None, fragment: str
) -> None:
    endpoints = read_endpoints(endpoints_file(tmp_path, text))
    with pytest.raises(EndpointsError) as refused:
        check_agreement(endpoints, tracker_database_url=TRACKERS, redis_url=redis_url)
    assert fragment in str(refused.value)


def test_stores_that_agree_with_the_server_are_accepted(tmp_path: Path) -> None:
    text = (
        "tracker_store:\n  type: SQL\n  dialect: sqlite\n  db: /srv/handoff/handoff-rasa.db\n"
        "lock_store:\n  type: redis\n  url: 127.0.0.1\n  port: 6379\n  db: 2\n"
    )
    endpoints = read_endpoints(endpoints_file(tmp_path, text))
    check_agreement(endpoints, tracker_database_url=TRACKERS, redis_url="redis://localhost/2")


def test_the_action_server_runs_here_only_for_a_local_endpoint_with_actions(
    tmp_path: Path,
) -> None:
    bot = tmp_path / "bot"
    (bot / "actions").mkdir(parents=True)
    (bot / "actions" / "__init__.py").write_text("")
    local = "http://127.0.0.1:5123/webhook"

    plan, why = plan_action_server(local, bot, "auto")
    assert plan is not None and (plan.folder, plan.module, plan.port) == (bot, "actions", 5123)
    assert plan.command()[1:] == [
        *("-m", "handoff.assistant.run_actions"),
        *("--actions", "actions", "--port", "5123"),
    ]
    assert "started from" in why
    assert plan_action_server(local, bot, "off")[0] is None
    assert plan_action_server("http://actions.internal:5055/webhook", bot, "auto")[0] is None
    assert plan_action_server("http://localhost/webhook", bot, "auto")[0] is None  # no port
    empty = tmp_path / "empty"
    empty.mkdir()
    assert plan_action_server(local, empty, "auto") == (
        None,
        f"custom actions at {local}, but {empty} has no actions/ package or actions.py to "
        "start there: run your action server yourself",
    )
    assert "will fail" in plan_action_server(None, bot, "auto")[1]
