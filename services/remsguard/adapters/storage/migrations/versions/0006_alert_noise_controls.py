"""Alerts: which alert inhibits this one, and its shelf (issue 14, alarm noise).

``inhibited_by``: a higher-priority alert on the same reading (the protocol's
``[inhibitions]``) carries the notification and the console card; this one stays in the log.
``shelved_until``/``shelved_by``/``shelve_reason``: a warning alert a staff member shelved
(status ``shelved``) until that time, with a chained ``alert.shelved`` record.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from remsguard.adapters.storage.db import forward_only as downgrade  # noqa: F401

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.add_column(sa.Column("inhibited_by", sa.String(64), nullable=True))
        batch.add_column(sa.Column("shelved_until", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("shelved_by", sa.String(128), nullable=True))
        batch.add_column(sa.Column("shelve_reason", sa.String(500), nullable=True))
    op.create_index("ix_alerts_inhibited_by", "alerts", ["inhibited_by"])
    op.create_index("ix_alerts_shelved_until", "alerts", ["status", "shelved_until"])
