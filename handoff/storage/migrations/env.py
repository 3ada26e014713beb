"""Alembic environment: runs our migrations on the connection handoff.storage.migrate passes in."""

from __future__ import annotations

from alembic import context

from handoff.storage.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    version_table="handoff_alembic_version",
)
with context.begin_transaction():
    context.run_migrations()
