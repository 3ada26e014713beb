"""The floor under the relay: a bare sanic + websockets server that relays as ours does, with
nothing else, for ``benchmarks.relay_load --floor`` to measure on the same machine and hour.

It speaks the part of our protocol the load generator uses and sends the frames ours sends
for each relayed message: the user's message gets an ``ack``, a ``user_message`` and an
``intents`` frame (no guesses) to the agent; the agent's reply an ``ack``, its own
``agent_message`` and an ``agent`` frame to the user. Nothing else: no store, no locks, no
sign-in, no assistant worker, no rate limits, no input checks beyond ``json.loads``; the
conversations live in a dict. What our server spends beyond this process's CPU time per
relayed message is the cost of the product (durable messages, routing, intent guesses).

    .venv/bin/python -m benchmarks.relay_floor --port 5124   # GET /health answers when ready
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import uuid
from dataclasses import dataclass, field
from typing import Any

from sanic import Request, Sanic
from sanic.response import HTTPResponse, text
from sanic.server.websockets.impl import WebsocketImplProtocol as Websocket

from handoff.core import json_codec
from handoff.core.protocol import WEBSOCKET_MAX_SIZE


@dataclass
class Conversation:
    user: Websocket
    agent: Websocket | None = None
    messages: int = 0


@dataclass
class Floor:
    conversations: dict[str, Conversation] = field(default_factory=dict)
    event_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def frame(self, type_: str, conversation_id: str, **fields: Any) -> str:
        """An event frame as ours looks: type, conversation, event id, payload."""
        return json_codec.dumps_text(
            {
                "type": type_,
                "conversation_id": conversation_id,
                "event_id": next(self.event_ids),
                **fields,
            }
        )


def create_app(ping_timeout: int) -> Sanic:
    app = Sanic("relay_floor")
    app.config.WEBSOCKET_MAX_SIZE = WEBSOCKET_MAX_SIZE
    app.config.WEBSOCKET_PING_INTERVAL = 20
    app.config.WEBSOCKET_PING_TIMEOUT = ping_timeout
    floor = Floor()

    @app.get("/health")
    async def health(_: Request) -> HTTPResponse:
        return text("ok")

    @app.websocket("/ws/user")
    async def user_socket(_: Request, ws: Websocket) -> None:
        conversation_id = uuid.uuid4().hex
        conversation = Conversation(ws)
        floor.conversations[conversation_id] = conversation
        await ws.send(json_codec.dumps_text({"type": "ready", "conversation_id": conversation_id}))
        try:
            while (raw := await ws.recv()) is not None:
                frame = json.loads(raw)
                agent = conversation.agent
                await ws.send(
                    json_codec.dumps_text({"type": "ack", "id": frame["id"], "queued": False})
                )
                if agent is None:
                    await ws.send(floor.frame("handoff", conversation_id, status="queued"))
                    continue
                conversation.messages += 1
                message_id = conversation.messages
                message = {"message_id": message_id, "sender": "user", "text": frame["text"]}
                await agent.send(floor.frame("user_message", conversation_id, message=message))
                await agent.send(
                    floor.frame("intents", conversation_id, message_id=message_id, ranking=[])
                )
        finally:
            floor.conversations.pop(conversation_id, None)

    @app.websocket("/ws/agent")
    async def agent_socket(_: Request, ws: Websocket) -> None:
        await ws.send(json_codec.dumps_text({"type": "hello", "agent": {"id": 1}}))
        while (raw := await ws.recv()) is not None:
            frame = json.loads(raw)
            conversation = floor.conversations.get(frame.get("conversation_id", ""))
            if conversation is None:
                await ws.send(json_codec.dumps_text({"type": "error", "id": frame.get("id")}))
                continue
            await ws.send(json_codec.dumps_text({"type": "ack", "id": frame["id"]}))
            conversation_id = frame["conversation_id"]
            if frame["type"] == "claim":
                conversation.agent = ws
                await conversation.user.send(
                    floor.frame("handoff", conversation_id, status="agent_joined", agent="Bench")
                )
            elif frame["type"] == "reply":
                reply = frame["text"]
                await ws.send(
                    floor.frame("agent_message", conversation_id, id=frame["id"], text=reply)
                )
                await conversation.user.send(
                    floor.frame("agent", conversation_id, text=reply, agent="Bench")
                )

    return app


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=5124)
    parser.add_argument(
        "--ping-timeout", type=int, default=600, help="websocket ping timeout, s (600)"
    )
    args = parser.parse_args()
    create_app(args.ping_timeout).run(
        host="127.0.0.1", port=args.port, access_log=False, motd=False
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
