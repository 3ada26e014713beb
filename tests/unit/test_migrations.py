"""The Alembic migrations create exactly the tables handoff/storage/schema.py describes."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from handoff.storage.migrate import upgrade
from handoff.storage.schema import metadata


def test_migrations_match_the_schema_and_run_twice(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    upgrade(url)
    upgrade(url)  # a second start changes nothing
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"version_table": "handoff_alembic_version"}
            )
            differences = compare_metadata(context, metadata)
            version = connection.execute(
                sa.text("SELECT version_num FROM handoff_alembic_version")
            ).scalar()
    finally:
        engine.dispose()
    assert differences == []
    assert version is not None
