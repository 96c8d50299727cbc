"""The compliance log's storage: sqlmodel tables, alembic migrations, one repository per
user (``AuditLog``, ``AlertStore``, ``SessionSummaries``, ``MonitoringForms``,
``SessionEvents``, ``PrincipalStore``, ``RegistryStore``), the ``ComplianceLog`` façade over
them, Ed25519 signed tree heads and the verifier."""

from remsguard.adapters.storage.alert_store import AlertStore
from remsguard.adapters.storage.audit_log import AppendResult, AuditLog, InclusionProof
from remsguard.adapters.storage.db import make_engine, migrate
from remsguard.adapters.storage.log import ComplianceLog, DecisionsRecorded
from remsguard.adapters.storage.models import (
    AlertRow,
    AlertStatus,
    ApiPrincipal,
    AuditRow,
    MonitoringForm,
    PrincipalRole,
    SessionSummary,
    TreeHead,
)
from remsguard.adapters.storage.monitoring_forms import MonitoringForms
from remsguard.adapters.storage.queries import AlertQuery, AuditQuery, CursorError, Page
from remsguard.adapters.storage.session_events import SessionEvents
from remsguard.adapters.storage.session_summaries import SessionSummaries
from remsguard.adapters.storage.signing import HeadSigner
from remsguard.adapters.storage.verify import VerifyReport, verify_log

__all__ = [
    "AlertQuery",
    "AlertRow",
    "AlertStatus",
    "AlertStore",
    "ApiPrincipal",
    "AppendResult",
    "AuditLog",
    "AuditQuery",
    "AuditRow",
    "ComplianceLog",
    "CursorError",
    "DecisionsRecorded",
    "HeadSigner",
    "InclusionProof",
    "MonitoringForm",
    "MonitoringForms",
    "Page",
    "PrincipalRole",
    "SessionEvents",
    "SessionSummaries",
    "SessionSummary",
    "TreeHead",
    "VerifyReport",
    "make_engine",
    "migrate",
    "verify_log",
]
