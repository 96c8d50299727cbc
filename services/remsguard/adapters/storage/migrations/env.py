"""Alembic environment: always run programmatically by ``remsguard.adapters.storage.migrate``,
which hands over an open connection (one code path for PostgreSQL and SQLite)."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with remsguard.adapters.storage.migrate(url)")
context.configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
