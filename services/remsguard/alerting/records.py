"""The audit records staff alerting writes, with deterministic ids.

Every step is one record in the compliance log, so re-running a step after a crash or a
redelivery inserts nothing twice, and the log (not memory) says what was done:

| kind                          | record id                                   | when            |
|-------------------------------|---------------------------------------------|-----------------|
| `alert.notified`              | stable_id(kind, alert_id)                   | first delivery  |
| `alert.escalated`             | stable_id(kind, alert_id, step index)       | each step due   |
| `alert.acknowledged`          | stable_id(kind, alert_id)                   | by a staff member |
| `alert.resolved`              | stable_id(kind, alert_id)                   | by a staff member |
| `notification.dead_lettered`  | stable_id(kind, notification_id, channel)   | after last retry |

The compliance log's verifier reads every stored kind back through `AuditKind` (or, with the
auditor API's change to `adapters/storage/chain.py`, its `SERVICE_KINDS`), so these kinds must
be registered there. Until they are, `audit_kind()` returns None, `KINDS_AVAILABLE` is False
and `record()` returns None for them (logged once): alerting still works, but without its
audit trail and with in-memory de-duplication only.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Final, cast

import structlog

from remsguard.domain.decisions import AuditKind, AuditRecord, stable_id

__all__ = [
    "ACKNOWLEDGED",
    "DEAD_LETTERED",
    "ESCALATED",
    "KINDS",
    "KINDS_AVAILABLE",
    "NOTIFIED",
    "RESOLVED",
    "audit_kind",
    "record",
    "record_id",
    "writable",
]

log = structlog.get_logger(__name__)

NOTIFIED: Final = "alert.notified"
ESCALATED: Final = "alert.escalated"
ACKNOWLEDGED: Final = "alert.acknowledged"
RESOLVED: Final = "alert.resolved"
DEAD_LETTERED: Final = "notification.dead_lettered"
KINDS: Final = (NOTIFIED, ESCALATED, ACKNOWLEDGED, RESOLVED, DEAD_LETTERED)


def audit_kind(value: str) -> AuditKind | None:
    """The kind as the compliance log stores it: an engine kind, or one of the log's
    service kinds (`adapters.storage.chain.SERVICE_KINDS`)."""
    try:
        return AuditKind(value)
    except ValueError:
        pass
    from remsguard.adapters.storage import chain

    if value in chain.SERVICE_KINDS:
        return cast(AuditKind, value)
    return None


KINDS_AVAILABLE: Final = all(audit_kind(kind) is not None for kind in KINDS)
_warned = False


def record_id(kind: str, *parts: str) -> str:
    return stable_id(kind, *parts)


def record(
    kind: str,
    *,
    id_parts: tuple[str, ...],
    subject_id: str,
    session_id: str | None,
    clinic_id: str | None,
    occurred_at: datetime,
    detail: dict[str, object],
) -> AuditRecord | None:
    """An audit record of `kind`, or None when the domain does not know the kind yet."""
    member = audit_kind(kind)
    if member is None:
        _warn_missing()
        return None
    return AuditRecord(
        record_id=record_id(kind, *id_parts),
        kind=member,
        subject_id=subject_id,
        session_id=session_id,
        clinic_id=clinic_id,
        occurred_at=occurred_at,
        detail=detail,
    )


def writable(records: Iterable[AuditRecord | None]) -> list[AuditRecord]:
    return [r for r in records if r is not None]


def _warn_missing() -> None:
    global _warned
    if not _warned:
        _warned = True
        log.warning(
            "alerting.audit_kinds_missing",
            kinds=list(KINDS),
            detail="AuditKind lacks the alerting kinds; alerting audit records are not written",
        )
