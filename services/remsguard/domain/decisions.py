"""What the engine decides: alerts for staff, audit records for the compliance log."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class AuditKind(StrEnum):
    """Every kind of fact the compliance log records."""

    EVENT_ACCEPTED = "event.accepted"
    EVENT_REJECTED = "event.rejected"
    ALERT_RAISED = "alert.raised"
    # Later-arriving facts showed the alert should not have been raised (the engine decides
    # it; the compliance log closes the alert as `withdrawn`, never deletes it).
    ALERT_WITHDRAWN = "alert.withdrawn"
    SESSION_OPENED = "session.opened"
    SESSION_DOSED = "session.dosed"
    WINDOW_SATISFIED = "session.window_satisfied"
    SESSION_DISCHARGED = "session.discharged"
    # Written by the compliance log's own writers (not the engine), so that everything an
    # auditor or the monitoring form relies on is in the hash chain.
    ALERT_ACKNOWLEDGED = "alert.acknowledged"
    ALERT_RESOLVED = "alert.resolved"
    ALERT_ESCALATED = "alert.escalated"
    ALERT_SHELVED = "alert.shelved"  # a warning put aside by staff until a time, with a reason
    ALERT_UNSHELVED = "alert.unshelved"  # its shelf expired: open (or acknowledged) again
    FORM_SUBMITTED = "form.submitted"
    PRINCIPAL_CREATED = "principal.created"
    PRINCIPAL_REVOKED = "principal.revoked"
    # The REMS registry (written by its store, `adapters/storage/registry.py`): a clinic's
    # certification and a patient's enrollment, as recorded, with who recorded them.
    REMS_CERTIFICATION_RECORDED = "rems.certification.recorded"
    REMS_ENROLLMENT_RECORDED = "rems.enrollment.recorded"


def stable_id(*parts: str) -> str:
    """A deterministic id, so re-processing the same input yields the same ids.

    The 16-byte BLAKE2b of the parts joined by U+001F, in hex. Ids are persisted: this must
    never change.
    """
    key = "\x1f".join(parts).encode("utf-8", "surrogatepass")
    digest = _BLAKE2B_16.copy()  # a copy of a fresh state: cheaper than a new one
    digest.update(key)
    return digest.hexdigest()


def stable_id_prefix(*parts: str) -> hashlib.blake2b:
    """The hash state of `stable_id(*parts, *rest)` after its first parts, for hot callers.

    `stable_id(*parts, *rest)` is then: copy it, update it with `"\x1f" + "\x1f".join(rest)`
    encoded as `stable_id` encodes, and take the hexdigest.
    """
    digest = _BLAKE2B_16.copy()
    digest.update("\x1f".join(parts).encode("utf-8", "surrogatepass"))
    return digest


_BLAKE2B_16 = hashlib.blake2b(digest_size=16)


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    alert_id: str
    rule: str
    severity: Severity
    session_id: str
    clinic_id: str
    triggered_at: datetime
    message: str
    evidence: tuple[str, ...]
    protocol: str
    protocol_version: str
    # A higher-priority alert on the same reading (the protocol's [inhibitions]) that carries
    # the notification and the console card; this one stays in the log.
    inhibited_by: str | None = None


class WithdrawalReason(StrEnum):
    """Why the engine took an alert back: which later-arriving fact contradicted it."""

    PROTOCOL_ARRIVED_LATE = "protocol_arrived_late"  # session.opened named other rules
    DISCHARGE_ARRIVED_LATE = "discharge_arrived_late"  # the reading came after the discharge
    READING_ARRIVED_LATE = "reading_arrived_late"  # an earlier reading joins the episode
    DOSE_ARRIVED_LATE = "dose_arrived_late"  # the first dose or its baseline moved


@dataclass(frozen=True, slots=True, kw_only=True)
class Withdrawal:
    """An alert the engine takes back: `evidence` names the events that contradict it."""

    alert_id: str
    rule: str
    session_id: str
    clinic_id: str
    withdrawn_at: datetime  # the event time of the fact that contradicts it
    reason: WithdrawalReason
    detail: str
    evidence: tuple[str, ...]


def alert_withdrawn(withdrawal: Withdrawal) -> AuditRecord:
    """The audit record of a withdrawal; its id follows from the alert's (once per alert)."""
    detail: dict[str, object] = {
        "rule": withdrawal.rule,
        "reason": withdrawal.reason.value,
        "detail": withdrawal.detail,
        "evidence": list(withdrawal.evidence),
    }
    return _of_alert(AuditKind.ALERT_WITHDRAWN, withdrawal, withdrawal.withdrawn_at, detail)


def withdrawal_of(record: AuditRecord) -> Withdrawal:
    """The withdrawal an `alert.withdrawn` record (from `alert_withdrawn`) tells of."""
    detail = record.detail
    if record.occurred_at is None:
        raise ValueError(f"{record.record_id}: an alert.withdrawn record without its time")
    return Withdrawal(
        alert_id=record.subject_id,
        rule=str(detail.get("rule", "")),
        session_id=record.session_id or "",
        clinic_id=record.clinic_id or "",
        withdrawn_at=record.occurred_at,
        reason=WithdrawalReason(str(detail.get("reason"))),
        detail=str(detail.get("detail", "")),
        evidence=tuple(str(e) for e in _listed(detail.get("evidence"))),
    )


def _listed(value: object) -> list[object]:
    return list(value) if isinstance(value, list | tuple) else []


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejection:
    """An input that broke the event contract; `reason` is a stable machine-readable code."""

    reason: str
    detail: str
    event_id: str | None = None
    session_id: str | None = None
    clinic_id: str | None = None


@dataclass(slots=True)
class AuditRecord:
    """One per accepted event, so built cheaply: not frozen, and positional arguments allowed."""

    record_id: str
    kind: AuditKind
    subject_id: str
    session_id: str | None
    clinic_id: str | None
    occurred_at: datetime | None
    detail: dict[str, object] = field(default_factory=dict)


def alert_raised(alert: Alert) -> AuditRecord:
    """The audit record of a raised alert; its id follows from the alert's, so raising twice
    records once."""
    detail: dict[str, object] = {"rule": alert.rule, "severity": alert.severity.value}
    if alert.inhibited_by is not None:
        detail["inhibited_by"] = alert.inhibited_by
    return _of_alert(AuditKind.ALERT_RAISED, alert, alert.triggered_at, detail)


def _of_alert(
    kind: AuditKind, alert: Alert | Withdrawal, at: datetime, detail: dict[str, object]
) -> AuditRecord:
    """An audit record about one alert: its id follows from the kind and the alert's id."""
    return AuditRecord(
        record_id=stable_id(kind, alert.alert_id),
        kind=kind,
        subject_id=alert.alert_id,
        session_id=alert.session_id,
        clinic_id=alert.clinic_id,
        occurred_at=at,
        detail=detail,
    )


class Outcome(StrEnum):
    """What became of one input."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


@dataclass(slots=True)
class Decisions:
    """The output of one engine step, in the order the engine made them."""

    alerts: list[Alert] = field(default_factory=list)
    audit: list[AuditRecord] = field(default_factory=list)
    outcome: Outcome = Outcome.ACCEPTED
    rejection: Rejection | None = None
    # Alerts taken back (each also has an `alert.withdrawn` record in `audit`).
    withdrawals: list[Withdrawal] = field(default_factory=list)

    def extend(self, other: Decisions) -> None:
        self.alerts.extend(other.alerts)
        self.audit.extend(other.audit)
        self.withdrawals.extend(other.withdrawals)
