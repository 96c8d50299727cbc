"""Table models of the compliance log (sqlmodel). The schema itself is made by the alembic
migrations in ``migrations/``; these classes must match them (a test compares the two).

Times are stored in UTC. SQLite keeps them naive; :func:`utc` makes any read value aware.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum

import orjson
from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    text,
)
from sqlmodel import Field, SQLModel

from remsguard.domain.decisions import Alert, Severity

__all__ = [
    "AlertRow",
    "AlertStatus",
    "ApiPrincipal",
    "AuditRow",
    "ChainHead",
    "MerkleNode",
    "MonitoringForm",
    "PrincipalRole",
    "RemsCertificationRow",
    "RemsEnrollmentRow",
    "SessionEventRow",
    "SessionSummary",
    "TreeHead",
    "utc",
    "utc_text",
]


def utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utc_text(value: datetime | None) -> str | None:
    """RFC 3339 in UTC ending in ``Z`` (as chained record details carry times), or None."""
    return None if value is None else utc(value).isoformat().replace("+00:00", "Z")


def _ts(*, nullable: bool) -> Column[datetime]:
    return Column(DateTime(timezone=True), nullable=nullable)


class AuditRow(SQLModel, table=True):
    """One audit record, append-only (triggers refuse UPDATE/DELETE).

    ``log_index`` is the record's position in the whole log (0-based, gapless: the Merkle leaf
    index and the stable tie-breaker of every query order); ``chain_id``/``chain_seq``/
    ``prev_hash``/``hash`` chain the records of one clinic (see ``chain.py``). ``rule`` and
    ``severity`` are copied out of ``detail`` for alert records, and ``event_time`` is
    ``occurred_at`` or, when the record has no event time, ``appended_at``; they exist for
    indexes, are not hashed, and verify checks them against the hashed fields.
    """

    __tablename__ = "audit_records"
    __table_args__ = (
        Index("ix_audit_records_chain", "chain_id", "chain_seq", unique=True),
        Index("ix_audit_records_clinic_time", "clinic_id", "event_time", "log_index"),
        Index("ix_audit_records_session_time", "session_id", "event_time", "log_index"),
        Index("ix_audit_records_rule_time", "rule", "event_time", "log_index"),
        Index(
            "ix_audit_records_clinic_rule_time",
            "clinic_id",
            "rule",
            "event_time",
            "log_index",
            postgresql_where=text("rule IS NOT NULL"),
            sqlite_where=text("rule IS NOT NULL"),
        ),
        Index("ix_audit_records_time", "event_time", "log_index"),
    )

    log_index: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    record_id: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    chain_id: str = Field(sa_column=Column(String(128), nullable=False))
    chain_seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    prev_hash: str = Field(sa_column=Column(String(64), nullable=False))
    hash: str = Field(sa_column=Column(String(64), nullable=False))
    kind: str = Field(sa_column=Column(String(64), nullable=False))
    subject_id: str = Field(sa_column=Column(Text, nullable=False))
    session_id: str | None = Field(default=None, sa_column=Column(String(128)))
    clinic_id: str | None = Field(default=None, sa_column=Column(String(128)))
    occurred_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    detail: str = Field(sa_column=Column(Text, nullable=False))
    appended_at: datetime = Field(sa_column=_ts(nullable=False))
    event_time: datetime = Field(sa_column=_ts(nullable=False))
    rule: str | None = Field(default=None, sa_column=Column(String(64)))
    severity: str | None = Field(default=None, sa_column=Column(String(16)))


class ChainHead(SQLModel, table=True):
    """The last record of each chain: a write-side cache, never trusted by verify."""

    __tablename__ = "audit_chain_heads"

    chain_id: str = Field(sa_column=Column(String(128), primary_key=True))
    chain_seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    hash: str = Field(sa_column=Column(String(64), nullable=False))


class TreeHead(SQLModel, table=True):
    """A signed tree head (append-only): the Merkle root over the first ``tree_size`` records.

    ``frontier`` (hex hashes of the perfect subtrees covering the tree, largest first) lets
    the next head be computed from the new records only; it is not signed and verify
    recomputes it.
    """

    __tablename__ = "audit_tree_heads"

    tree_size: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    root_hash: str = Field(sa_column=Column(String(64), nullable=False))
    signed_at: datetime = Field(sa_column=_ts(nullable=False))
    key_id: str = Field(sa_column=Column(String(64), nullable=False))
    signature: str = Field(sa_column=Column(String(128), nullable=False))
    frontier: str = Field(sa_column=Column(Text, nullable=False))


class MerkleNode(SQLModel, table=True):
    """Cached interior node covering leaves ``[index << level, (index + 1) << level)``."""

    __tablename__ = "audit_merkle_nodes"

    level: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    index: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    hash: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))


class AlertStatus(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    # The engine took it back (a chained `alert.withdrawn` record says why); never deleted.
    WITHDRAWN = "withdrawn"
    # A warning staff shelved until `shelved_until` (a chained `alert.shelved` record); it
    # opens again when the shelf expires (`alert.unshelved`).
    SHELVED = "shelved"


class AlertRow(SQLModel, table=True):
    __tablename__ = "alerts"
    __table_args__ = (
        Index("ix_alerts_clinic_time", "clinic_id", "triggered_at", "alert_id"),
        Index("ix_alerts_session_time", "session_id", "triggered_at", "alert_id"),
        Index("ix_alerts_rule_time", "rule", "triggered_at", "alert_id"),
        Index("ix_alerts_time", "triggered_at", "alert_id"),
        Index("ix_alerts_inhibited_by", "inhibited_by"),
        Index("ix_alerts_shelved_until", "status", "shelved_until"),
    )

    alert_id: str = Field(sa_column=Column(String(64), primary_key=True))
    rule: str = Field(sa_column=Column(String(64), nullable=False))
    severity: str = Field(sa_column=Column(String(16), nullable=False))
    session_id: str = Field(sa_column=Column(String(128), nullable=False))
    clinic_id: str = Field(sa_column=Column(String(128), nullable=False))
    triggered_at: datetime = Field(sa_column=_ts(nullable=False))
    message: str = Field(sa_column=Column(Text, nullable=False))
    evidence: str = Field(sa_column=Column(Text, nullable=False))  # JSON array of event ids
    protocol: str = Field(sa_column=Column(String(128), nullable=False))
    protocol_version: str = Field(sa_column=Column(String(128), nullable=False))
    recorded_at: datetime = Field(sa_column=_ts(nullable=False))
    status: str = Field(default=AlertStatus.OPEN, sa_column=Column(String(16), nullable=False))
    acknowledged_by: str | None = Field(default=None, sa_column=Column(String(128)))
    acknowledged_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    resolved_by: str | None = Field(default=None, sa_column=Column(String(128)))
    resolved_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    # The alert on the same reading that inhibits this one (the protocol's [inhibitions]).
    inhibited_by: str | None = Field(default=None, sa_column=Column(String(64)))
    shelved_until: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    shelved_by: str | None = Field(default=None, sa_column=Column(String(128)))
    shelve_reason: str | None = Field(default=None, sa_column=Column(String(500)))

    def to_alert(self) -> Alert:
        """The engine's alert this row stores (without its lifecycle)."""
        return Alert(
            alert_id=self.alert_id,
            rule=self.rule,
            severity=Severity(self.severity),
            session_id=self.session_id,
            clinic_id=self.clinic_id,
            triggered_at=utc(self.triggered_at),
            message=self.message,
            evidence=tuple(orjson.loads(self.evidence)),
            protocol=self.protocol,
            protocol_version=self.protocol_version,
            inhibited_by=self.inhibited_by,
        )


class SessionSummary(SQLModel, table=True):
    """Per-session roll-up, recomputed from the audit records and alerts (idempotent)."""

    __tablename__ = "session_summaries"
    __table_args__ = (
        Index("ix_session_summaries_clinic", "clinic_id", "opened_at"),
        Index("ix_session_summaries_patient", "patient_ref"),
    )

    session_id: str = Field(sa_column=Column(String(128), primary_key=True))
    clinic_id: str = Field(sa_column=Column(String(128), nullable=False))
    patient_ref: str | None = Field(default=None, sa_column=Column(String(128)))
    protocol: str | None = Field(default=None, sa_column=Column(String(128)))
    opened_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    first_dose_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    discharged_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    last_event_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    events_accepted: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    alerts_total: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    alerts_critical: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    alerts_warning: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    rules: str = Field(default="[]", sa_column=Column(Text, nullable=False))  # JSON, sorted
    updated_at: datetime = Field(sa_column=_ts(nullable=False))


class MonitoringForm(SQLModel, table=True):
    """A session's Patient Monitoring Form submission state (the form body is derived)."""

    __tablename__ = "monitoring_forms"
    __table_args__ = (Index("ix_monitoring_forms_clinic_due", "clinic_id", "due_at"),)

    session_id: str = Field(sa_column=Column(String(128), primary_key=True))
    clinic_id: str = Field(sa_column=Column(String(128), nullable=False))
    due_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    submitted_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    submitted_by: str | None = Field(default=None, sa_column=Column(String(128)))
    overdue_alert_id: str | None = Field(default=None, sa_column=Column(String(64)))
    payload: str | None = Field(default=None, sa_column=Column(Text))  # JSON as submitted


class PrincipalRole(StrEnum):
    """What an API caller may do. ``device`` may only post events (embedded ingest); the
    column is a plain string (no enum type or CHECK), so a new role needs no migration."""

    DEVICE = "device"
    AUDITOR = "auditor"
    STAFF = "staff"
    ADMIN = "admin"


class ApiPrincipal(SQLModel, table=True):
    """An API caller. Only the SHA-256 of its token is stored; ``clinics`` is a JSON array,
    empty meaning every clinic."""

    __tablename__ = "api_principals"

    principal_id: str = Field(sa_column=Column(String(64), primary_key=True))
    name: str = Field(sa_column=Column(String(128), nullable=False, unique=True))
    token_hash: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    role: str = Field(sa_column=Column(String(16), nullable=False))
    clinics: str = Field(default="[]", sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(sa_column=_ts(nullable=False))
    revoked_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    expires_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class SessionEventRow(SQLModel, table=True):
    """An accepted device event of a session, in its wire form (the inbound contract's JSON).

    The audit records say *that* an event was accepted; the Patient Monitoring Form needs
    *what* it said (BP values, drug, dose and lot, assessments). Written idempotently by the
    compliance-log writers (first write wins, as the engine keeps the first of duplicates);
    readers use only events whose ``event.accepted`` record is in the log."""

    __tablename__ = "session_events"

    session_id: str = Field(sa_column=Column(String(128), primary_key=True))
    event_id: str = Field(sa_column=Column(String(128), primary_key=True))
    clinic_id: str = Field(sa_column=Column(String(128), nullable=False))
    type: str = Field(sa_column=Column(String(64), nullable=False))
    occurred_at: datetime = Field(sa_column=_ts(nullable=False))
    payload: str = Field(sa_column=Column(Text, nullable=False))


class RemsCertificationRow(SQLModel, table=True):
    """A clinic's REMS certification as last recorded (one per clinic); each change is a
    chained ``rems.certification.recorded`` record that ``audit verify`` holds the row to."""

    __tablename__ = "rems_certifications"

    clinic_id: str = Field(sa_column=Column(String(128), primary_key=True))
    certification_id: str = Field(sa_column=Column(String(128), nullable=False))
    valid_from: date = Field(sa_column=Column(Date, nullable=False))
    valid_to: date | None = Field(default=None, sa_column=Column(Date, nullable=True))
    recorded_at: datetime = Field(sa_column=_ts(nullable=False))
    recorded_by: str = Field(sa_column=Column(String(128), nullable=False))


class RemsEnrollmentRow(SQLModel, table=True):
    """A patient's REMS enrollment at a clinic as last recorded; each change is a chained
    ``rems.enrollment.recorded`` record."""

    __tablename__ = "rems_enrollments"

    clinic_id: str = Field(sa_column=Column(String(128), primary_key=True))
    patient_ref: str = Field(sa_column=Column(String(128), primary_key=True))
    enrolled_on: date = Field(sa_column=Column(Date, nullable=False))
    recorded_at: datetime = Field(sa_column=_ts(nullable=False))
    recorded_by: str = Field(sa_column=Column(String(128), nullable=False))
