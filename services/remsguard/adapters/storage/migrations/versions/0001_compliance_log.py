"""Compliance log: audit records (append-only, chained), tree heads, Merkle node cache,
alerts, session summaries, monitoring forms, API principals.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from remsguard.adapters.storage.db import forward_only as downgrade  # noqa: F401

revision = "0001"
down_revision = None

APPEND_ONLY = ("audit_records", "audit_tree_heads")


def _ts(name: str, *, nullable: bool) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "audit_records",
        sa.Column("log_index", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("record_id", sa.String(64), nullable=False, unique=True),
        sa.Column("chain_id", sa.String(128), nullable=False),
        sa.Column("chain_seq", sa.BigInteger, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("subject_id", sa.Text, nullable=False),
        sa.Column("session_id", sa.String(128)),
        sa.Column("clinic_id", sa.String(128)),
        _ts("occurred_at", nullable=True),
        sa.Column("detail", sa.Text, nullable=False),
        _ts("appended_at", nullable=False),
        _ts("event_time", nullable=False),
        sa.Column("rule", sa.String(64)),
        sa.Column("severity", sa.String(16)),
    )
    op.create_index(
        "ix_audit_records_chain", "audit_records", ["chain_id", "chain_seq"], unique=True
    )
    for name, cols in (
        ("clinic_time", ["clinic_id", "event_time", "log_index"]),
        ("session_time", ["session_id", "event_time", "log_index"]),
        ("rule_time", ["rule", "event_time", "log_index"]),
        ("time", ["event_time", "log_index"]),
    ):
        op.create_index(f"ix_audit_records_{name}", "audit_records", cols)
    op.create_table(
        "audit_chain_heads",
        sa.Column("chain_id", sa.String(128), primary_key=True),
        sa.Column("chain_seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_table(
        "audit_tree_heads",
        sa.Column("tree_size", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("root_hash", sa.String(64), nullable=False),
        _ts("signed_at", nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
        sa.Column("frontier", sa.Text, nullable=False),
    )
    op.create_table(
        "audit_merkle_nodes",
        sa.Column("level", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("index", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
    )
    op.create_table(
        "alerts",
        sa.Column("alert_id", sa.String(64), primary_key=True),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("session_id", sa.String(128), nullable=False),
        sa.Column("clinic_id", sa.String(128), nullable=False),
        _ts("triggered_at", nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("evidence", sa.Text, nullable=False),
        sa.Column("protocol", sa.String(128), nullable=False),
        sa.Column("protocol_version", sa.String(128), nullable=False),
        _ts("recorded_at", nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("acknowledged_by", sa.String(128)),
        _ts("acknowledged_at", nullable=True),
        sa.Column("resolved_by", sa.String(128)),
        _ts("resolved_at", nullable=True),
    )
    for name, cols in (
        ("clinic_time", ["clinic_id", "triggered_at", "alert_id"]),
        ("session_time", ["session_id", "triggered_at", "alert_id"]),
        ("rule_time", ["rule", "triggered_at", "alert_id"]),
        ("time", ["triggered_at", "alert_id"]),
    ):
        op.create_index(f"ix_alerts_{name}", "alerts", cols)
    op.create_table(
        "session_summaries",
        sa.Column("session_id", sa.String(128), primary_key=True),
        sa.Column("clinic_id", sa.String(128), nullable=False),
        sa.Column("patient_ref", sa.String(128)),
        sa.Column("protocol", sa.String(128)),
        _ts("opened_at", nullable=True),
        _ts("first_dose_at", nullable=True),
        _ts("discharged_at", nullable=True),
        _ts("last_event_at", nullable=True),
        sa.Column("events_accepted", sa.Integer, nullable=False),
        sa.Column("alerts_total", sa.Integer, nullable=False),
        sa.Column("alerts_critical", sa.Integer, nullable=False),
        sa.Column("alerts_warning", sa.Integer, nullable=False),
        sa.Column("rules", sa.Text, nullable=False),
        _ts("updated_at", nullable=False),
    )
    op.create_index("ix_session_summaries_clinic", "session_summaries", ["clinic_id", "opened_at"])
    op.create_index("ix_session_summaries_patient", "session_summaries", ["patient_ref"])
    op.create_table(
        "monitoring_forms",
        sa.Column("session_id", sa.String(128), primary_key=True),
        sa.Column("clinic_id", sa.String(128), nullable=False),
        _ts("due_at", nullable=True),
        _ts("submitted_at", nullable=True),
        sa.Column("submitted_by", sa.String(128)),
        sa.Column("overdue_alert_id", sa.String(64)),
        sa.Column("payload", sa.Text),
    )
    op.create_index("ix_monitoring_forms_clinic_due", "monitoring_forms", ["clinic_id", "due_at"])
    op.create_table(
        "api_principals",
        sa.Column("principal_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("clinics", sa.Text, nullable=False),
        _ts("created_at", nullable=False),
        _ts("revoked_at", nullable=True),
    )
    _append_only_triggers()


def _append_only_triggers() -> None:
    """The database itself refuses UPDATE and DELETE (and TRUNCATE on PostgreSQL)."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            CREATE FUNCTION remsguard_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'remsguard: % is append-only: % refused', TG_TABLE_NAME, TG_OP
                    USING ERRCODE = 'insufficient_privilege';
            END $$
            """
        )
        for table in APPEND_ONLY:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION remsguard_append_only()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION remsguard_append_only()"
            )
    else:
        for table in APPEND_ONLY:
            for verb in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, 'remsguard: {table} is append-only: "
                    f"{verb} refused'); END"
                )
