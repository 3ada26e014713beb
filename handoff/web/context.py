"""The server's shared state, typed: one :class:`AppContext` per app, read by every handler.

Sanic's ``app.ctx`` is a free namespace, and Rasa's mounted HTTP API keeps its own attributes
there (``agent``, ``rasa_app``, ...; see :mod:`handoff.assistant.rasa_http_api`). Ours live in
one attribute of it, ``app.ctx.handoff``: set it with :func:`install_context`, read it with
:func:`app_context` or :func:`request_context`. Nothing else of ours touches ``app.ctx``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from sanic import Request, Sanic

from handoff.assistant.action_server import ActionServer
from handoff.assistant.interface import AssistantHolder, AssistantRuntime
from handoff.conversations.service import ConversationService
from handoff.learning.metrics_reader import MetricsReader
from handoff.realtime.agent_connections import AgentConnections
from handoff.realtime.hub import Hub
from handoff.realtime.presence import Presence
from handoff.settings import Settings
from handoff.storage.learning_store import LearningStore
from handoff.storage.store import Store

__all__ = ["AppContext", "app_context", "install_context", "request_context"]


@dataclass
class AppContext:
    """What the app keeps between requests.

    The fields with defaults exist from :func:`~handoff.web.app.create_app` on. ``store``,
    ``learning``, ``metrics`` and ``service`` are set by the ``before_server_start`` listener
    (reading them earlier raises ``AttributeError``), which also replaces ``hub`` and
    ``presence`` by their Redis versions and sets ``redis`` when ``HANDOFF_REDIS_URL`` is set.
    """

    settings: Settings
    runtime: AssistantRuntime
    """Where the assistant runs: worker processes or this process (see ``assistant_runtime``)."""
    assistant: AssistantHolder = field(default_factory=AssistantHolder)
    """What answers: the runtime's ``api``, once the model is ready."""
    hub: Hub = field(default_factory=Hub)
    presence: Presence = field(default_factory=Presence)
    agent_connections: AgentConnections = field(default_factory=AgentConnections)
    background: list[asyncio.Task[None]] = field(default_factory=list)
    """Tasks cancelled when the server stops (model watching, trimming, sweeps, ...)."""
    redis: Any = None
    """The Redis client shared by the hub, presence and locks, or None without Redis."""
    action_server: ActionServer | None = None
    """The project's custom-action server this process runs, if it runs one."""
    store: Store = field(init=False, repr=False)
    learning: LearningStore = field(init=False, repr=False)
    metrics: MetricsReader = field(init=False, repr=False)
    service: ConversationService = field(init=False, repr=False)


def install_context(app: Sanic, context: AppContext) -> None:
    """Make ``context`` the one :func:`app_context` of ``app`` returns (once, before serving)."""
    app.ctx.handoff = context


def app_context(app: Sanic) -> AppContext:
    """The context :func:`install_context` gave ``app``."""
    context: AppContext = app.ctx.handoff
    return context


def request_context(request: Request) -> AppContext:
    """The context of the app serving ``request``."""
    return app_context(request.app)
