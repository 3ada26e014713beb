"""Approve before send in the agent console (headless Chromium): held answers appear with the
user's message, the intent guesses and the draft; the agent approves one with the A key and
corrects another with a number key; the user reads each answer only then."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import (
    RunningServer,
    add_agent,
    browser_page,
    connect_user,
    sign_in_to_console,
    start_server,
    stop_server,
)
from tests.integration.test_server import assert_is_response

pytestmark = pytest.mark.slow

SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"


@pytest.fixture(scope="module")
def approving(
    trained_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    running = start_server(
        trained_model,
        tmp_path_factory.mktemp("approvals-browser"),
        extra_env={"HANDOFF_APPROVAL_BAND": "1.0", "HANDOFF_APPROVAL_TIMEOUT": "60"},
    )
    add_agent(running, "kim", "Kim")
    yield running
    stop_server(running)


async def test_an_agent_approves_and_corrects_held_answers_with_the_keyboard(
    approving: RunningServer,
) -> None:
    async with browser_page() as page:
        await sign_in_to_console(page, approving, "kim")

        user = await connect_user(approving)
        try:
            # Approve with A.
            sent = time.monotonic()
            await user.send({"type": "message", "id": uuid.uuid4().hex, "text": "hi there"})
            card = page.locator("#approval-list .approval.first")
            await card.wait_for()
            shown = time.monotonic()
            assert await card.locator(".user-text").text_content() == "hi there"
            draft = await card.locator(".draft").text_content() or ""
            assert "greet" in (await card.locator(".intents").text_content() or "")
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(SCREENSHOTS / "console-approval.png"))
            await page.keyboard.press("a")
            answer = await user.expect("bot")
            answered = time.monotonic()
            assert answer["text"] in draft
            await page.locator("#approvals").wait_for(state="hidden")
            print(
                f"\nheld answer: on the agent's screen {shown - sent:.2f} s after the user "
                f"sent it; approved with one key, at the user {answered - shown:.2f} s later; "
                f"the user waited {answered - sent:.2f} s in all"
            )

            # Correct with a number key: the first guess but one.
            await user.send(
                {"type": "message", "id": uuid.uuid4().hex, "text": "when are you open"}
            )
            await card.wait_for()
            options = await card.locator("select option").all_text_contents()
            second = options[1].split(". ", 1)[1]
            await page.keyboard.press("2")
            corrected = await user.expect("bot")
            assert_is_response(corrected["text"], f"utter_{second}")
        finally:
            await user.close()
