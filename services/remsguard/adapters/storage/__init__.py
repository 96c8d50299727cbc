"""The compliance log's storage: sqlmodel tables, alembic migrations, the repository
(``ComplianceLog``), Ed25519 signed tree heads and the verifier."""

from remsguard.adapters.storage.db import make_engine, migrate
from remsguard.adapters.storage.log import (
    AlertQuery,
    AppendResult,
    AuditQuery,
    ComplianceLog,
    CursorError,
    InclusionProof,
    Page,
)
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
from remsguard.adapters.storage.signing import HeadSigner
from remsguard.adapters.storage.verify import VerifyReport, verify_log

__all__ = [
    "AlertQuery",
    "AlertRow",
    "AlertStatus",
    "ApiPrincipal",
    "AppendResult",
    "AuditQuery",
    "AuditRow",
    "ComplianceLog",
    "CursorError",
    "HeadSigner",
    "InclusionProof",
    "MonitoringForm",
    "Page",
    "PrincipalRole",
    "SessionSummary",
    "TreeHead",
    "VerifyReport",
    "make_engine",
    "migrate",
    "verify_log",
]
