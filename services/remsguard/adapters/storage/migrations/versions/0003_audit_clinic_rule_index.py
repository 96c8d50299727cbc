"""Audit records: a partial index for alert records by clinic and rule over time.

The auditor query "this clinic's alerts of one rule (and severity) across a month" had no
index leading with both clinic and rule: the planner walked ``(rule, event_time)`` and
filtered out the other clinics' rows (p95 154 ms at 5M records). Only ``alert.raised``
records have a rule (~5% of the log), so the index is partial and small; any query with
``rule = ...`` implies ``rule IS NOT NULL`` and can use it, in the API's stable order.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from remsguard.adapters.storage.db import forward_only as downgrade  # noqa: F401

revision = "0003"
down_revision = "0002"

WHERE = "rule IS NOT NULL"


def upgrade() -> None:
    op.create_index(
        "ix_audit_records_clinic_rule_time",
        "audit_records",
        ["clinic_id", "rule", "event_time", "log_index"],
        postgresql_where=sa.text(WHERE),
        sqlite_where=sa.text(WHERE),
    )
