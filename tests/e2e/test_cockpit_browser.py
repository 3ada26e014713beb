"""The maintainer's cockpit in headless Chromium: charts drawn from a seeded database, the
model registry, and a roll-back to the previous model that the chat then answers with; the
same page as `handoff report --html`."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import (
    HANDOFF,
    TEST_ENV,
    RunningServer,
    TrainingRun,
    add_agent,
    browser_page,
    connect_user,
    http_json,
    sign_in_to_console,
    start_server,
    stop_server,
)

pytestmark = pytest.mark.slow

SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"
DAYS = 5
PREVIOUS = "assistant-previous.tar.gz"


@dataclass
class Cockpit:
    server: RunningServer
    models: Path
    live: str


def seed(database: Path, now: float) -> None:
    """Five days of conversations: each day more of them, fewer handed off, some labels."""
    ranking = json.dumps([{"name": "greet", "confidence": 0.9}])
    fallback = json.dumps([{"name": "nlu_fallback", "confidence": 0.3}])
    with sqlite3.connect(database) as db:
        for day in range(DAYS):
            at = now - (DAYS - 1 - day) * 86_400 - 3_600
            for n in range(day + 2):
                conversation = f"seed-{day}-{n}"
                handed_off = n < max(1, 3 - day)
                db.execute(
                    "INSERT INTO messages (conversation_id, sender, text, intent_ranking, "
                    "created_at) VALUES (?, 'user', 'hello', ?, ?)",
                    (conversation, fallback if handed_off else ranking, at + n),
                )
                if handed_off:
                    db.execute(
                        "INSERT INTO handoffs (conversation_id, reason, queued_at, "
                        "first_agent_reply_at) VALUES (?, 'low_confidence', ?, ?)",
                        (conversation, at + n + 1, at + n + 1 + 20 * (day + 1)),
                    )
            for source in ["label"] * (day + 1) + ["approval"] * day:
                db.execute(
                    "INSERT INTO candidates (kind, status, source, intent, text, created_at, "
                    "updated_at) VALUES ('example', 'pending', ?, 'greet', 'hi', ?, ?)",
                    (source, at, at),
                )


@pytest.fixture(scope="module")
def cockpit(
    training_run: TrainingRun, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cockpit]:
    root = tmp_path_factory.mktemp("cockpit")
    models = root / "models"
    models.mkdir()
    live = training_run.model.name
    shutil.copy2(training_run.model, models / live)
    shutil.copy2(training_run.model, models / PREVIOUS)  # the same model under another name
    shutil.copy2(training_run.database, root / "handoff.db")  # its registry: `live` is live
    with sqlite3.connect(root / "handoff.db") as db:
        db.execute(
            "INSERT INTO model_versions (name, training_hash, trained_at, status, metrics, "
            "promoted_at, promoted_by) SELECT ?, 'previous', trained_at - 86400, 'retired', "
            "metrics, promoted_at - 86400, 'handoff train' FROM model_versions WHERE name = ?",
            (PREVIOUS, live),
        )
    server = start_server(models, root, extra_env={"HANDOFF_MODEL_POLL_SECONDS": "1"})
    seed(root / "handoff.db", time.time())
    add_agent(server, "max", "Max", role="maintainer")
    yield Cockpit(server, models, live)
    stop_server(server)


async def test_the_cockpit_charts_the_seeded_days_and_rolls_back_a_model(cockpit: Cockpit) -> None:
    server = cockpit.server
    async with browser_page() as page:
        await sign_in_to_console(page, server, "max")
        await page.click("#open-cockpit")

        charts = page.locator("#cockpit-charts figure")
        await charts.first.wait_for()
        assert await charts.count() == 5
        rates = charts.nth(0)
        # One point per seeded day for both rates (today: only what the seed put there).
        assert await rates.locator("circle.point").count() == 2 * DAYS
        bars = charts.nth(2).locator("rect.bar")  # labels every seeded day, approvals from day 2
        assert await bars.count() == DAYS + DAYS - 1
        assert "candidates to review" in (await page.locator(".pending").text_content() or "")
        rows = page.locator("#cockpit-models tr[data-model]")
        assert await rows.count() == 2
        live_row = page.locator(f"#cockpit-models tr[data-model='{cockpit.live}']")
        assert "serving" in (await live_row.text_content() or "")
        assert "(" in (await live_row.locator("td").nth(2).text_content() or "")  # interval
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOTS / "console-cockpit.png"), full_page=True)

        # Roll back: the previous model goes live and the server swaps to it.
        page.on("dialog", lambda dialog: dialog.accept())
        previous = page.locator(f"#cockpit-models tr[data-model='{PREVIOUS}'] button.promote")
        await previous.click()
        for _ in range(120):
            if http_json("GET", f"{server.base_url}/health")[1].get("model") == PREVIOUS:
                break
            await asyncio.sleep(1)
        else:
            pytest.fail(f"the server did not roll back:\n{server.log_tail()}")
        await page.locator(
            f"#cockpit-models tr[data-model='{PREVIOUS}'] td", has_text="by max"
        ).wait_for()

    user = await connect_user(server)
    try:
        assert user.ready["model"] == PREVIOUS  # the chat answers with the rolled-back model
        (answer,) = await user.bot_texts("hello")
        assert answer
    finally:
        await user.close()

    # The same cockpit as one file, for people without the console.
    page_file = server.database_path.with_name("cockpit.html")
    result = await asyncio.to_thread(
        subprocess.run,
        [HANDOFF, "report", "--html", str(page_file), "--days", str(DAYS)],
        env={**TEST_ENV, "HANDOFF_DATABASE_URL": f"sqlite:///{server.database_path}"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    async with browser_page() as report:
        await report.goto(page_file.as_uri())
        await report.locator("#charts figure").first.wait_for()
        assert await report.locator("#charts figure").count() == 5
        assert await report.locator("#models tr[data-model]").count() == 2
