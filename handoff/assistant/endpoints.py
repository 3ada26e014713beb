"""Rasa's endpoint configuration (``endpoints.yml``), read as Rasa reads it, checked against
what ``handoff serve`` can honour.

The file is Rasa's own format, read with Rasa's reader, so ``${VARIABLE}`` is replaced from
the environment as Rasa does it: in values without quotes only (a variable that is not set, or
one in a quoted value, is refused here; Rasa would leave ``${...}`` in the URL). What each
section does here:

``action_endpoint``
    Custom actions run on that action server (rasa-sdk); honoured.
``nlg``
    Rasa's natural-language-generation server; honoured.
``event_broker``
    Every tracker event is published to it as Rasa publishes them (``pika``: RabbitMQ, the
    default when ``type`` is missing; ``kafka``; ``sql``; ``file``; or the module path of an
    ``EventBroker`` class of your own); honoured.
``tracker_store``
    The server keeps Rasa's trackers in its own database (beside ``HANDOFF_DATABASE_URL``'s,
    see :func:`handoff.assistant.tracker_database.tracker_database_url`). A ``sql`` tracker
    store naming that same database agrees and is accepted; anything else is refused.
``lock_store``
    ``in_memory`` agrees with one server process (no ``HANDOFF_REDIS_URL``); ``redis`` agrees
    with the Redis of ``HANDOFF_REDIS_URL`` (same host, port and database); else refused.
``models``, ``nlu``
    Refused: the server loads and swaps models itself (``HANDOFF_MODEL_PATH``, promotions),
    and intent guesses and handoff thresholds need the model's own NLU.

Any other top-level key is refused too (a typo would otherwise switch a section off).
:func:`read_endpoints` raises :class:`EndpointsError` with a message that says what to change.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from handoff.core.errors import HandoffError

__all__ = [
    "KNOWN_BROKER_TYPES",
    "EndpointsError",
    "RasaEndpoints",
    "check_agreement",
    "read_endpoints",
]

HONOURED = ("action_endpoint", "nlg", "event_broker", "tracker_store", "lock_store")
REFUSED = {
    "models": "handoff serve loads and swaps models itself (HANDOFF_MODEL_PATH, promotions); "
    "remove the models section",
    "nlu": "intent guesses and handoff thresholds need the model's own NLU; remove the nlu section",
}
KNOWN_BROKER_TYPES = ("pika", "kafka", "sql", "file")
"""Rasa's own event brokers; any other ``type`` must be the module path of a class."""
_UNSET_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_MODULE_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")


class EndpointsError(HandoffError, ValueError):
    """The endpoints file cannot be used; the message names the file, the section and the
    fix."""

    code = "invalid_endpoints"


@dataclass(frozen=True)
class RasaEndpoints:
    """The sections of an endpoints file, as Rasa's ``EndpointConfig`` objects (None: absent)."""

    path: Path | None
    action: Any = None
    nlg: Any = None
    event_broker: Any = None
    tracker_store: Any = None
    lock_store: Any = None

    @property
    def action_url(self) -> str | None:
        return None if self.action is None else str(self.action.url)

    def describe(self) -> list[str]:
        """One line per honoured section but the actions (see
        :func:`~handoff.assistant.action_server.plan_action_server`), for the start-up
        output."""
        lines = []
        if self.nlg is not None:
            lines.append(f"response generation (nlg): {self.nlg.url}")
        if self.event_broker is not None:
            lines.append(f"event broker: {self.event_broker.type or 'pika'}")
        return lines


def read_endpoints(path: Path | None) -> RasaEndpoints:
    """The endpoints in ``path`` (None, or no such file: none, as without the file).

    Raises :class:`EndpointsError` for malformed YAML, an unset environment variable, a
    section that is not a mapping, an unknown or refused section, an action or NLG endpoint
    without an http(s) ``url``, or an unknown event broker type."""
    if path is None or not path.exists():
        return RasaEndpoints(None)
    from rasa.shared.exceptions import RasaException
    from rasa.shared.utils.io import read_config_file
    from rasa.utils.endpoints import EndpointConfig

    try:
        content = read_config_file(str(path))
    except (RasaException, OSError, ValueError) as error:
        raise EndpointsError(f"{path}: cannot be read as Rasa's endpoints.yml: {error}") from None
    sections: dict[str, Any] = {}
    for key, value in content.items():
        if key in REFUSED:
            raise EndpointsError(f"{path}: section {key!r} is not supported: {REFUSED[key]}")
        if key not in HONOURED:
            known = ", ".join(HONOURED)
            raise EndpointsError(
                f"{path}: unknown section {key!r}; handoff serve reads {known} (check the spelling)"
            )
        if value is None:
            continue
        if not isinstance(value, dict):
            raise EndpointsError(
                f"{path}: section {key!r} must be a mapping (e.g. url: ...), not "
                f"{type(value).__name__}"
            )
        unset = sorted(set(_UNSET_VARIABLE.findall(repr(value))))
        if any(name in os.environ for name in unset):
            raise EndpointsError(
                f"{path}: section {key!r}: Rasa replaces ${{VARIABLE}} only in values without "
                f"quotes; write e.g. url: http://127.0.0.1:${{{unset[0]}}}/webhook"
            )
        if unset:
            raise EndpointsError(
                f"{path}: section {key!r} uses environment variable(s) {', '.join(unset)}, "
                "which are not set; set them or write the value in the file"
            )
        sections[key] = EndpointConfig.from_dict(value)
    endpoints = RasaEndpoints(
        path,
        action=sections.get("action_endpoint"),
        nlg=sections.get("nlg"),
        event_broker=sections.get("event_broker"),
        tracker_store=sections.get("tracker_store"),
        lock_store=sections.get("lock_store"),
    )
    for name, endpoint in (("action_endpoint", endpoints.action), ("nlg", endpoints.nlg)):
        if endpoint is not None:
            _require_http_url(path, name, endpoint.url)
    if endpoints.event_broker is not None:
        _check_broker_type(path, endpoints.event_broker.type)
    return endpoints


def _require_http_url(path: Path, section: str, url: Any) -> None:
    parts = urlsplit(str(url or ""))
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise EndpointsError(
            f"{path}: {section} needs an http(s) url, e.g. url: http://127.0.0.1:5055/webhook "
            f"(got {url!r})"
        )


def _check_broker_type(path: Path, broker_type: Any) -> None:
    if broker_type is None or str(broker_type).lower() in KNOWN_BROKER_TYPES:
        return
    if not _MODULE_PATH.fullmatch(str(broker_type)):
        raise EndpointsError(
            f"{path}: unknown event_broker type {broker_type!r}; use one of "
            f"{', '.join(KNOWN_BROKER_TYPES)} or the module path of an EventBroker class "
            "(e.g. mypackage.brokers.MyBroker)"
        )
    from rasa.core.brokers.broker import EventBroker
    from rasa.shared.utils.common import class_from_module_path

    try:
        found = class_from_module_path(str(broker_type))
    except (ImportError, AttributeError) as error:
        raise EndpointsError(
            f"{path}: event_broker type {broker_type!r} cannot be imported ({error}); "
            f"use one of {', '.join(KNOWN_BROKER_TYPES)} or an importable class"
        ) from None
    if not (isinstance(found, type) and issubclass(found, EventBroker)):
        raise EndpointsError(f"{path}: event_broker type {broker_type!r} is not an EventBroker")


def check_agreement(
    endpoints: RasaEndpoints, *, tracker_database_url: str, redis_url: str | None
) -> None:
    """Refuse ``tracker_store``, ``lock_store`` and a SQL event broker that disagree with the
    server's own settings (:class:`EndpointsError` says what to change)."""
    path = endpoints.path
    store = endpoints.tracker_store
    if store is not None:
        wanted = _same_database(_rasa_sql_url(store), tracker_database_url)
        if (store.type or "").lower() != "sql" or not wanted:
            raise EndpointsError(
                f"{path}: tracker_store: handoff serve keeps Rasa's trackers in SQL, in "
                f"{_safe(tracker_database_url)} (derived from HANDOFF_DATABASE_URL); remove "
                "the tracker_store section or make it type: sql naming that database"
            )
    lock = endpoints.lock_store
    if lock is not None:
        lock_type = (lock.type or "in_memory").lower()
        if redis_url is None and lock_type != "in_memory":
            raise EndpointsError(
                f"{path}: lock_store: type {lock_type!r} needs several server processes, "
                "which share Redis: set HANDOFF_REDIS_URL to it (and HANDOFF_DATABASE_URL to "
                "PostgreSQL), or remove the lock_store section"
            )
        if redis_url is not None and not (lock_type == "redis" and _same_redis(lock, redis_url)):
            raise EndpointsError(
                f"{path}: lock_store: with HANDOFF_REDIS_URL={_safe(redis_url)} the server "
                "uses Rasa's Redis lock store on that Redis; make lock_store type: redis with "
                "the same host, port and db, or remove the section"
            )
    broker = endpoints.event_broker
    if (
        broker is not None
        and (broker.type or "").lower() == "sql"
        and _same_database(_rasa_sql_url(broker, default_db="events.db"), tracker_database_url)
    ):
        raise EndpointsError(
            f"{path}: event_broker: the SQL event broker writes an 'events' table, which "
            "in the trackers' database would be Rasa's tracker table; give it a "
            "database of its own (db: ...)"
        )


def _rasa_sql_url(endpoint: Any, default_db: str = "rasa.db") -> str:
    """The SQLAlchemy URL a Rasa SQL tracker store or event broker builds from its section."""
    from rasa.core.tracker_store import SQLTrackerStore

    kwargs = dict(endpoint.kwargs)
    url = SQLTrackerStore.get_db_url(
        dialect=kwargs.get("dialect", "sqlite"),
        host=endpoint.url,
        port=kwargs.get("port"),
        db=kwargs.get("db", default_db),
        username=kwargs.get("username"),
        password=kwargs.get("password"),
        login_db=kwargs.get("login_db"),
        query=kwargs.get("query"),
    )
    return str(url)


def _same_database(first: str, second: str) -> bool:
    from sqlalchemy.engine import make_url

    a, b = make_url(first), make_url(second)
    if a.get_backend_name() != b.get_backend_name():
        return False
    if a.get_backend_name() == "sqlite":
        return (
            bool(a.database)
            and Path(a.database or "").resolve() == Path(b.database or "").resolve()
        )
    return (a.host, a.port or 5432, a.database) == (b.host, b.port or 5432, b.database)


def _same_redis(lock: Any, redis_url: str) -> bool:
    parts = urlsplit(redis_url)
    local = {"localhost", "127.0.0.1", "::1"}
    host, wanted = str(lock.url or "localhost"), parts.hostname or "localhost"
    kwargs = dict(lock.kwargs)
    return (
        (host == wanted or (host in local and wanted in local))
        and int(kwargs.get("port", 6379)) == (parts.port or 6379)
        and int(kwargs.get("db", 0)) == int((parts.path or "/0").lstrip("/") or 0)
    )


def _safe(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url
