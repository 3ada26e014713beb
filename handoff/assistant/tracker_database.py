"""Where Rasa's trackers live. No Rasa in it: the server process computes it for its workers."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url

__all__ = ["tracker_database_url"]


def tracker_database_url(database_url: str) -> str:
    """Where Rasa's trackers live, given our database's URL.

    PostgreSQL: the same database. SQLite: a file of its own beside ours (``handoff.db`` ->
    ``handoff-rasa.db``), because our store runs inline on the event loop (see
    :mod:`handoff.storage.inline_sqlite`) and must never wait in SQLite's busy handler for Rasa's
    writes, which come from other threads. In-memory SQLite stays as it is.
    """
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return database_url
    path = Path(url.database)
    return str(url.set(database=str(path.with_name(f"{path.stem}-rasa{path.suffix}"))))
