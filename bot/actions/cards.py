"""A small demo table of the customer's cards: which are active, which are frozen, and why.

One table, ``cards``: ``last4`` (the last four digits, the key), ``card_type`` (``debit`` or
``credit``), ``status`` (``active`` or ``frozen``), ``frozen_reason`` (``lost``: frozen by the
assistant after a loss report; ``app``: frozen by the customer in the app; NULL when active)
and ``updated_at`` (Unix time of the last change).

The database is the one at the URL in the environment variable ``LARKSPUR_CARDS_DATABASE_URL``
(read at every call, so tests can point it elsewhere), by default the SQLite file
``var/larkspur-cards.db`` under the repository root. The table is created and seeded with three
demo cards on first use, idempotently, also when two processes start at the same time.

Every function here blocks on the database: call them from async code with
:func:`asyncio.to_thread`.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

__all__ = [
    "DATABASE_URL_VARIABLE",
    "DEFAULT_DATABASE_PATH",
    "SEED_CARDS",
    "Card",
    "CardType",
    "FreezeResult",
    "FrozenReason",
    "UnfreezeResult",
    "database_url",
    "dispose_engines",
    "ensure_database",
    "find",
    "freeze",
    "unfreeze",
]

CardType = Literal["debit", "credit"]
FrozenReason = Literal["lost", "app"]
FreezeResult = Literal["frozen", "already_frozen", "unknown_card"]
UnfreezeResult = Literal["unfrozen", "not_frozen", "needs_person", "unknown_card"]

DATABASE_URL_VARIABLE = "LARKSPUR_CARDS_DATABASE_URL"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATABASE_PATH = REPO_ROOT / "var" / "larkspur-cards.db"
SQLITE_BUSY_TIMEOUT_S = 15.0
"""How long a SQLite connection waits for another process's write lock before failing."""

SEED_CARDS: tuple[dict[str, Any], ...] = (
    {"last4": "4242", "card_type": "debit", "status": "active", "frozen_reason": None},
    {"last4": "1881", "card_type": "credit", "status": "active", "frozen_reason": None},
    {"last4": "7310", "card_type": "debit", "status": "frozen", "frozen_reason": "app"},
)
"""The demo cards a new (empty) table starts with."""

metadata = sa.MetaData()
cards = sa.Table(
    "cards",
    metadata,
    sa.Column("last4", sa.Text, primary_key=True),
    sa.Column("card_type", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("frozen_reason", sa.Text, nullable=True),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.CheckConstraint("card_type IN ('debit', 'credit')", name="ck_cards_card_type"),
    sa.CheckConstraint("status IN ('active', 'frozen')", name="ck_cards_status"),
    sa.CheckConstraint(
        "frozen_reason IS NULL OR frozen_reason IN ('lost', 'app')",
        name="ck_cards_frozen_reason",
    ),
)


@dataclass(frozen=True)
class Card:
    """One row of the ``cards`` table."""

    last4: str
    card_type: str
    status: str
    frozen_reason: str | None
    updated_at: float

    @property
    def frozen(self) -> bool:
        return self.status == "frozen"


_engines: dict[str, Engine] = {}
_ready: set[str] = set()
_lock = threading.Lock()


def database_url() -> str:
    """The database URL: ``$LARKSPUR_CARDS_DATABASE_URL``, or the SQLite file under ``var/``."""
    return os.environ.get(DATABASE_URL_VARIABLE) or f"sqlite:///{DEFAULT_DATABASE_PATH}"


def _create_engine(url: str) -> Engine:
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(url, future=True, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    # The driver's `timeout` is SQLite's busy timeout.
    return sa.create_engine(url, future=True, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})


def _seed_statement(connection: Connection) -> Any:
    """INSERT of the seed rows that skips rows whose key exists (INSERT OR IGNORE)."""
    rows = [{**row, "updated_at": time.time()} for row in SEED_CARDS]
    dialect = connection.dialect.name
    if dialect == "sqlite":
        return sqlite.insert(cards).values(rows).on_conflict_do_nothing()
    if dialect == "postgresql":
        return postgresql.insert(cards).values(rows).on_conflict_do_nothing()
    raise NotImplementedError(f"the cards table supports SQLite and PostgreSQL, not {dialect}")


def _create_and_seed(engine: Engine) -> None:
    try:
        metadata.create_all(engine, checkfirst=True)
    except sa.exc.DBAPIError:
        # Another process created the table between our check and our CREATE TABLE.
        if not sa.inspect(engine).has_table(cards.name):
            raise
    with engine.begin() as connection:
        count = connection.execute(sa.select(sa.func.count()).select_from(cards)).scalar_one()
        if count == 0:
            connection.execute(_seed_statement(connection))


def ensure_database(url: str | None = None) -> Engine:
    """The engine for ``url`` (default :func:`database_url`), its table created and seeded.

    Idempotent and safe when several processes start together: the table is created if missing,
    and the seed cards are inserted only into an empty table, skipping any row that another
    process inserted meanwhile. Engines are kept per URL for the life of the process."""
    url = url or database_url()
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = _create_engine(url)
        if url not in _ready:
            _create_and_seed(engine)
            _ready.add(url)
    return engine


def dispose_engines() -> None:
    """Close every engine's connections and forget them (tests; a process shutting down)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _ready.clear()


def _row_to_card(row: Any) -> Card:
    return Card(
        last4=str(row.last4),
        card_type=str(row.card_type),
        status=str(row.status),
        frozen_reason=None if row.frozen_reason is None else str(row.frozen_reason),
        updated_at=float(row.updated_at),
    )


def _find(connection: Connection, last4: str) -> Card | None:
    row = connection.execute(sa.select(cards).where(cards.c.last4 == last4)).first()
    return None if row is None else _row_to_card(row)


def find(last4: str) -> Card | None:
    """The card whose last four digits are ``last4``, or None if there is no such card."""
    with ensure_database().connect() as connection:
        return _find(connection, last4)


def freeze(last4: str, reason: FrozenReason) -> FreezeResult:
    """Freeze the card ending in ``last4`` for ``reason``.

    Returns ``frozen`` (it was active and is frozen now), ``already_frozen`` (nothing to do) or
    ``unknown_card``. A frozen card reported lost keeps its status but its reason becomes
    ``lost`` (a loss report outranks a freeze in the app): from then on only a person may
    unfreeze it (see :func:`unfreeze`)."""
    now = time.time()
    with ensure_database().begin() as connection:
        changed = connection.execute(
            sa.update(cards)
            .where(cards.c.last4 == last4, cards.c.status == "active")
            .values(status="frozen", frozen_reason=reason, updated_at=now)
        ).rowcount
        if changed:
            return "frozen"
        card = _find(connection, last4)
        if card is None:
            return "unknown_card"
        if reason == "lost" and card.frozen_reason != "lost":
            connection.execute(
                sa.update(cards)
                .where(cards.c.last4 == last4)
                .values(frozen_reason="lost", updated_at=now)
            )
        return "already_frozen"


def unfreeze(last4: str) -> UnfreezeResult:
    """Unfreeze the card ending in ``last4`` if the customer froze it in the app.

    Returns ``unfrozen``, ``not_frozen`` (it is active), ``unknown_card``, or ``needs_person``
    for a card frozen for any other reason (reported lost: it may be in someone else's hands,
    so only a member of staff may unfreeze it, after security questions); such a card is left
    frozen."""
    with ensure_database().begin() as connection:
        changed = connection.execute(
            sa.update(cards)
            .where(
                cards.c.last4 == last4,
                cards.c.status == "frozen",
                cards.c.frozen_reason == "app",
            )
            .values(status="active", frozen_reason=None, updated_at=time.time())
        ).rowcount
        if changed:
            return "unfrozen"
        card = _find(connection, last4)
        if card is None:
            return "unknown_card"
        return "needs_person" if card.frozen else "not_frozen"
