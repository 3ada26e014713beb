"""Disabling an account, or changing its role, acts at once: over real sockets and HTTP
against the real server (docs/protocol.md, "Signed out: close codes")."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatusCode

from tests.conftest import (
    PASSWORD,
    AgentClient,
    RunningServer,
    UserClient,
    add_agent,
    agents_command,
    connect_agent,
    connect_user,
    http_json,
    login,
)

pytestmark = pytest.mark.slow

CLOSE_WAIT_S = 15.0
"""Generous: the sweep that carries command-line changes runs every 2 s."""


async def expect_closed(agent: AgentClient, timeout: float = CLOSE_WAIT_S) -> tuple[int, str]:
    """Read (and drop) frames until the server closes the socket; its close code and reason."""

    async def until_closed() -> None:
        try:
            while True:
                await agent.ws.recv()
        except ConnectionClosed:
            return

    await asyncio.wait_for(until_closed(), timeout)
    return agent.ws.close_code, agent.ws.close_reason


async def expect_in_queue(agent: AgentClient, conversation_id: str) -> None:
    """Wait for a ``queue`` event that lists ``conversation_id``."""
    while True:
        frame = await agent.expect("queue", timeout=CLOSE_WAIT_S)
        if any(item["conversation_id"] == conversation_id for item in frame["items"]):
            return


def change_account(
    server: RunningServer, maintainer_token: str, username: str, **changes: Any
) -> dict[str, Any]:
    status, body = http_json(
        "PATCH",
        f"{server.base_url}/api/agents/{username}",
        json.dumps(changes).encode(),
        headers={"Origin": server.base_url, "Authorization": f"Bearer {maintainer_token}"},
    )
    assert status == 200, body
    agent: dict[str, Any] = body["agent"]
    return agent


def sign_in_status(server: RunningServer, username: str) -> int:
    status, _ = http_json(
        "POST",
        f"{server.base_url}/api/login",
        json.dumps({"username": username, "password": PASSWORD}).encode(),
        headers={"Origin": server.base_url},
    )
    return status


def token_status(server: RunningServer, token: str) -> int:
    status, _ = http_json(
        "GET", f"{server.base_url}/api/me", headers={"Authorization": f"Bearer {token}"}
    )
    return status


async def socket_refusal(server: RunningServer, token: str) -> int:
    """The HTTP status with which ``/ws/agent`` refuses ``token`` (fails if it accepts)."""
    with pytest.raises(InvalidStatusCode) as refused:
        await connect(
            f"{server.ws_url}/ws/agent",
            origin=server.base_url,  # type: ignore[arg-type]
            extra_headers={"Authorization": f"Bearer {token}"},
        )
    return refused.value.status_code


async def handed_off_and_claimed(server: RunningServer, agent: AgentClient) -> UserClient:
    user = await connect_user(server)
    await user.send({"type": "message", "id": "m1", "text": "I want to talk to a person"})
    await user.expect("handoff", status="queued", timeout=60)
    await agent.act("claim", conversation_id=user.conversation_id)
    await user.expect("handoff", status="agent_joined")
    return user


def run_agents_command(server: RunningServer, *args: str) -> None:
    result = agents_command(f"sqlite:///{server.database_path}", *args)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def maintainer_token(server: RunningServer) -> str:
    add_agent(server, "acc_maya", "Maya", role="maintainer")
    return login(server, "acc_maya", PASSWORD)


async def test_a_maintainer_disabling_an_agent_closes_its_socket_and_requeues_its_users(
    server: RunningServer, maintainer_token: str
) -> None:
    add_agent(server, "acc_dana", "Dana")
    add_agent(server, "acc_eli", "Eli")
    dana, eli = await connect_agent(server, "acc_dana"), await connect_agent(server, "acc_eli")
    user = await handed_off_and_claimed(server, dana)
    await eli.drain()  # the queue events so far list the conversation from before the claim

    changed = change_account(server, maintainer_token, "acc_dana", disabled=True)
    assert changed["disabled"] is True

    assert await expect_closed(dana) == (4001, "account_disabled")
    notice = await user.expect("handoff", status="queued")
    assert notice["reason"] == "agent_unavailable" and notice["text"], notice
    await expect_in_queue(eli, user.conversation_id)
    await eli.act("claim", conversation_id=user.conversation_id)
    assert (await user.expect("handoff", status="agent_joined"))["agent"] == "Eli"
    await eli.act("reply", conversation_id=user.conversation_id, text="Eli here.")
    assert (await user.expect("agent"))["text"] == "Eli here."

    assert token_status(server, dana.token) == 401
    assert await socket_refusal(server, dana.token) == 401
    assert sign_in_status(server, "acc_dana") == 401
    await eli.act("close", conversation_id=user.conversation_id)
    await user.close()
    await eli.close()


async def test_disabling_from_the_command_line_acts_within_seconds(server: RunningServer) -> None:
    add_agent(server, "acc_fay", "Fay")
    add_agent(server, "acc_gus", "Gus")
    fay, gus = await connect_agent(server, "acc_fay"), await connect_agent(server, "acc_gus")
    user = await handed_off_and_claimed(server, fay)
    await gus.drain()

    await asyncio.to_thread(run_agents_command, server, "disable", "acc_fay")

    assert await expect_closed(fay) == (4001, "account_disabled")
    notice = await user.expect("handoff", status="queued", timeout=CLOSE_WAIT_S)
    assert notice["reason"] == "agent_unavailable", notice
    await expect_in_queue(gus, user.conversation_id)
    await gus.act("claim", conversation_id=user.conversation_id)
    await user.expect("handoff", status="agent_joined")
    assert token_status(server, fay.token) == 401
    assert sign_in_status(server, "acc_fay") == 401

    await asyncio.to_thread(run_agents_command, server, "enable", "acc_fay")
    assert sign_in_status(server, "acc_fay") == 200
    await gus.act("close", conversation_id=user.conversation_id)
    await user.close()
    await gus.close()


async def test_removing_the_maintainer_role_signs_out_and_keeps_the_conversations(
    server: RunningServer, maintainer_token: str
) -> None:
    add_agent(server, "acc_hal", "Hal", role="maintainer")
    hal = await connect_agent(server, "acc_hal")
    assert hal.hello["agent"]["role"] == "maintainer"
    user = await handed_off_and_claimed(server, hal)

    changed = change_account(server, maintainer_token, "acc_hal", role="agent")
    assert changed["role"] == "agent"

    assert await expect_closed(hal) == (4002, "role_changed")
    assert token_status(server, hal.token) == 401
    again = await connect_agent(server, "acc_hal")  # signs in anew
    assert again.hello["agent"]["role"] == "agent"
    assert user.conversation_id in again.hello["assigned"]
    await again.act("reply", conversation_id=user.conversation_id, text="Still with you.")
    assert (await user.expect("agent"))["text"] == "Still with you."
    await again.act("close", conversation_id=user.conversation_id)
    await user.close()
    await again.close()


async def test_signing_out_closes_the_sockets_of_that_session(server: RunningServer) -> None:
    add_agent(server, "acc_ida", "Ida")
    ida = await connect_agent(server, "acc_ida")
    status, _ = http_json(
        "POST",
        f"{server.base_url}/api/logout",
        headers={"Origin": server.base_url, "Authorization": f"Bearer {ida.token}"},
    )
    assert status == 200
    assert await expect_closed(ida) == (4003, "session_ended")


async def test_the_console_of_a_disabled_agent_returns_to_sign_in_and_says_why(
    server: RunningServer, maintainer_token: str, page: Any
) -> None:
    add_agent(server, "acc_jo", "Jo")
    await page.goto(f"{server.base_url}/console")
    await page.fill("#username", "acc_jo")
    await page.fill("#password", PASSWORD)
    await page.click("#signin-form button[type=submit]")
    await page.wait_for_selector("#connection:text('connected')")

    change_account(server, maintainer_token, "acc_jo", disabled=True)

    message = page.locator("#signin-error", has_text="account was disabled")
    await message.wait_for(timeout=CLOSE_WAIT_S * 1000)
    assert await page.locator("#console").is_hidden()
    assert await page.locator("#signin").is_visible()
