"""The one wiring point: :func:`create_app` builds the sanic server from :class:`Settings`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

from sanic import Sanic

from handoff.assistant.action_server import ActionServer, plan_action_server
from handoff.assistant.endpoints import RasaEndpoints, check_agreement, read_endpoints
from handoff.assistant.heap import tune_collector_for_serving
from handoff.assistant.interface import AssistantApi, AssistantRuntime
from handoff.assistant.model_files import resolve_model_path
from handoff.assistant.rasa_http_api import set_rasa_api_agent
from handoff.assistant.tracker_database import tracker_database_url
from handoff.assistant.worker_client import WorkerSpec
from handoff.assistant.workers import AssistantWorkers
from handoff.conversations.account_changes import AccountSweep
from handoff.conversations.service import ConversationService
from handoff.core.approvals import ApprovalRules
from handoff.core.protocol import MAX_REST_BODY_BYTES, WEBSOCKET_MAX_SIZE
from handoff.core.triggers import HandoffPolicy, top_intent
from handoff.learning.loop import live_model_file
from handoff.learning.metrics_reader import MetricsReader
from handoff.operator_output import route_sanic_logs_to_root
from handoff.realtime.hub import ephemeral_event
from handoff.realtime.locks import ConversationLocks, RedisConversationLocks
from handoff.realtime.redis_hub import RedisHub, RedisPresence
from handoff.realtime.redis_hub import connect as connect_redis
from handoff.settings import Settings
from handoff.storage.learning_store import LearningStore
from handoff.storage.migrate import upgrade
from handoff.storage.store import Store
from handoff.web import agent_channel, learning_api, pages, rest_channel, user_channel
from handoff.web.context import AppContext, app_context, install_context
from handoff.web.http_errors import JsonApiErrorHandler
from handoff.web.security_headers import add_security_headers
from handoff.web.sign_in_throttle import forget_stale_counters
from handoff.web.websocket_io import install as queue_websocket_messages

__all__ = ["assistant_runtime", "create_app", "handoff_policy"]

logger = logging.getLogger(__name__)

APP_NAME = "handoff"
EVENT_TRIM_INTERVAL_S = 600.0
ACTION_SERVER_WAIT_S = 60.0
"""How long the Ready line waits for the action server to answer after the model is loaded
(custom actions fail until it does; the bot answers meanwhile)."""
SHUTDOWN_DRAIN_SECONDS = 10.0
"""How long a stopping server waits for queued Rasa tracker updates."""


def handoff_policy(settings: Settings) -> HandoffPolicy:
    return HandoffPolicy(
        request_intents=frozenset(settings.handoff_intents),
        always_human_intents=frozenset(settings.always_human_intents),
        intent_thresholds=dict(settings.intent_thresholds),
        fallbacks_before_handoff=settings.fallbacks_before_handoff,
    )


def create_app(settings: Settings, endpoints: RasaEndpoints | None = None) -> Sanic:
    """Build the server. Storage opens before it listens; the model loads in the background
    once it listens, and ``/health`` answers 503 until it is ready. The project's action
    server (if this process runs it) starts beside the model. Raises
    :class:`~handoff.assistant.endpoints.EndpointsError` for an endpoints.yml it cannot
    honour. ``endpoints``: the project's endpoints, if the caller read them already."""
    app = Sanic(APP_NAME, error_handler=JsonApiErrorHandler(), configure_logging=False)
    app.config.REQUEST_MAX_SIZE = MAX_REST_BODY_BYTES
    app.config.WEBSOCKET_MAX_SIZE = WEBSOCKET_MAX_SIZE
    app.config.WEBSOCKET_PING_INTERVAL = 20
    app.config.WEBSOCKET_PING_TIMEOUT = settings.websocket_ping_timeout
    queue_websocket_messages()
    endpoints = endpoints or read_endpoints(settings.endpoints_path())
    check_agreement(
        endpoints,
        tracker_database_url=tracker_database_url(settings.database_url),
        redis_url=settings.redis_url,
    )
    plan, _ = plan_action_server(endpoints.action_url, settings.bot_dir, settings.action_server)
    install_context(
        app,
        AppContext(
            settings,
            runtime=assistant_runtime(settings),
            action_server=ActionServer(plan) if plan else None,
        ),
    )
    add_security_headers(app)

    app.blueprint(pages.blueprint)
    app.blueprint(user_channel.blueprint)
    app.blueprint(rest_channel.blueprint)
    app.blueprint(agent_channel.blueprint)
    app.blueprint(learning_api.blueprint)
    if settings.rasa_api_token:
        from handoff.assistant.rasa_http_api import mount_rasa_http_api

        mounted = mount_rasa_http_api(app, settings.rasa_api_token)
        logger.info("Rasa HTTP API enabled (token required): %d routes", len(mounted))
        route_sanic_logs_to_root()  # Rasa's app installed sanic's own log handlers

    @app.before_server_start
    async def open_storage(app: Sanic, _loop: asyncio.AbstractEventLoop) -> None:
        ctx = app_context(app)
        await asyncio.to_thread(upgrade, settings.database_url)
        ctx.store = await Store.open(settings.database_url)
        ctx.learning = LearningStore(ctx.store.engine)
        ctx.metrics = MetricsReader.open(settings.database_url)  # connects on first use
        locks = ConversationLocks()
        if settings.redis_url:
            redis = connect_redis(settings.redis_url)
            ctx.redis = redis
            hub = ctx.hub = RedisHub(redis, settings.redis_namespace)
            presence = ctx.presence = RedisPresence(redis, settings.redis_namespace)
            locks = RedisConversationLocks(redis, settings.redis_namespace)
            await hub.start()
            await presence.start()
        ctx.service = ConversationService(
            ctx.store,
            ctx.hub,
            ctx.assistant,
            handoff_policy(settings),
            ctx.presence,
            ctx.learning,
            settings.verification_band,
            locks,
            ApprovalRules(
                settings.approval_band, settings.approval_timeout, settings.approval_slots
            ),
        )

    @app.after_server_start
    async def start_background_work(app: Sanic, _loop: asyncio.AbstractEventLoop) -> None:
        ctx = app_context(app)
        if ctx.action_server is not None:
            ctx.background.append(asyncio.create_task(ctx.action_server.run()))
        ctx.background += [
            asyncio.create_task(_load_and_watch(app, settings)),
            asyncio.create_task(_trim_events(ctx.store, settings.event_retention_hours)),
            asyncio.create_task(forget_stale_counters(ctx.store.engine, settings)),
            asyncio.create_task(ctx.agent_connections.follow(ctx.hub)),
            asyncio.create_task(AccountSweep(ctx.agent_connections, ctx.store, ctx.service).run()),
        ]
        left = await ctx.service.resume_held_answers()
        if left:
            logger.info("%d bot answers were held for approval when the server stopped", left)
        tune_collector_for_serving()

    @app.before_server_stop
    async def close_storage(app: Sanic, _loop: asyncio.AbstractEventLoop) -> None:
        ctx = app_context(app)
        await ctx.service.drain(timeout=SHUTDOWN_DRAIN_SECONDS)
        await ctx.service.stop_timers()
        for task in ctx.background:
            task.cancel()
        await asyncio.gather(*ctx.background, return_exceptions=True)
        await ctx.runtime.close()
        if ctx.action_server is not None:
            await ctx.action_server.close()
        if settings.redis_url:
            assert isinstance(ctx.presence, RedisPresence) and isinstance(ctx.hub, RedisHub)
            await ctx.presence.close()
            await ctx.hub.close()
            await ctx.redis.close()
        await ctx.metrics.close()
        await ctx.store.close()

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


def assistant_runtime(settings: Settings) -> AssistantRuntime:
    """Worker processes (``assistant_workers`` >= 1) or the model in this process (0)."""
    tracker_url = tracker_database_url(settings.database_url)
    if settings.assistant_workers == 0:
        from handoff.assistant.in_process import InProcessAssistant

        return InProcessAssistant(
            tracker_url,
            settings.fallback_threshold,
            settings.redis_url,
            settings.redis_namespace,
            endpoints=settings.endpoints_path(),
        )
    spec = WorkerSpec(
        endpoints=settings.endpoints_path(),
        tracker_database_url=tracker_url,
        fallback_threshold=settings.fallback_threshold,
        redis_url=settings.redis_url,
        redis_namespace=settings.redis_namespace,
        log_level=settings.log_level,
        module=settings.assistant_worker_module,
    )
    return AssistantWorkers(spec, settings.assistant_workers)


def _point_rasa_http_api(app: Sanic, runtime: AssistantRuntime) -> None:
    agent = getattr(runtime, "agent", None)  # only the in-process assistant has one
    if agent is not None:
        set_rasa_api_agent(app, agent)


async def _load_and_watch(app: Sanic, settings: Settings) -> None:
    """Load the promoted model (or the newest one), then swap to each newly promoted model."""
    ctx = app_context(app)
    holder, learning, runtime = ctx.assistant, ctx.learning, ctx.runtime
    try:
        model = await live_model_file(settings, learning) or settings.model_path
        await runtime.start(resolve_model_path(model))
    except Exception as error:
        logger.exception("Could not load the model from %s", settings.model_path)
        holder.fail(f"the model could not be loaded ({error}); see the server log")
        return
    holder.set(runtime.api)
    _point_rasa_http_api(app, runtime)
    if ctx.action_server is not None:  # "Ready" means custom actions answer too
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(ctx.action_server.ready.wait(), ACTION_SERVER_WAIT_S)
    info = runtime.api.info
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    base = f"http://{host}:{settings.port}"
    where = (
        f"in {settings.assistant_workers} assistant worker process(es)"
        if settings.assistant_workers
        else "in the server process"
    )
    print(
        f"\nReady: model {info.name} loaded in {info.load_seconds:.1f} s {where}\n"
        f"  chat page:      {base}/chat\n"
        f"  agent console:  {base}/console\n"
        f"  health:         {base}/health\n",
        flush=True,
    )

    if settings.model_poll_seconds <= 0 or not settings.model_path.is_dir():
        return
    failed: str | None = None
    while True:
        await asyncio.sleep(settings.model_poll_seconds)
        promoted = None
        try:
            promoted = await live_model_file(settings, learning)
            if promoted is None or promoted.name in (runtime.api.info.name, failed):
                continue
            await _swap(app, runtime, promoted)
            failed = None
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("Could not swap to the promoted model; keeping the current one")
            failed = promoted.name if promoted else None


async def _swap(app: Sanic, runtime: AssistantRuntime, model_file: Path) -> None:
    """Serve ``model_file`` from now on (blue/green: see the runtime's ``swap``) and tell the
    agents' consoles its intents and responses."""
    was = runtime.api.info.name
    logger.info("Model %s was promoted; loading it next to %s", model_file.name, was)
    await runtime.swap(model_file)
    new = runtime.api
    ctx = app_context(app)
    ctx.assistant.set(new)
    _point_rasa_http_api(app, runtime)
    ctx.hub.publish(
        [
            ephemeral_event(
                "agents",
                "model",
                None,
                None,
                model=new.info.name,
                intents=sorted(new.intent_names()),
                responses=new.responses(),
            )
        ]
    )
    logger.info("Now serving model %s (was %s)", new.info.name, was)
    print(f"Hot swap: now serving model {new.info.name} (was {was})", flush=True)
    ctx.background.append(asyncio.create_task(_rescore_pending(ctx.learning, new)))


async def _rescore_pending(learning: LearningStore, assistant: AssistantApi) -> None:
    """Re-predict pending example candidates with the new live model (for low-value flags)."""
    try:
        scores = {}
        for candidate in await learning.candidates(["pending", "approved"]):
            if candidate.kind == "example" and candidate.text:
                parsed = await assistant.parse(candidate.text)
                scores[candidate.id] = top_intent(parsed)
        await learning.rescore(scores)
    except Exception:
        logger.exception("Could not re-score pending candidates with the new model")
