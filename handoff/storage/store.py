"""Our persistent state behind one async repository: agents, sessions, conversations, handoffs,
messages, labels and the event log that clients resume from.

Rows come out as plain dataclasses (:mod:`.records`). Each public method is one transaction;
the caller never sees a half-written change. SQLite (default) runs in WAL mode with a busy
timeout; PostgreSQL works by URL. Accounts and sessions live in :mod:`.accounts`, mixed into
:class:`Store`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Coroutine, Sequence
from types import SimpleNamespace
from typing import Any, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from handoff.core import json_codec
from handoff.core.routing import Conversation, State
from handoff.storage import schema
from handoff.storage.accounts import Accounts
from handoff.storage.inline_sqlite import InlineConnection, InlineEngine, inline_sqlite_engine
from handoff.storage.records import (
    ConcurrentUpdate,
    Event,
    Message,
    NewEvent,
    QueuedConversation,
    StoredConversation,
    event_from_row,
    message_from_row,
    stored_from_row,
)

T = TypeVar("T")

__all__ = ["ASYNC_DRIVERS", "EVENT_ORDER_LOCK", "SQLITE_BUSY_TIMEOUT_S", "Store", "async_url"]

SQLITE_BUSY_TIMEOUT_S = 10.0

ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


def async_url(database_url: str) -> str:
    """The same database with an asyncio driver (``sqlite`` -> ``sqlite+aiosqlite``)."""
    url = make_url(database_url)
    backend = url.get_backend_name()
    if backend not in ASYNC_DRIVERS:
        raise ValueError(f"unsupported database {backend!r}; use sqlite or postgresql")
    return str(url.set(drivername=ASYNC_DRIVERS[backend]))


# Statements on the relay path, built once: building and cache-keying a statement with its
# values inlined cost more than running it on SQLite. Parameters are passed at execution.
_SELECT_CONVERSATION = schema.conversations.select().where(
    schema.conversations.c.id == sa.bindparam("b_conversation_id")
)
_SELECT_MESSAGE_BY_CLIENT_ID = schema.messages.select().where(
    schema.messages.c.conversation_id == sa.bindparam("b_conversation_id"),
    schema.messages.c.sender == sa.bindparam("b_sender"),
    schema.messages.c.client_message_id == sa.bindparam("b_client_message_id"),
)
_INSERT_MESSAGE = schema.messages.insert()
_INSERT_EVENT = schema.events.insert()
_SET_INTENT_RANKING = (
    schema.messages.update()
    .where(schema.messages.c.id == sa.bindparam("b_message_id"))
    .values(intent_ranking=sa.bindparam("b_ranking"))
)
_MARK_FIRST_AGENT_REPLY = (
    schema.handoffs.update()
    .where(
        schema.handoffs.c.id == sa.bindparam("b_handoff_id"),
        schema.handoffs.c.first_agent_reply_at.is_(None),
    )
    .values(first_agent_reply_at=sa.bindparam("b_at"))
)


class Store(Accounts):
    """The repository. Open with :meth:`open`, close with :meth:`close`. Agent and session
    methods come from :class:`~handoff.storage.accounts.Accounts`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @classmethod
    async def open(cls, database_url: str) -> Store:
        """Connect (the schema must be migrated already: see :mod:`handoff.storage.migrate`)."""
        if make_url(database_url).get_backend_name() == "sqlite":
            # One connection, used inline on the loop (see .inline_sqlite): SQLite has
            # one writer at a time anyway, and several connections of ours would wait on each
            # other in SQLite's busy handler (milliseconds each).
            inline = inline_sqlite_engine(database_url, SQLITE_BUSY_TIMEOUT_S)
            return cls(cast(AsyncEngine, inline))
        engine = create_async_engine(async_url(database_url), pool_pre_ping=True)
        return cls(engine)

    async def close(self) -> None:
        await self.engine.dispose()

    @property
    def concurrent_writers(self) -> bool:
        """True when transactions can commit concurrently (PostgreSQL): live connections must
        then read events from the database in id order instead of taking them from the hub."""
        return bool(self.engine.dialect.name == "postgresql")

    # Conversations ------------------------------------------------------------------------

    async def conversation(self, conversation_id: str) -> StoredConversation:
        """The conversation's routing state (a new conversation is in state BOT)."""
        async with self.engine.connect() as db:
            return await _load_conversation(db, conversation_id)

    async def assigned_conversations(self, agent_id: int) -> list[StoredConversation]:
        return await self._conversations_where(
            schema.conversations.c.state == State.ASSIGNED.value,
            schema.conversations.c.agent_id == agent_id,
        )

    async def _conversations_where(self, *conditions: Any) -> list[StoredConversation]:
        query = (
            schema.conversations.select()
            .where(*conditions)
            .order_by(schema.conversations.c.updated_at)
        )
        async with self.engine.connect() as db:
            rows = await db.execute(query)
        return [stored_from_row(row) for row in rows]

    async def save_conversation(
        self,
        before: StoredConversation,
        after: Conversation,
        *,
        events: Sequence[NewEvent] = (),
        fallback_streak: int | None = None,
        handoff_update: dict[str, Any] | None = None,
        new_handoff: bool = False,
        assignment: tuple[int | None, int | None] | None = None,
    ) -> tuple[StoredConversation, list[Event]]:
        """Write a transition atomically if nobody changed the conversation since ``before``.

        ``new_handoff`` opens a handoff row; ``handoff_update`` sets columns of the open one
        (e.g. ``claimed_at``); ``assignment`` is ``(new_agent_id, previous_agent_id)``.
        Raises :class:`ConcurrentUpdate` when ``before.version`` is stale: nothing is written.
        """
        now = time.time()
        async with self.engine.begin() as db:
            handoff_id = before.handoff_id
            if new_handoff:
                result = await db.execute(
                    schema.handoffs.insert().values(
                        conversation_id=after.id,
                        reason=after.handoff_reason or "unknown",
                        queued_at=now,
                    )
                )
                handoff_id = result.inserted_primary_key[0]
            if handoff_update and handoff_id is not None:
                await db.execute(
                    schema.handoffs.update()
                    .where(schema.handoffs.c.id == handoff_id)
                    .values(**handoff_update)
                )
            if assignment and handoff_id is not None:
                new_agent, previous_agent = assignment
                if previous_agent is not None:
                    await db.execute(
                        schema.assignments.update()
                        .where(
                            schema.assignments.c.handoff_id == handoff_id,
                            schema.assignments.c.agent_id == previous_agent,
                            schema.assignments.c.released_at.is_(None),
                        )
                        .values(released_at=now)
                    )
                if new_agent is not None:
                    await db.execute(
                        schema.assignments.insert().values(
                            handoff_id=handoff_id, agent_id=new_agent, assigned_at=now
                        )
                    )
            open_handoff = handoff_id if after.state in (State.QUEUED, State.ASSIGNED) else None
            values = {
                "state": after.state.value,
                "agent_id": after.agent_id,
                "handoff_id": open_handoff,
                "handoff_reason": after.handoff_reason,
                "fallback_streak": (
                    before.fallback_streak if fallback_streak is None else fallback_streak
                ),
                "version": before.version + 1,
                "updated_at": now,
            }
            if before.version == 0 and not await _exists(db, after.id):
                await db.execute(schema.conversations.insert().values(id=after.id, **values))
            else:
                result = await db.execute(
                    schema.conversations.update()
                    .where(
                        schema.conversations.c.id == after.id,
                        schema.conversations.c.version == before.version,
                    )
                    .values(**values)
                )
                if result.rowcount != 1:
                    raise ConcurrentUpdate(after.id)
            written = [await _append_event(db, event, now) for event in events]
            stored = await _load_conversation(db, after.id)
        return stored, written

    # Messages, labels, events ---------------------------------------------------------------

    async def add_message(
        self,
        conversation_id: str,
        sender: str,
        text: str,
        *,
        handoff_id: int | None = None,
        agent_id: int | None = None,
        client_message_id: str | None = None,
        response_name: str | None = None,
        events: Sequence[NewEvent] = (),
        events_for: Callable[[Message], Sequence[NewEvent]] | None = None,
        first_reply_of: int | None = None,
        publish: Callable[[list[Event]], None] | None = None,
    ) -> tuple[Message, bool, list[Event]]:
        """Store a message and its events in one transaction; return (message, created,
        events).

        ``events`` get the new message's id as ``message_id``; ``events_for(message)``, called
        once the message is stored, gives more events that need the whole message (written
        after ``events``). ``first_reply_of``: the handoff whose first agent reply this may be
        (as :meth:`mark_first_agent_reply`). ``publish(events)`` is called with the written
        events right after the commit, before this returns: events reach live connections
        in id order only when published there (the hub). With a ``client_message_id``
        already stored for this conversation and sender, nothing is written and the earlier
        message comes back with ``created=False``.
        """
        now = time.time()

        async def write(db: AsyncConnection) -> tuple[Message, bool, list[Event]] | None:
            values: dict[str, Any] = {
                "conversation_id": conversation_id,
                "handoff_id": handoff_id,
                "sender": sender,
                "agent_id": agent_id,
                "client_message_id": client_message_id,
                "text": text,
                "intent_ranking": None,
                "response_name": response_name,
                "created_at": now,
                "turn": None,
            }
            try:
                message_id = await _insert_message(db, values)
            except sa.exc.IntegrityError:
                return None
            if message_id is None:  # this client id is stored: that message, nothing written
                assert client_message_id is not None
                existing = await _message_by_client_id(
                    db, conversation_id, sender, client_message_id
                )
                assert existing is not None
                return existing, False, []
            enriched = [
                NewEvent(
                    e.audience,
                    e.type,
                    {**e.payload, "message_id": message_id},
                    e.conversation_id,
                    e.agent_id,
                )
                for e in events
            ]
            message = Message(id=message_id, **values)
            if events_for is not None:
                enriched.extend(events_for(message))
            written = [await _append_event(db, event, now) for event in enriched]
            if first_reply_of is not None:
                await _mark_first_agent_reply(db, first_reply_of, now)
            return message, True, written

        def published(result: tuple[Message, bool, list[Event]] | None) -> None:
            if result is not None and publish is not None:
                publish(result[2])

        result = await self._relay_write(write, published)
        if result is not None:
            return result
        # Lost a race against the same client id (another process): return the stored one.
        assert client_message_id is not None
        stored = await self._message_by_client_id(conversation_id, sender, client_message_id)
        assert stored is not None
        return stored, False, []

    async def _relay_write(
        self,
        write: Callable[[AsyncConnection], Coroutine[Any, Any, T]],
        then: Callable[[T], None] | None,
    ) -> T:
        """Run ``write(db)`` in a transaction, then ``then(result)`` right after the commit:
        on SQLite a transaction shared with the other relay writes of this loop iteration
        (:meth:`InlineEngine.batched`: one commit for all), elsewhere one of its own."""
        if isinstance(self.engine, InlineEngine):
            return await self.engine.batched(write, then)
        async with self.engine.begin() as db:
            result = await write(db)
        if then is not None:
            then(result)
        return result

    async def user_message_by_client_id(
        self, conversation_id: str, client_message_id: str
    ) -> Message | None:
        return await self._message_by_client_id(conversation_id, "user", client_message_id)

    async def _message_by_client_id(
        self, conversation_id: str, sender: str, client_message_id: str
    ) -> Message | None:
        async with self.engine.connect() as db:
            return await _message_by_client_id(db, conversation_id, sender, client_message_id)

    async def set_intent_ranking(
        self,
        message_id: int,
        ranking: list[dict[str, Any]],
        events: Sequence[NewEvent] = (),
        publish: Callable[[list[Event]], None] | None = None,
    ) -> list[Event]:
        """Store a message's intent ranking and ``events``; ``publish`` as for
        :meth:`add_message`."""
        now = time.time()

        async def write(db: AsyncConnection) -> list[Event]:
            await _set_intent_ranking(db, message_id, ranking)
            return [await _append_event(db, event, now) for event in events]

        return await self._relay_write(write, publish)

    async def set_turn(self, message_id: int, turn: dict[str, Any]) -> None:
        """Store what the bot's actions did in answer to user message ``message_id``."""

        async def write(db: AsyncConnection) -> None:
            await db.execute(
                schema.messages.update().where(schema.messages.c.id == message_id).values(turn=turn)
            )

        await self._relay_write(write, None)

    async def messages(self, conversation_id: str) -> list[Message]:
        query = (
            schema.messages.select()
            .where(schema.messages.c.conversation_id == conversation_id)
            .order_by(schema.messages.c.id)
        )
        async with self.engine.connect() as db:
            rows = await db.execute(query)
        return [message_from_row(row) for row in rows]

    async def message(self, message_id: int) -> Message | None:
        async with self.engine.connect() as db:
            row = (
                await db.execute(schema.messages.select().where(schema.messages.c.id == message_id))
            ).first()
        return message_from_row(row) if row else None

    async def labels(self, message_ids: Sequence[int]) -> dict[int, str]:
        """The latest label of each message that has one."""
        query = (
            schema.labels.select()
            .where(schema.labels.c.message_id.in_(list(message_ids)))
            .order_by(schema.labels.c.id)
        )
        async with self.engine.connect() as db:
            rows = await db.execute(query)
        return {row.message_id: row.intent for row in rows}

    async def mark_first_agent_reply(self, handoff_id: int, at: float) -> None:
        """Record the time of a handoff's first agent reply (later calls change nothing)."""
        async with self.engine.begin() as db:
            await _mark_first_agent_reply(db, handoff_id, at)

    async def queue(self) -> list[QueuedConversation]:
        """Queued conversations, oldest first, each with its last user message (two queries)."""
        c, h, m = schema.conversations, schema.handoffs, schema.messages
        queued_query = (
            sa.select(c.c.id, c.c.handoff_reason, c.c.updated_at, h.c.queued_at)
            .select_from(c.outerjoin(h, h.c.id == c.c.handoff_id))
            .where(c.c.state == State.QUEUED.value)
            .order_by(c.c.updated_at)
        )
        async with self.engine.connect() as db:
            queued = (await db.execute(queued_query)).all()
            ids = [row.id for row in queued]
            last_ids = (
                sa.select(sa.func.max(m.c.id))
                .where(m.c.conversation_id.in_(ids), m.c.sender == "user")
                .group_by(m.c.conversation_id)
            )
            last = {
                row.conversation_id: row
                for row in await db.execute(sa.select(m).where(m.c.id.in_(last_ids)))
            }
        return [
            QueuedConversation(
                conversation_id=row.id,
                reason=row.handoff_reason,
                queued_at=row.queued_at if row.queued_at is not None else row.updated_at,
                last_message=message_from_row(last[row.id]) if row.id in last else None,
            )
            for row in queued
        ]

    async def append_events(self, events: Sequence[NewEvent]) -> list[Event]:
        now = time.time()
        async with self.engine.begin() as db:
            return [await _append_event(db, event, now) for event in events]

    async def user_events_after(self, conversation_id: str, after_id: int) -> list[Event]:
        query = (
            schema.events.select()
            .where(
                schema.events.c.audience == "user",
                schema.events.c.conversation_id == conversation_id,
                schema.events.c.id > after_id,
            )
            .order_by(schema.events.c.id)
        )
        async with self.engine.connect() as db:
            rows = await db.execute(query)
        return [event_from_row(row) for row in rows]

    async def agent_events_after(self, agent_id: int, after_id: int) -> list[Event]:
        query = (
            schema.events.select()
            .where(
                schema.events.c.audience == "agents",
                sa.or_(schema.events.c.agent_id.is_(None), schema.events.c.agent_id == agent_id),
                schema.events.c.id > after_id,
            )
            .order_by(schema.events.c.id)
        )
        async with self.engine.connect() as db:
            rows = await db.execute(query)
        return [event_from_row(row) for row in rows]

    async def last_event_id(self) -> int:
        async with self.engine.connect() as db:
            value = (await db.execute(sa.select(sa.func.max(schema.events.c.id)))).scalar()
        return int(value or 0)

    async def oldest_event_id(self) -> int:
        async with self.engine.connect() as db:
            value = (await db.execute(sa.select(sa.func.min(schema.events.c.id)))).scalar()
        return int(value or 0)

    async def trim_events(self, older_than: float) -> int:
        """Delete events created before ``older_than``; clients behind them must resync."""
        async with self.engine.begin() as db:
            result = await db.execute(
                schema.events.delete().where(schema.events.c.created_at < older_than)
            )
        return int(result.rowcount)


async def _exists(db: AsyncConnection, conversation_id: str) -> bool:
    query = sa.select(schema.conversations.c.id).where(schema.conversations.c.id == conversation_id)
    return (await db.execute(query)).first() is not None


# The relay path on the inline SQLite connection: the same statements as SQL text on the
# driver's cursor. SQLAlchemy's execute (compiling, caching, parameter and result processing)
# cost several times the statement itself there. JSON columns are stored as SQLAlchemy
# reads them (compact JSON text; None is 'null').
def _columns(table: sa.Table) -> list[str]:
    return [column.name for column in table.c]


def _insert_sql(table: sa.Table, columns: Sequence[str]) -> str:
    marks = ", ".join("?" for _ in columns)
    return f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({marks})"


_CONVERSATION_COLUMNS = _columns(schema.conversations)
_MESSAGE_COLUMNS = _columns(schema.messages)
_MESSAGE_VALUES = [name for name in _MESSAGE_COLUMNS if name != "id"]
_MESSAGE_JSON = frozenset(
    column.name for column in schema.messages.c if isinstance(column.type, sa.JSON)
)
_EVENT_VALUES = ["audience", "conversation_id", "agent_id", "type", "payload", "created_at"]
_SQL_SELECT_CONVERSATION = (
    f"SELECT {', '.join(_CONVERSATION_COLUMNS)} FROM conversations WHERE id = ?"
)
_SQL_SELECT_MESSAGE_BY_CLIENT_ID = (
    f"SELECT {', '.join(_MESSAGE_COLUMNS)} FROM messages"
    " WHERE conversation_id = ? AND sender = ? AND client_message_id = ?"
)
_SQL_INSERT_MESSAGE_UNLESS_STORED = (
    _insert_sql(schema.messages, _MESSAGE_VALUES)
    + " ON CONFLICT (conversation_id, sender, client_message_id) DO NOTHING"
)
"""One statement instead of a read and an insert: a message whose client id is stored
already (a resend) inserts nothing (``rowcount`` 0)."""
_SQL_INSERT_EVENT = _insert_sql(schema.events, _EVENT_VALUES)
_SQL_SET_INTENT_RANKING = "UPDATE messages SET intent_ranking = ? WHERE id = ?"
_SQL_MARK_FIRST_AGENT_REPLY = (
    "UPDATE handoffs SET first_agent_reply_at = ? WHERE id = ? AND first_agent_reply_at IS NULL"
)


def _inline(db: AsyncConnection) -> InlineConnection | None:
    return db if isinstance(db, InlineConnection) else None


async def _load_conversation(db: AsyncConnection, conversation_id: str) -> StoredConversation:
    row: Any
    if inline := _inline(db):
        raw = inline.run(_SQL_SELECT_CONVERSATION, (conversation_id,)).fetchone()
        row = SimpleNamespace(**dict(zip(_CONVERSATION_COLUMNS, raw, strict=True))) if raw else None
    else:
        parameters = {"b_conversation_id": conversation_id}
        row = (await db.execute(_SELECT_CONVERSATION, parameters)).first()
    if row is None:
        return StoredConversation(Conversation(conversation_id), 0, None, 0, 0.0)
    return stored_from_row(row)


async def _message_by_client_id(
    db: AsyncConnection, conversation_id: str, sender: str, client_message_id: str
) -> Message | None:
    if inline := _inline(db):
        raw = inline.run(
            _SQL_SELECT_MESSAGE_BY_CLIENT_ID, (conversation_id, sender, client_message_id)
        ).fetchone()
        if raw is None:
            return None
        values = dict(zip(_MESSAGE_COLUMNS, raw, strict=True))
        for name in _MESSAGE_JSON:
            values[name] = None if values[name] is None else json_codec.loads(values[name])
        return Message(**values)
    parameters = {
        "b_conversation_id": conversation_id,
        "b_sender": sender,
        "b_client_message_id": client_message_id,
    }
    row = (await db.execute(_SELECT_MESSAGE_BY_CLIENT_ID, parameters)).first()
    return message_from_row(row) if row else None


async def _insert_message(db: AsyncConnection, values: dict[str, Any]) -> int | None:
    """Insert a message row and return its id; None, writing nothing, if its client id is
    stored already for its conversation and sender. Elsewhere than SQLite, a duplicate
    inserted concurrently by another process raises ``sa.exc.IntegrityError``."""
    if inline := _inline(db):
        row = [
            json_codec.dumps_text(values[name]) if name in _MESSAGE_JSON else values[name]
            for name in _MESSAGE_VALUES
        ]
        try:
            cursor = inline.run(_SQL_INSERT_MESSAGE_UNLESS_STORED, row)
        except sqlite3.IntegrityError as error:
            raise sa.exc.IntegrityError(_SQL_INSERT_MESSAGE_UNLESS_STORED, row, error) from error
        return int(cursor.lastrowid or 0) if cursor.rowcount == 1 else None
    client_id = values["client_message_id"]
    if client_id is not None and await _message_by_client_id(
        db, values["conversation_id"], values["sender"], client_id
    ):
        return None
    result = await db.execute(_INSERT_MESSAGE, values)
    return int(result.inserted_primary_key[0])


async def _set_intent_ranking(
    db: AsyncConnection, message_id: int, ranking: list[dict[str, Any]]
) -> None:
    if inline := _inline(db):
        inline.run(_SQL_SET_INTENT_RANKING, (json_codec.dumps_text(ranking), message_id))
        return
    await db.execute(_SET_INTENT_RANKING, {"b_message_id": message_id, "b_ranking": ranking})


async def _mark_first_agent_reply(db: AsyncConnection, handoff_id: int, at: float) -> None:
    if inline := _inline(db):
        inline.run(_SQL_MARK_FIRST_AGENT_REPLY, (at, handoff_id))
        return
    await db.execute(_MARK_FIRST_AGENT_REPLY, {"b_handoff_id": handoff_id, "b_at": at})


EVENT_ORDER_LOCK = 0x68616E64  # "hand"
"""PostgreSQL advisory lock that makes event ids commit in increasing order."""


async def _append_event(db: AsyncConnection, event: NewEvent, now: float) -> Event:
    if inline := _inline(db):
        values = (
            event.audience,
            event.conversation_id,
            event.agent_id,
            event.type,
            json_codec.dumps_text(event.payload),
            now,
        )
        event_id = int(inline.run(_SQL_INSERT_EVENT, values).lastrowid or 0)
    else:
        if db.dialect.name == "postgresql":
            # Transactions that write events take turns until they commit, so an event id is
            # visible only after every smaller one: a client reading "events after my cursor"
            # can never skip one that commits late. (SQLite has one writer anyway.)
            await db.execute(sa.select(sa.func.pg_advisory_xact_lock(EVENT_ORDER_LOCK)))
        result = await db.execute(
            _INSERT_EVENT,
            {
                "audience": event.audience,
                "conversation_id": event.conversation_id,
                "agent_id": event.agent_id,
                "type": event.type,
                "payload": event.payload,
                "created_at": now,
            },
        )
        event_id = int(result.inserted_primary_key[0])
    return Event(
        id=event_id,
        audience=event.audience,
        conversation_id=event.conversation_id,
        agent_id=event.agent_id,
        type=event.type,
        payload=event.payload,
        created_at=now,
    )
