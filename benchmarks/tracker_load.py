"""What loading a Rasa tracker costs an assistant worker, by the length of the conversation.

For every message of a handed-off conversation the worker loads the conversation's tracker
from the tracker store (every event of its latest session, decoded from JSON and replayed by
``DialogueStateTracker.from_dict``) before it logs the message. This times that load on
``ThreadedSQLTrackerStore`` (SQLite, a fresh file in a temporary folder) for conversations of
--events events (half user messages with ten intent guesses each, half agent replies), with
each stored event decoded by ``json.loads`` (Rasa's way) and by ``decode_event`` (ours), in
alternating rounds; it prints the median of the rounds and the parts of a load (the query, the
decoding, the replay). Beside them, what the next message pays instead when the worker kept the
tracker it saved (``TrackerCache``): one query for the conversation's last event id.

    .venv/bin/python -m benchmarks.tracker_load
    .venv/bin/python -m benchmarks.tracker_load --events 50,500 --rounds 7
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rasa.shared.core.domain import Domain
from rasa.shared.core.events import (
    ActionExecuted,
    BotUttered,
    ConversationPaused,
    SessionStarted,
    UserUttered,
)
from rasa.shared.core.trackers import DialogueStateTracker

from handoff.assistant.tracker_store import (
    ThreadedSQLTrackerStore,
    cache_event_types,
    decode_event,
)

DOMAIN = Domain.empty()
RANKING = [{"name": f"intent_{i}", "confidence": 0.1 + i / 100} for i in range(10)]


def handoff_tracker(sender_id: str, events: int) -> DialogueStateTracker:
    """A paused conversation with ``events`` events after its session start."""
    tracker = DialogueStateTracker(sender_id, DOMAIN.slots)
    for event in (ActionExecuted("action_session_start"), SessionStarted(), ConversationPaused()):
        tracker.update(event)
    for i in range(events // 2):
        text = f"my parcel {i} has not arrived yet"
        intent = {"name": "delivery", "confidence": 0.41}
        parse_data = {"intent": intent, "entities": [], "text": text, "intent_ranking": RANKING}
        tracker.update(UserUttered(text, intent, [], parse_data, input_channel="websocket"))
        tracker.update(BotUttered(f"let me check parcel {i}", {"agent": True}))
    return tracker


def per_call_ms(call: Callable[[], Any], seconds: float = 0.5) -> float:
    """Mean milliseconds of ``call()``, called for about ``seconds``."""
    calls = 0
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds or calls < 3:
        call()
        calls += 1
    return elapsed / calls * 1000


def measure_round(store: ThreadedSQLTrackerStore, sender_id: str) -> dict[str, float]:
    """One round: the load with each decoder, and its parts."""

    def select() -> list[str]:
        with store.engine.connect() as connection:
            query = store._select_latest_session
            return list(connection.execute(query, {"sender_id": sender_id}).scalars().all())

    def load(decode: Callable[[str], dict[str, Any]]) -> None:
        DialogueStateTracker.from_dict(sender_id, [decode(data) for data in select()], DOMAIN.slots)

    rows = select()
    decoded = [json.loads(data) for data in rows]

    return {
        "load_json_ms": per_call_ms(lambda: load(json.loads)),
        "load_ours_ms": per_call_ms(lambda: load(decode_event)),
        "query_ms": per_call_ms(select),
        "decode_json_ms": per_call_ms(lambda: [json.loads(data) for data in rows]),
        "decode_ours_ms": per_call_ms(lambda: [decode_event(data) for data in rows]),
        "replay_ms": per_call_ms(
            lambda: DialogueStateTracker.from_dict(sender_id, decoded, DOMAIN.slots)
        ),
        "kept_ms": per_call_ms(lambda: store._last_id_blocking(sender_id)),
        "events": len(rows),
        "kib": sum(len(data) for data in rows) / 1024,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--events", default="20,100,300", help="conversation lengths, comma-separated"
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds per length (5)")
    args = parser.parse_args()
    try:
        lengths = [int(part) for part in args.events.split(",")]
    except ValueError:
        parser.error(f"--events takes whole numbers separated by commas, not {args.events!r}")
    if args.rounds < 1 or any(length < 2 for length in lengths):
        parser.error("--rounds must be at least 1 and every --events length at least 2")
    cache_event_types()
    with tempfile.TemporaryDirectory() as folder:
        store = ThreadedSQLTrackerStore(f"sqlite:///{Path(folder) / 'trackers.db'}", DOMAIN)
        try:
            for length in lengths:
                sender_id = f"conversation-{length}"
                store._save_blocking(handoff_tracker(sender_id, length))
                rounds = []
                for number in range(1, args.rounds + 1):
                    print(f"  {length} events: round {number}/{args.rounds}", flush=True)
                    rounds.append(measure_round(store, sender_id))
                median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
                print(
                    f"{median['events']:.0f} events ({median['kib']:.0f} KiB): load "
                    f"{median['load_json_ms']:.2f} ms with json.loads, "
                    f"{median['load_ours_ms']:.2f} ms with decode_event "
                    f"(x{median['load_json_ms'] / median['load_ours_ms']:.2f}); query "
                    f"{median['query_ms']:.2f} ms, decoding {median['decode_json_ms']:.2f} -> "
                    f"{median['decode_ours_ms']:.2f} ms, replay {median['replay_ms']:.2f} ms; "
                    f"kept: {median['kept_ms']:.3f} ms",
                    flush=True,
                )
        finally:
            store.engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
