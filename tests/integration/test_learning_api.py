"""Batch verification and review over the real server: uncertain answers and thumbs-down
are queued, agents confirm or correct them in bulk, corrections become candidates that
maintainers review; bad input is refused without changing anything."""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import (
    HANDOFF,
    PASSWORD,
    TEST_ENV,
    RunningServer,
    add_agent,
    connect_user,
    http_json,
    login,
    start_server,
    stop_server,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(trained_model: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server that queues every bot answer below 100% confidence for verification."""
    running = start_server(
        trained_model,
        tmp_path_factory.mktemp("verification"),
        extra_env={"HANDOFF_VERIFICATION_BAND": "1.0"},
    )
    add_agent(running, "vera", "Vera")
    add_agent(running, "mia", "Mia", role="maintainer")
    yield running
    stop_server(running)


def call(
    server: RunningServer, method: str, path: str, user: str, body: Any = None
) -> tuple[int, Any]:
    token = login(server, user, PASSWORD)
    return http_json(
        method,
        f"{server.base_url}{path}",
        json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Origin": server.base_url},
    )


def pending(server: RunningServer, conversation_id: str) -> list[dict[str, Any]]:
    status, body = call(server, "GET", "/api/verifications", "vera")
    assert status == 200, body
    return [v for v in body["verifications"] if v["conversation_id"] == conversation_id]


async def test_uncertain_and_unhelpful_answers_are_verified_in_bulk_and_become_candidates(
    server: RunningServer,
) -> None:
    user = await connect_user(server)
    assert await user.bot_texts("hello there")
    hello_id = uuid.uuid4().hex
    await user.send({"type": "message", "id": hello_id, "text": "what are your opening hours"})
    await user.expect("ack", id=hello_id)
    await user.expect("bot", in_reply_to=hello_id)
    queued = pending(server, user.conversation_id)
    assert [v["reason"] for v in queued] == ["uncertain", "uncertain"]

    # Thumbs-down on the second answer: the same item, now marked unhelpful.
    await user.send({"type": "feedback", "id": "f1", "in_reply_to": hello_id, "helpful": False})
    assert (await user.expect("ack", id="f1"))["queued"] is True
    await user.send({"type": "feedback", "id": "f2", "in_reply_to": "no-such-id", "helpful": False})
    assert (await user.expect("ack", id="f2"))["queued"] is False
    await user.send({"type": "feedback", "id": "f3", "in_reply_to": hello_id, "helpful": True})
    assert (await user.expect("error", id="f3"))["code"] == "invalid_field"
    assert await user.bot_texts("thanks")  # the connection is still usable
    queued = pending(server, user.conversation_id)
    hours = queued[0]  # unhelpful answers come first
    assert hours["reason"] == "unhelpful" and hours["text"] == "what are your opening hours"
    by_text = {v["text"]: v for v in queued}
    greeting, thanks = by_text["hello there"], by_text["thanks"]

    # Bad decisions change nothing.
    bad_bodies: list[dict[str, Any]] = [
        {"decisions": []},
        {"decisions": [{"id": hours["id"], "action": "correct"}]},
        {"decisions": [{"id": hours["id"], "action": "correct", "intent": "Bad Name"}]},
        {"decisions": [{"id": "7", "action": "confirm"}]},
        {"nothing": True},
    ]
    for body in bad_bodies:
        status, answer = call(server, "POST", "/api/verifications", "vera", body)
        assert status == 400, answer
    status, answer = call(
        server,
        "POST",
        "/api/verifications",
        "vera",
        {
            "decisions": [
                {"id": greeting["id"], "action": "confirm"},
                {"id": 999999, "action": "dismiss"},
            ]
        },
    )
    assert status == 409, answer
    assert len(pending(server, user.conversation_id)) == 3  # all or nothing

    # In bulk: confirm the greeting, correct the hours question, dismiss the thanks.
    decisions = [
        {"id": greeting["id"], "action": "confirm"},
        {"id": hours["id"], "action": "correct", "intent": "support_hours"},
        {"id": thanks["id"], "action": "dismiss"},
    ]
    status, answer = call(server, "POST", "/api/verifications", "vera", {"decisions": decisions})
    assert status == 200, answer
    assert len(answer["candidates"]) == 2
    assert pending(server, user.conversation_id) == []

    # Maintainers see them in review; agents may not review.
    assert call(server, "GET", "/api/review", "vera")[0] == 403
    status, review = call(server, "GET", "/api/review", "mia")
    assert status == 200, review
    by_intent = {g["intent"]: g for g in review["groups"]}
    hours_item = by_intent["support_hours"]["examples"][0]
    assert hours_item["text"] == "what are your opening hours"
    assert hours_item["conversation_id"] == user.conversation_id

    status, answer = call(
        server,
        "POST",
        "/api/review",
        "mia",
        {"decisions": [{"id": hours_item["id"], "action": "edit"}]},
    )
    assert status == 400, answer
    status, answer = call(
        server,
        "POST",
        "/api/review",
        "mia",
        {"decisions": [{"id": hours_item["id"], "action": "edit", "text": "when are you open"}]},
    )
    assert status == 200 and answer["candidates"][0]["status"] == "approved", answer
    status, answer = call(
        server, "POST", "/api/review", "mia", {"decisions": [{"id": 424242, "action": "reject"}]}
    )
    assert status == 409, answer
    await user.close()


async def test_the_queue_puts_what_teaches_most_first_and_collapses_near_duplicates(
    server: RunningServer,
) -> None:
    user = await connect_user(server)
    texts = ["hi", "Hello there!", "hello there", "what are your opening hours", "thank you"]
    for text in texts:
        assert await user.bot_texts(text)
    queued = pending(server, user.conversation_id)
    await user.close()

    # The two spellings of "hello there" are one entry; nothing is lost.
    assert sorted(
        [v["text"] for v in queued] + [d["text"] for v in queued for d in v["duplicates"]]
    ) == sorted(texts)
    [hello] = [v for v in queued if v["text"].casefold().startswith("hello there")]
    assert len(hello["duplicates"]) == 1
    assert hello["duplicates"][0]["predicted_intent"] == hello["predicted_intent"]
    # Smallest margin between the bot's two best intents first; margins are real differences.
    margins = [v["margin"] for v in queued]
    assert margins == sorted(margins)
    assert all(0 <= v["margin"] <= v["confidence"] for v in queued)

    # One decision for the entry and its duplicate clears both (as the console sends it).
    ids = [hello["id"], *(d["id"] for d in hello["duplicates"])]
    decisions = [{"id": i, "action": "confirm"} for i in ids]
    status, answer = call(server, "POST", "/api/verifications", "vera", {"decisions": decisions})
    assert status == 200, answer
    assert not {v["id"] for v in pending(server, user.conversation_id)} & set(ids)


def test_metrics_are_prometheus_text(server: RunningServer) -> None:
    status, body = http_json("GET", f"{server.base_url}/metrics")
    assert status == 200
    text = str(body)
    assert "# TYPE handoff_conversations_total counter" in text
    assert "handoff_serving_model_info{model=" in text


async def test_review_on_the_command_line(server: RunningServer) -> None:
    env = {**TEST_ENV, "HANDOFF_DATABASE_URL": f"sqlite:///{server.database_path}"}

    def review(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [HANDOFF, "review", *args], env=env, capture_output=True, text=True, timeout=120
        )

    user = await connect_user(server)
    assert await user.bot_texts("good morning")
    [queued] = pending(server, user.conversation_id)
    await user.close()
    status, answer = call(
        server,
        "POST",
        "/api/verifications",
        "vera",
        {"decisions": [{"id": queued["id"], "action": "confirm"}]},
    )
    assert status == 200, answer
    listed = review()
    assert listed.returncode == 0, listed.stderr
    assert "/console#conversation=" in listed.stdout
    ids = [int(i) for i in re.findall(r"#(\d+) ", listed.stdout)]
    assert answer["candidates"][0] in ids, listed.stdout

    refused = review("--as", "vera", "approve", str(ids[0]))
    assert refused.returncode == 2 and "not an active maintainer" in refused.stderr
    missing = review("--as", "mia", "approve", "999999")
    assert missing.returncode == 2 and "999999" in missing.stderr
    approved = review("--as", "mia", "approve", str(ids[0]))
    assert approved.returncode == 0, approved.stderr
    assert f"#{ids[0]} approved" in approved.stdout
    # Changing one's mind before the export: the example goes to the held-out set instead.
    held = review("--as", "mia", "hold-out", str(ids[0]))
    assert held.returncode == 0, held.stderr
    assert f"#{ids[0]} holdout" in held.stdout
    status, listed_api = call(server, "GET", "/api/review", "mia")
    assert status == 200 and ids[0] not in [
        e["id"] for g in listed_api["groups"] for e in g["examples"]
    ]


@pytest.mark.parametrize(
    ("user", "query", "status", "code"),
    [
        ("vera", "?days=30", 403, "forbidden"),  # maintainers only
        ("mia", "?days=0", 400, "invalid_field"),
        ("mia", "?days=366", 400, "invalid_field"),
        ("mia", "?days=%D9%A3", 400, "invalid_field"),  # a non-ASCII digit
        ("mia", "?days=-1", 400, "invalid_field"),
    ],
)
def test_bad_cockpit_requests_are_refused(
    server: RunningServer, user: str, query: str, status: int, code: str
) -> None:
    got, body = call(server, "GET", f"/api/cockpit{query}", user)
    assert (got, body["error"]["code"]) == (status, code), body


def test_the_cockpit_answers_a_maintainer(server: RunningServer) -> None:
    status, body = call(server, "GET", "/api/cockpit?days=7", "mia")
    assert status == 200, body
    assert len(body["days"]) == 7 and len(body["handoff_rate"]) == 7
    assert body["serving"] and body["pending"].keys() == {"review", "verification", "held"}


@pytest.mark.parametrize(
    ("user", "body", "status", "code"),
    [
        ("vera", {"name": "assistant-x.tar.gz"}, 403, "forbidden"),
        ("mia", {}, 400, "invalid_field"),
        ("mia", {"name": 7}, 400, "invalid_field"),
        ("mia", {"name": ""}, 400, "invalid_field"),
        ("mia", {"name": "../handoff.db"}, 400, "invalid_field"),
        ("mia", {"name": "assistant-nowhere.tar.gz"}, 400, "invalid_field"),
        ("mia", [1, 2], 400, "invalid_json"),
    ],
)
def test_bad_promotions_are_refused_and_change_nothing(
    server: RunningServer, user: str, body: Any, status: int, code: str
) -> None:
    before = call(server, "GET", "/api/models", "mia")[1]
    got, answer = call(server, "POST", "/api/models/promote", user, body)
    assert (got, answer["error"]["code"]) == (status, code), answer
    assert call(server, "GET", "/api/models", "mia")[1] == before
