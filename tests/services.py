"""The local PostgreSQL and Redis servers, for the tests that need them (skipped, saying why,
when a server is not there)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

ADMIN_URL = os.environ.get("HANDOFF_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1/postgres")
REDIS_URL = os.environ.get("HANDOFF_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@contextmanager
def fresh_database(prefix: str = "handoff_test") -> Iterator[str]:
    """Yield the URL of a new, empty database (dropped afterwards); skip the test, saying
    why, when there is no PostgreSQL server."""
    engine = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as error:
        engine.dispose()
        pytest.skip(f"no PostgreSQL at {ADMIN_URL} (set HANDOFF_TEST_POSTGRES_URL): {error}")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with engine.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield str(sa.engine.make_url(ADMIN_URL).set(database=name))
    finally:
        with engine.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        engine.dispose()


def redis_available() -> str | None:
    """None if Redis answers, else why not."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping()
    except Exception as error:
        return f"no Redis at {REDIS_URL} (set HANDOFF_TEST_REDIS_URL): {error}"
    return None
