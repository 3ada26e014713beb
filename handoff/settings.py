"""Server settings, read once from ``HANDOFF_*`` environment variables and an optional TOML file.

Precedence, highest first: environment variables, the TOML file named by ``HANDOFF_CONFIG``
(or passed to :func:`load_settings`), the defaults below. Every setting is documented in the
README's "Configuration" table; keep the two in step.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import tomli

from handoff.core.errors import HandoffError

__all__ = ["PROJECT_ROOT", "Settings", "SettingsError", "load_settings"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
"""The repository root: bundled bot files, training data and default state live below it."""

ENV_PREFIX = "HANDOFF_"
CONFIG_FILE_VARIABLE = "HANDOFF_CONFIG"
MAX_APPROVAL_TIMEOUT_S = 120.0
"""Longer than this, a user waiting for a held answer would think the chat is broken."""
MAX_ASSISTANT_WORKERS = 16
"""More workers than this would not fit one machine's memory (each holds a model)."""


class SettingsError(HandoffError, ValueError):
    """A setting has a value that cannot be used; the message names the setting and the fix."""

    code = "invalid_setting"


@dataclass(frozen=True)
class Settings:
    """Everything the server needs to know about its environment. Immutable once read."""

    host: str = "127.0.0.1"
    port: int = 5005
    model_path: Path = PROJECT_ROOT / "models"
    """A model archive (``.tar.gz``) or a folder: then its newest archive is served."""
    database_url: str = f"sqlite:///{PROJECT_ROOT / 'var' / 'handoff.db'}"
    """SQLAlchemy URL of the database that holds Rasa's tracker store (and our own tables)."""
    fallback_threshold: float | None = None
    """The handoff threshold for every model; None: the one ``handoff train`` chose for the
    model (for ``target_precision``), else the model's FallbackClassifier threshold."""
    target_precision: float = 0.95
    """``handoff train`` sets a model's handoff threshold as low as the held-out set allows
    while the bot's own answers stay this precise (share with the right intent)."""
    max_message_chars: int = 2000
    """Longest user message accepted, in characters."""
    websocket_ping_timeout: int = 20
    """A websocket whose client has not answered the server's ping (sent every 20 s) within
    this many seconds is closed; clients reconnect and resume."""
    rasa_api_token: str | None = None
    """Enables Rasa's own HTTP API (without model loading or training routes) under this token;
    needs ``assistant_workers = 0`` (Rasa's handlers call the model in this process)."""
    assistant_workers: int = 1
    """Assistant worker processes (each loads the model: about 1.4 GiB). 0: the model runs in
    the server process itself, as Rasa's HTTP API needs; a hot swap then stalls replies."""
    assistant_worker_module: str = "handoff.assistant.worker_process"
    """The module each worker runs (``python -m``); benchmarks put a worker with no model here
    (``benchmarks.null_worker``) to measure the server process alone."""
    log_level: str = "INFO"
    allowed_origins: tuple[str, ...] = ()
    """Origins allowed to open the agent websocket and call the agent API; empty: the
    server's own address (http://HOST:PORT, and localhost/127.0.0.1 aliases)."""
    handoff_intents: tuple[str, ...] = ("human_handoff",)
    """Intents by which the user asks for a person."""
    always_human_intents: tuple[str, ...] = ("report_fraud",)
    """Intents that always go to a person."""
    intent_thresholds: tuple[tuple[str, float], ...] = ()
    """Stricter per-intent confidence thresholds, e.g. ``close_account=0.85``."""
    fallbacks_before_handoff: int = 1
    """Low-confidence messages in a row before the handoff (1: the first one)."""
    user_rate_per_second: float = 5.0
    user_rate_burst: int = 20
    agent_rate_per_second: float = 20.0
    agent_rate_burst: int = 60
    event_retention_hours: float = 72.0
    """Events older than this are deleted; clients reconnecting from before get a resync."""
    project_dir: Path | None = None
    """Another Rasa 3.x project to serve instead of the bundled one, laid out as ``rasa
    init`` makes it (``config.yml``, ``domain.yml`` or ``domain/``, ``data/``,
    ``endpoints.yml``, ``actions/``). It sets the defaults of ``bot_dir`` (the project),
    ``data_dir`` (its ``data/``), ``test_data`` (its ``tests/heldout_nlu.yml``),
    ``model_path`` (its ``models/``) and ``database_url`` (its ``.handoff/handoff.db``);
    each of those set explicitly still wins."""
    bot_dir: Path = PROJECT_ROOT / "bot"
    """The assistant's ``config.yml``, domain (a ``domain/`` folder or a ``domain.yml``; what
    ``handoff export`` learns goes to ``domain/learned.yml`` or ``domain.learned.yml``),
    ``endpoints.yml`` and custom actions (``actions/``)."""
    endpoints_file: Path | None = None
    """Rasa's ``endpoints.yml`` (custom actions, event broker; see docs/deploy.md); None: the
    one in ``bot_dir``, if there is one."""
    action_server: str = "auto"
    """``auto``: ``handoff serve`` starts, watches and stops the project's action server
    (``bot_dir/actions``, rasa-sdk) when endpoints.yml's ``action_endpoint`` is on this
    machine; ``off``: you run the action server yourself."""
    data_dir: Path = PROJECT_ROOT / "data"
    """Training data; ``handoff export`` writes into its ``learned/`` folder."""
    test_data: Path = PROJECT_ROOT / "tests" / "data" / "heldout_nlu.yml"
    """Held-out NLU examples new and live models are compared on; never exported into."""
    promotion_margin: float = 0.03
    """A new model is promoted unless its accuracy or macro-F1 is lower than the live model's
    by more than this. On the bundled 192-message test set one message is 0.5 points, and a
    retrain with one new intent moved accuracy by -1.6 and macro-F1 by -2.0 points."""
    verification_band: float = 0.15
    """Bot answers with confidence below the handoff threshold plus this are queued for
    verification by people."""
    approval_band: float = 0.0
    """Bot answers with confidence from the handoff threshold up to the threshold plus this
    wait for an online agent to approve, correct or replace them before the user sees them
    (0: off; see :mod:`handoff.core.approvals`); those that go out unchecked (nobody free,
    or in time) join the verification queue."""
    approval_timeout: float = 20.0
    """Seconds a held answer waits for an agent; then it is sent as it is (and queued for
    verification)."""
    approval_slots: int = 3
    """Held answers one agent is asked to decide at once; with every online agent full, answers
    are sent at once."""
    low_value_confidence: float = 0.9
    """Candidates the live model already predicts right with at least this confidence are
    marked low value in review."""
    redact_patterns: tuple[str, ...] = ()
    """Extra regular expressions whose matches the export replaces with ``<redacted>``."""
    model_poll_seconds: float = 5.0
    """How often the server checks for a newly promoted model (0: never, no hot swap)."""
    metrics_token: str | None = None
    """If set, ``/metrics`` requires ``Authorization: Bearer <token>``."""
    redis_url: str | None = None
    """Redis for several server processes: event hub (pub/sub), presence, conversation locks
    and Rasa's lock store. Unset: everything in-process (one server process)."""
    redis_namespace: str = "handoff"
    """Prefix of our Redis keys and channels (processes that share it are one deployment)."""
    sign_in_username_failures: int = 5
    """Wrong passwords in a row for one username that lock it out (see web.sign_in_throttle)."""
    sign_in_address_failures: int = 50
    """The same per client address; higher, since an office's agents may share one address."""
    sign_in_lockout_seconds: float = 30.0
    """The first lock-out; each further failure doubles it."""
    sign_in_max_lockout_seconds: float = 900.0
    """The longest lock-out."""
    sign_in_forget_seconds: float = 3600.0
    """A counter restarts after this long without sign-in attempts for its key."""

    def endpoints_path(self) -> Path | None:
        """The endpoints file in force: ``endpoints_file``, else ``bot_dir/endpoints.yml`` if
        it exists, else None (no custom actions, no event broker)."""
        if self.endpoints_file is not None:
            return self.endpoints_file
        default = self.bot_dir / "endpoints.yml"
        return default if default.exists() else None

    def origins(self) -> frozenset[str]:
        """The effective Origin allow list."""
        if self.allowed_origins:
            return frozenset(self.allowed_origins)
        hosts = {self.host, "localhost", "127.0.0.1"} - {"0.0.0.0", "::"}
        return frozenset(f"http://{host}:{self.port}" for host in hosts)


def _parse_float_or_none(raw: Any) -> float | None:
    return None if str(raw).strip() == "" else float(raw)


def _parse_str_or_none(raw: Any) -> str | None:
    return str(raw) or None


def _parse_list(raw: Any) -> tuple[str, ...]:
    items = raw if isinstance(raw, list) else str(raw).split(",")
    return tuple(str(item).strip() for item in items if str(item).strip())


def _parse_thresholds(raw: Any) -> tuple[tuple[str, float], ...]:
    if isinstance(raw, dict):
        pairs: list[tuple[str, Any]] = [(str(k), v) for k, v in raw.items()]
    else:
        pairs = []
        for item in _parse_list(raw):
            name, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"{item!r} is not intent=threshold")
            pairs.append((name.strip(), value))
    result = tuple((name, float(raw_value)) for name, raw_value in pairs)
    for name, threshold in result:
        if not 0 <= threshold <= 1:
            raise ValueError(f"threshold of {name} must be between 0 and 1")
    return result


def _parse_patterns(raw: Any) -> tuple[str, ...]:
    patterns = tuple(raw) if isinstance(raw, list) else tuple(p for p in str(raw).split("\n"))
    patterns = tuple(str(p) for p in patterns if str(p).strip())
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(f"{pattern!r} is not a regular expression: {error}") from None
    return patterns


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "host": str,
    "port": int,
    "model_path": lambda raw: Path(str(raw)),
    "database_url": str,
    "fallback_threshold": _parse_float_or_none,
    "target_precision": float,
    "max_message_chars": int,
    "websocket_ping_timeout": int,
    "rasa_api_token": _parse_str_or_none,
    "assistant_workers": int,
    "assistant_worker_module": str,
    "log_level": lambda raw: str(raw).upper(),
    "allowed_origins": _parse_list,
    "handoff_intents": _parse_list,
    "always_human_intents": _parse_list,
    "intent_thresholds": _parse_thresholds,
    "fallbacks_before_handoff": int,
    "user_rate_per_second": float,
    "user_rate_burst": int,
    "agent_rate_per_second": float,
    "agent_rate_burst": int,
    "event_retention_hours": float,
    "project_dir": lambda raw: Path(str(raw)).expanduser().resolve() if str(raw) else None,
    "bot_dir": lambda raw: Path(str(raw)),
    "endpoints_file": lambda raw: Path(str(raw)) if str(raw) else None,
    "action_server": lambda raw: str(raw).strip().lower(),
    "data_dir": lambda raw: Path(str(raw)),
    "test_data": lambda raw: Path(str(raw)),
    "promotion_margin": float,
    "verification_band": float,
    "approval_band": float,
    "approval_timeout": float,
    "approval_slots": int,
    "low_value_confidence": float,
    "redact_patterns": _parse_patterns,
    "model_poll_seconds": float,
    "metrics_token": _parse_str_or_none,
    "redis_url": _parse_str_or_none,
    "redis_namespace": str,
    "sign_in_username_failures": int,
    "sign_in_address_failures": int,
    "sign_in_lockout_seconds": float,
    "sign_in_max_lockout_seconds": float,
    "sign_in_forget_seconds": float,
}


def load_settings(
    environ: Mapping[str, str] | None = None,
    config_file: Path | None = None,
    **overrides: Any,
) -> Settings:
    """Build :class:`Settings` from a TOML file, the environment and explicit overrides.

    ``overrides`` (e.g. command-line options) win over everything; ``None`` values are ignored.
    Raises :class:`SettingsError` naming the offending setting.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}

    config_path = config_file or (
        Path(environ[CONFIG_FILE_VARIABLE]) if environ.get(CONFIG_FILE_VARIABLE) else None
    )
    if config_path is not None:
        values.update(_read_config_file(config_path))

    for name, parse in _PARSERS.items():
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is not None:
            values[name] = _parse(
                name, raw, parse, f"environment variable {ENV_PREFIX}{name.upper()}"
            )

    values.update({k: v for k, v in overrides.items() if v is not None})
    project = values.get("project_dir")
    if project is not None:
        for name, default in _project_defaults(project).items():
            values.setdefault(name, default)
    settings = Settings(**values)
    _validate(settings)
    return settings


def _project_defaults(project: Path) -> dict[str, Any]:
    """Where a Rasa project's parts are, unless set one by one (see ``project_dir``)."""
    return {
        "bot_dir": project,
        "data_dir": project / "data",
        "test_data": project / "tests" / "heldout_nlu.yml",
        "model_path": project / "models",
        "database_url": f"sqlite:///{project / '.handoff' / 'handoff.db'}",
    }


def _parse(name: str, raw: Any, parse: Callable[[str], Any], source: str) -> Any:
    try:
        return parse(raw)
    except (ValueError, TypeError) as error:
        raise SettingsError(f"{source}: cannot read {raw!r} as {name} ({error})") from None


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        document = tomli.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SettingsError(f"config file {path} does not exist") from None
    except tomli.TOMLDecodeError as error:
        raise SettingsError(f"config file {path} is not valid TOML: {error}") from None
    known = {f.name for f in fields(Settings)}
    unknown = sorted(set(document) - known)
    if unknown:
        raise SettingsError(
            f"config file {path}: unknown setting(s) {', '.join(unknown)}; "
            f"known settings are {', '.join(sorted(known))}"
        )
    return {
        name: _parse(name, raw, _PARSERS[name], f"config file {path}")
        for name, raw in document.items()
    }


def _validate(settings: Settings) -> None:
    if not 1 <= settings.port <= 65535:
        raise SettingsError(f"port must be between 1 and 65535, got {settings.port}")
    if settings.log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise SettingsError(
            f"log_level must be DEBUG, INFO, WARNING or ERROR, got {settings.log_level!r}"
        )
    if settings.fallback_threshold is not None and not 0.0 <= settings.fallback_threshold <= 1.0:
        raise SettingsError(
            f"fallback_threshold must be between 0 and 1, got {settings.fallback_threshold}"
        )
    if not 0.0 < settings.target_precision <= 1.0:
        raise SettingsError(
            f"target_precision must be above 0 and at most 1, got {settings.target_precision}"
        )
    if settings.fallbacks_before_handoff < 1:
        raise SettingsError("fallbacks_before_handoff must be at least 1")
    if min(settings.user_rate_per_second, settings.agent_rate_per_second) <= 0:
        raise SettingsError("rate limits must be positive")
    if settings.max_message_chars < 1:
        raise SettingsError("max_message_chars must be at least 1")
    if settings.websocket_ping_timeout <= 0:
        raise SettingsError("websocket_ping_timeout must be positive")
    if not 0 <= settings.promotion_margin <= 1:
        raise SettingsError("promotion_margin must be between 0 and 1")
    if not 0 <= settings.verification_band <= 1:
        raise SettingsError("verification_band must be between 0 and 1")
    if not 0 <= settings.approval_band <= 1:
        raise SettingsError("approval_band must be between 0 (off) and 1")
    if not 0 < settings.approval_timeout <= MAX_APPROVAL_TIMEOUT_S:
        raise SettingsError(
            f"approval_timeout must be above 0 and at most {MAX_APPROVAL_TIMEOUT_S:.0f} "
            "seconds (a user waits that long for an answer)"
        )
    if settings.approval_slots < 1:
        raise SettingsError("approval_slots must be at least 1")
    if not 0 < settings.low_value_confidence <= 1:
        raise SettingsError("low_value_confidence must be between 0 (excluded) and 1")
    if not 0 <= settings.assistant_workers <= MAX_ASSISTANT_WORKERS:
        raise SettingsError(
            f"assistant_workers must be between 0 and {MAX_ASSISTANT_WORKERS}, "
            f"got {settings.assistant_workers}"
        )
    if not re.fullmatch(
        r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", settings.assistant_worker_module
    ):
        raise SettingsError(
            f"assistant_worker_module {settings.assistant_worker_module!r} is not a module name"
        )
    if settings.rasa_api_token and settings.assistant_workers:
        raise SettingsError(
            "rasa_api_token (Rasa's HTTP API) needs the model in the server process: "
            "set HANDOFF_ASSISTANT_WORKERS=0 as well"
        )
    if settings.model_poll_seconds < 0:
        raise SettingsError("model_poll_seconds must be 0 (no hot swap) or positive")
    if settings.redis_url is not None and not settings.redis_url.startswith(
        ("redis://", "rediss://", "unix://")
    ):
        raise SettingsError(
            f"redis_url {settings.redis_url!r} is not a Redis URL; use e.g. redis://127.0.0.1:6379/0"
        )
    if settings.redis_url is not None and settings.database_url.startswith("sqlite"):
        raise SettingsError(
            "redis_url is for several server processes, which need a shared database: "
            "set database_url to PostgreSQL (postgresql://...) as well"
        )
    if min(settings.sign_in_username_failures, settings.sign_in_address_failures) < 1:
        raise SettingsError("sign_in_username_failures and sign_in_address_failures must be 1+")
    if not 0 < settings.sign_in_lockout_seconds <= settings.sign_in_max_lockout_seconds:
        raise SettingsError(
            "sign_in_lockout_seconds must be positive and at most sign_in_max_lockout_seconds"
        )
    if settings.sign_in_forget_seconds < settings.sign_in_max_lockout_seconds:
        raise SettingsError(
            "sign_in_forget_seconds must be at least sign_in_max_lockout_seconds, or a lock-out "
            "would outlast the failures that caused it"
        )
    if settings.project_dir is not None and not (settings.project_dir / "config.yml").is_file():
        raise SettingsError(
            f"project_dir {settings.project_dir} is not a Rasa project: it has no config.yml "
            "(point HANDOFF_PROJECT_DIR at the folder `rasa init` made)"
        )
    if settings.action_server not in ("auto", "off"):
        raise SettingsError(
            f"action_server must be auto (handoff serve starts the project's action server) "
            f"or off (you run it), got {settings.action_server!r}"
        )
    if "://" not in settings.database_url:
        raise SettingsError(
            f"database_url {settings.database_url!r} is not a SQLAlchemy URL; "
            "use e.g. sqlite:///var/handoff.db or postgresql://user@host/db"
        )
