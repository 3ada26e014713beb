"""The one wiring point: :func:`create_app` builds the sanic server from :class:`Settings`."""

from __future__ import annotations

import asyncio
import logging
import time

from sanic import Sanic

from handoff import agent_channel, rest_channel, user_channel, web
from handoff.assistant import Assistant, AssistantHolder
from handoff.conversation_service import ConversationService
from handoff.hub import Hub
from handoff.migrate import upgrade
from handoff.presence import Presence
from handoff.protocol import MAX_REST_BODY_BYTES, WEBSOCKET_MAX_SIZE
from handoff.rasa_http_api import set_rasa_api_agent
from handoff.settings import Settings
from handoff.store import Store
from handoff.triggers import HandoffPolicy

logger = logging.getLogger(__name__)

APP_NAME = "handoff"
EVENT_TRIM_INTERVAL_S = 600.0
SHUTDOWN_DRAIN_SECONDS = 10.0
"""How long a stopping server waits for queued Rasa tracker updates."""


def handoff_policy(settings: Settings) -> HandoffPolicy:
    return HandoffPolicy(
        request_intents=frozenset(settings.handoff_intents),
        always_human_intents=frozenset(settings.always_human_intents),
        intent_thresholds=dict(settings.intent_thresholds),
        fallbacks_before_handoff=settings.fallbacks_before_handoff,
    )


def create_app(settings: Settings) -> Sanic:
    """Build the server. Storage opens before it listens; the model loads in the background
    once it listens, and ``/health`` answers 503 until it is ready."""
    app = Sanic(APP_NAME)
    app.config.REQUEST_MAX_SIZE = MAX_REST_BODY_BYTES
    app.config.WEBSOCKET_MAX_SIZE = WEBSOCKET_MAX_SIZE
    app.config.WEBSOCKET_PING_INTERVAL = 20
    app.config.WEBSOCKET_PING_TIMEOUT = 20
    app.ctx.settings = settings
    app.ctx.assistant = AssistantHolder()
    app.ctx.hub = Hub()
    app.ctx.presence = Presence()

    app.blueprint(web.blueprint)
    app.blueprint(user_channel.blueprint)
    app.blueprint(rest_channel.blueprint)
    app.blueprint(agent_channel.blueprint)
    if settings.rasa_api_token:
        from handoff.rasa_http_api import mount_rasa_http_api

        mounted = mount_rasa_http_api(app, settings.rasa_api_token)
        logger.info("Rasa HTTP API enabled (token required): %d routes", len(mounted))

    @app.before_server_start
    async def open_storage(app: Sanic, _loop: asyncio.AbstractEventLoop) -> None:
        await asyncio.to_thread(upgrade, settings.database_url)
        app.ctx.store = await Store.open(settings.database_url)
        app.ctx.service = ConversationService(
            app.ctx.store,
            app.ctx.hub,
            app.ctx.assistant,
            handoff_policy(settings),
            app.ctx.presence,
        )

    @app.after_server_start
    async def start_background_work(app: Sanic, _loop: asyncio.AbstractEventLoop) -> None:
        app.ctx.background = [
            asyncio.create_task(_load_assistant(app, settings)),
            asyncio.create_task(_trim_events(app.ctx.store, settings.event_retention_hours)),
        ]

    @app.before_server_stop
    async def close_storage(app: Sanic, _loop: asyncio.AbstractEventLoop) -> None:
        await app.ctx.service.drain(timeout=SHUTDOWN_DRAIN_SECONDS)
        for task in app.ctx.background:
            task.cancel()
        await asyncio.gather(*app.ctx.background, return_exceptions=True)
        await app.ctx.store.close()

    return app


async def _trim_events(store: Store, retention_hours: float) -> None:
    while True:
        try:
            deleted = await store.trim_events(time.time() - retention_hours * 3600)
            if deleted:
                logger.info("Trimmed %d events older than %.0f h", deleted, retention_hours)
        except Exception:
            logger.exception("Could not trim old events")
        await asyncio.sleep(EVENT_TRIM_INTERVAL_S)


async def _load_assistant(app: Sanic, settings: Settings) -> None:
    holder: AssistantHolder = app.ctx.assistant
    try:
        assistant = await Assistant.load(
            settings.model_path, settings.database_url, settings.fallback_threshold
        )
    except Exception as error:
        logger.exception("Could not load the model from %s", settings.model_path)
        holder.fail(f"{type(error).__name__}: {error}")
        return
    holder.set(assistant)
    set_rasa_api_agent(app, assistant.agent)
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    base = f"http://{host}:{settings.port}"
    print(
        f"\nReady: model {assistant.info.name} loaded in {assistant.info.load_seconds:.1f} s\n"
        f"  chat page:      {base}/chat\n"
        f"  agent console:  {base}/console\n"
        f"  health:         {base}/health\n",
        flush=True,
    )
