"""The agent console in a real headless Chromium (Debian's, driven by Playwright)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PASSWORD, RunningServer, add_agent, connect_user, sign_in_to_console

pytestmark = pytest.mark.slow

XSS = '<img src=x onerror="window.__xss = 1"><script>window.__xss = 2</script>'
SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"


async def goto_checking_headers(page: Any, url: str) -> None:
    """Open ``url`` and check the security headers every page carries."""
    response = await page.goto(url)
    assert response is not None and response.ok
    headers = await response.all_headers()
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"


async def test_agent_claims_labels_replies_with_a_canned_response_and_hands_back(
    server: RunningServer, page: Any
) -> None:
    add_agent(server, "dana", "Dana")
    user = await connect_user(server)
    frames = await user.say("I'd like to talk to a person please")
    assert frames[0]["status"] == "queued"
    await user.send({"type": "message", "id": "xss-1", "text": XSS})
    await user.expect("ack", id="xss-1")

    await goto_checking_headers(page, f"{server.base_url}/console")
    await page.fill("#username", "dana")
    await page.fill("#password", PASSWORD)
    await page.click("#signin-form button[type=submit]")
    await page.wait_for_selector("#connection:text('connected')")

    item = page.locator(f"#queue li[data-conversation-id='{user.conversation_id}']")
    await item.wait_for()
    assert await item.locator(".last").text_content() == XSS, "shown as text in the queue"
    await item.locator("button.claim").click()
    await user.expect("handoff", status="agent_joined")

    transcript = page.locator("#transcript")
    await transcript.locator(".msg.user .text", has_text="onerror").wait_for()
    texts = await transcript.locator(".msg.user .text").all_text_contents()
    assert XSS in texts
    assert await transcript.locator("img, script").count() == 0
    assert await page.evaluate("window.__xss") is None

    first = transcript.locator(".msg.user").first
    await first.locator("select").select_option("human_handoff")
    await first.locator("button.label-button").click()
    await transcript.locator(".msg.user .labelled", has_text="human_handoff").wait_for()

    options = await page.locator("#canned option").evaluate_all("els => els.map(e => e.value)")
    canned = options[1]
    assert canned.startswith("utter_")
    await page.select_option("#canned", canned)
    expected_text = await page.input_value("#reply")
    await page.click("#reply-form button[type=submit]")
    reply = await user.expect("agent")
    assert reply["text"] == expected_text
    assert reply["agent"] == "Dana"

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / "console-conversation.png"))

    await page.click("#hand-back")
    await user.expect("handoff", status="handed_back")
    await page.locator("#empty").wait_for(state="visible")

    with sqlite3.connect(server.database_path) as db:
        used = db.execute(
            "SELECT response_name FROM messages WHERE conversation_id = ? AND sender = 'agent'",
            (user.conversation_id,),
        ).fetchall()
        labels = db.execute(
            "SELECT l.intent FROM labels l JOIN messages m ON m.id = l.message_id"
            " WHERE m.conversation_id = ?",
            (user.conversation_id,),
        ).fetchall()
    assert used == [(canned,)]
    assert labels == [("human_handoff",)]
    await user.close()


async def test_thumbs_down_in_the_chat_is_verified_and_reviewed_in_the_console(
    server: RunningServer, page: Any
) -> None:
    add_agent(server, "rosa", "Rosa", role="maintainer")

    # The user gives the bot's answer a thumbs-down on the chat page, twice, for the same
    # question written two ways.
    await goto_checking_headers(page, f"{server.base_url}/chat")
    await page.wait_for_selector("#text:not([disabled])")
    question = "what are your opening hours"
    notices = page.locator("#log .msg--notice", has_text="talk to a person")
    for count, text in enumerate((question, "What are your opening hours?"), start=1):
        await page.fill("#text", text)
        await page.click("#send")
        thumbs = page.locator("#log .msg__feedback button").last  # a used one is removed
        await thumbs.wait_for()
        assert await thumbs.locator("svg path").count() == 1, "an icon that needs no emoji font"
        await thumbs.click()
        await notices.nth(count - 1).wait_for()

    # A maintainer verifies it in the console: one row for both, the right intent is
    # support_hours.
    await sign_in_to_console(page, server, "rosa")
    await page.click("#open-verify")
    row = page.locator("#verify-table tr", has_text=question)
    await row.wait_for()
    assert await row.count() == 1, "near-identical messages are one row"
    shown = await row.text_content() or ""
    assert "unhelpful" in shown and "+ 1 similar" in shown and "margin" in shown, shown
    await row.locator("select").select_option("support_hours")
    await page.click("#verify-submit")
    await row.wait_for(state="detached")
    await page.click("#close-verify")

    # ... and approves the example it became (its twin is rejected as a near-duplicate).
    await page.click("#open-review")
    item = page.locator(".review-item", has_text=question)
    await item.wait_for()
    await item.locator("button", has_text="Approve").click()
    await item.wait_for(state="detached")
    await page.screenshot(path=str(SCREENSHOTS / "console-review.png"))

    with sqlite3.connect(server.database_path) as db:
        rows = db.execute(
            "SELECT status, intent, source FROM candidates WHERE lower(text) LIKE ? ORDER BY id",
            (f"{question}%",),
        ).fetchall()
    assert sorted(rows) == [
        ("approved", "support_hours", "verification"),
        ("rejected", "support_hours", "verification"),
    ]


async def claim_in_console(page: Any, server: RunningServer, agent: str, user: Any) -> None:
    """Sign ``agent`` in to the console and claim ``user``'s queued conversation there."""
    await sign_in_to_console(page, server, agent)
    item = page.locator(f"#queue li[data-conversation-id='{user.conversation_id}']")
    await item.locator("button.claim").click()
    await user.expect("handoff", status="agent_joined")


async def test_the_agent_sees_what_the_bots_actions_did_and_the_form_resumes_on_hand_back(
    server: RunningServer, page: Any
) -> None:
    add_agent(server, "erin", "Erin")
    user = await connect_user(server)
    (asked,) = await user.bot_texts("I want to transfer 50 euros")
    frames = await user.say("can I talk to a person please")
    assert frames[0]["status"] == "queued"

    await claim_in_console(page, server, "erin", user)

    slots = page.locator("#chat-slots")
    await slots.wait_for()
    assert "amount = 50 euros" in (await slots.text_content() or "")
    assert "form transfer_form active" in (await slots.text_content() or "")
    action = page.locator("#transcript .msg.user").first.locator(".turn .action").first
    assert "transfer_form: form transfer_form active, amount = 50 euros" in (
        await action.text_content() or ""
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / "console-actions.png"))

    await page.click("#hand-back")
    await user.expect("handoff", status="handed_back")
    resumed = await user.expect("bot")
    assert resumed["text"] == asked  # the form asks its question again
    await user.close()


async def test_the_bots_draft_is_offered_and_sent_with_the_keyboard(
    server: RunningServer, page: Any
) -> None:
    add_agent(server, "fay", "Fay")
    user = await connect_user(server)
    frames = await user.say("can I talk to a person please")
    assert frames[0]["status"] == "queued"

    await claim_in_console(page, server, "fay", user)

    await user.say("what is my current balance", answered=False)
    await page.locator("#draft-intent", has_text="check_balance").wait_for()
    draft = await page.locator("#draft-text").text_content() or ""
    assert "balance" in draft.lower()
    await page.locator("#transcript").click()  # focus off the reply box: keys go to the console
    await page.keyboard.press("1")  # confirm the first guess of the last message
    await page.locator("#transcript .msg.user .labelled", has_text="check_balance").wait_for()
    await page.keyboard.press("s")  # send the bot's draft
    sent = await user.expect("agent")
    assert sent["text"] == draft
    await user.close()
