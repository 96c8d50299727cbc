"""Chain what the views rely on: records for ``session_events`` and ``api_principals`` rows
stored before the log vouched for them.

From this revision on, every stored event's content is vouched for by an ``event.stored``
record and every principal by a ``principal.created`` record (written with the row);
``audit verify`` holds the tables to them. Rows already stored get theirs here, as they are
now. No schema change.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

from remsguard.adapters.storage.db import forward_only as downgrade  # noqa: F401

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    from remsguard.adapters.storage.log import ComplianceLog

    conn = op.get_bind()
    ComplianceLog(conn.engine).chain_unvouched_rows(conn)
