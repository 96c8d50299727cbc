"""API principals: an optional expiry time for their tokens.

A token past ``expires_at`` is refused like a revoked one.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from remsguard.adapters.storage.db import forward_only as downgrade  # noqa: F401

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    with op.batch_alter_table("api_principals") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
