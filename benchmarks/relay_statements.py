"""What SQLite itself costs per relayed round trip: the statements the relay path runs for a
user message relayed to its agent and the agent's answer (the conversation read twice, the
duplicate check and insert of each message, five events, the intent ranking, the first-reply
mark, a savepoint each), replayed with the sqlite3 driver alone on a database file migrated
to our schema (WAL, ``synchronous=NORMAL``, as the server). CPU time per round trip, for
--batch writes per commit, and with the variants: as migrated, without the
``messages(conversation_id)`` index, and without foreign-key checks. Compare it with the
server's CPU per relayed message in ``benchmarks.relay_load`` ("srv µs", two per round trip).

    .venv/bin/python -m benchmarks.relay_statements
    .venv/bin/python -m benchmarks.relay_statements --round-trips 10000 --batch 1,3,12
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from handoff.storage.migrate import upgrade

CONVERSATIONS = 1000
VARIANTS = ("as migrated", "without messages(conversation_id) index", "without foreign keys")
_PAYLOAD = json.dumps(
    {
        "conversation_id": "3f2a9c1e8b7d4f6a9e0c1b2d3e4f5a6b",
        "message": {"message_id": 1, "sender": "user", "text": "what is my balance"},
    }
)
_RANKING = json.dumps([{"name": f"intent_{i}", "confidence": 0.1} for i in range(10)])
_SELECT_CONVERSATION = "SELECT * FROM conversations WHERE id = ?"
_SELECT_BY_CLIENT_ID = (
    "SELECT * FROM messages WHERE conversation_id = ? AND sender = ? AND client_message_id = ?"
)
_INSERT_MESSAGE = (
    "INSERT INTO messages (conversation_id, handoff_id, sender, agent_id, client_message_id,"
    " text, intent_ranking, response_name, created_at, turn) VALUES (?,?,?,?,?,?,?,?,?,?)"
)
_INSERT_EVENT = (
    "INSERT INTO events_log (audience, conversation_id, agent_id, type, payload, created_at)"
    " VALUES (?,?,?,?,?,?)"
)


def prepared(folder: Path, variant: str) -> sqlite3.Connection:
    """A migrated database with an agent and CONVERSATIONS assigned conversations."""
    folder.mkdir(exist_ok=True)
    path = folder / f"{VARIANTS.index(variant)}.db"
    upgrade(f"sqlite:///{path}")
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(f"PRAGMA foreign_keys={'OFF' if variant == VARIANTS[2] else 'ON'}")
    if variant == VARIANTS[1]:
        db.execute("DROP INDEX ix_messages_conversation_id")
    db.execute(
        "INSERT INTO agents (id, username, display_name, password_hash, role, disabled,"
        " created_at) VALUES (1, 'ann', 'Ann', 'x', 'agent', 0, 0)"
    )
    for number in range(CONVERSATIONS):
        db.execute(
            "INSERT INTO handoffs (id, conversation_id, reason, queued_at) VALUES (?, ?, 'x', 0)",
            (number + 1, f"c{number}"),
        )
        db.execute(
            "INSERT INTO conversations (id, state, agent_id, handoff_id, version, updated_at)"
            " VALUES (?, 'assigned', 1, ?, 1, 0)",
            (f"c{number}", number + 1),
        )
    return db


def _write(db: sqlite3.Connection, statements: list[tuple[str, tuple[object, ...]]]) -> int:
    db.execute("SAVEPOINT batched_write")
    last = 0
    for sql, parameters in statements:
        last = db.execute(sql, parameters).lastrowid or last
    db.execute("RELEASE batched_write")
    return last


def round_trips(db: sqlite3.Connection, count: int, batch: int, tag: str) -> float:
    """CPU µs per round trip of ``count``, ``batch`` writes per commit."""
    started = time.process_time()
    pending = 0
    for number in range(count):
        conversation, now = f"c{number % CONVERSATIONS}", time.time()
        if pending == 0:
            db.execute("BEGIN")
        db.execute(_SELECT_CONVERSATION, (conversation,)).fetchone()
        client_id = f"{tag}-u{number}"
        db.execute(_SELECT_BY_CLIENT_ID, (conversation, "user", client_id)).fetchone()
        message = (conversation, 1, "user", None, client_id, "hi", "null", None, now, "null")
        user_event = ("user", conversation, None, "ack", _PAYLOAD, now)
        agent_event = ("agents", conversation, 1, "user_message", _PAYLOAD, now)
        message_id = _write(
            db,
            [(_INSERT_MESSAGE, message), (_INSERT_EVENT, user_event), (_INSERT_EVENT, agent_event)],
        )
        intents_event = ("agents", conversation, 1, "intents", _PAYLOAD, now)
        _write(
            db,
            [
                ("UPDATE messages SET intent_ranking = ? WHERE id = ?", (_RANKING, message_id)),
                (_INSERT_EVENT, intents_event),
            ],
        )
        db.execute(_SELECT_CONVERSATION, (conversation,)).fetchone()
        client_id = f"{tag}-a{number}"
        db.execute(_SELECT_BY_CLIENT_ID, (conversation, "agent", client_id)).fetchone()
        reply = (conversation, 1, "agent", 1, client_id, "hello", "null", None, now, "null")
        _write(
            db,
            [
                (_INSERT_MESSAGE, reply),
                (_INSERT_EVENT, ("user", conversation, None, "agent", _PAYLOAD, now)),
                (_INSERT_EVENT, ("agents", conversation, 1, "agent_message", _PAYLOAD, now)),
                (
                    "UPDATE handoffs SET first_agent_reply_at = ?"
                    " WHERE id = ? AND first_agent_reply_at IS NULL",
                    (now, number % CONVERSATIONS + 1),
                ),
            ],
        )
        pending += 3
        if pending >= batch:
            db.execute("COMMIT")
            pending = 0
    if pending:
        db.execute("COMMIT")
    return (time.process_time() - started) / count * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--round-trips", type=int, default=5000, help="per round (5000)")
    parser.add_argument("--batch", default="1,3,12", help="writes per commit (1,3,12)")
    parser.add_argument("--rounds", type=int, default=3, help="median of this many (3)")
    args = parser.parse_args()
    batches = [int(value) for value in args.batch.split(",")]
    print(f"SQLite CPU per relayed round trip, median of {args.rounds} rounds:", flush=True)
    with tempfile.TemporaryDirectory(prefix="relay-statements-") as folder:
        for batch in batches:
            for variant in VARIANTS:
                db = prepared(Path(folder) / f"b{batch}", variant)
                round_trips(db, args.round_trips // 5, batch, "warm-up")
                measured = [
                    round_trips(db, args.round_trips, batch, f"r{index}")
                    for index in range(args.rounds)
                ]
                db.close()
                print(
                    f"  {batch:>2} writes per commit, {variant:<40}"
                    f" {statistics.median(measured):6.0f} µs",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
