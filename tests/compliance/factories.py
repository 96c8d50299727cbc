"""Record and alert factories for the compliance-log tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from remsguard.domain.decisions import (
    Alert,
    AuditKind,
    AuditRecord,
    Severity,
    Withdrawal,
    WithdrawalReason,
    stable_id,
)

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def record(
    i: int,
    *,
    clinic: str | None = None,
    session: str | None = None,
    kind: AuditKind = AuditKind.EVENT_ACCEPTED,
    detail: dict[str, object] | None = None,
    at: datetime | None = None,
) -> AuditRecord:
    clinic = clinic if clinic is not None else f"clinic-{i % 3}"
    session = session if session is not None else f"{clinic}-sess-{i % 7}"
    return AuditRecord(
        record_id=stable_id("test", str(i), kind),
        kind=kind,
        subject_id=f"ev-{i}",
        session_id=session,
        clinic_id=clinic,
        occurred_at=at if at is not None else T0 + timedelta(minutes=i),
        detail=detail if detail is not None else {"type": "vitals.recorded"},
    )


def alert(
    i: int,
    *,
    rule: str = "BP_HIGH",
    severity: Severity = Severity.WARNING,
    clinic: str = "clinic-0",
    session: str = "clinic-0-sess-0",
) -> Alert:
    return Alert(
        alert_id=stable_id("alert", str(i)),
        rule=rule,
        severity=severity,
        session_id=session,
        clinic_id=clinic,
        triggered_at=T0 + timedelta(minutes=i),
        message=f"alert {i}",
        evidence=(f"ev-{i}",),
        protocol="spravato-rems",
        protocol_version="abc",
    )


def alert_record(a: Alert) -> AuditRecord:
    return AuditRecord(
        record_id=stable_id(AuditKind.ALERT_RAISED, a.alert_id),
        kind=AuditKind.ALERT_RAISED,
        subject_id=a.alert_id,
        session_id=a.session_id,
        clinic_id=a.clinic_id,
        occurred_at=a.triggered_at,
        detail={"rule": a.rule, "severity": a.severity.value},
    )


def withdrawal(a: Alert) -> Withdrawal:
    """The engine taking `a` back: its reading came after a discharge that arrived late."""
    return Withdrawal(
        alert_id=a.alert_id,
        rule=a.rule,
        session_id=a.session_id,
        clinic_id=a.clinic_id,
        withdrawn_at=a.triggered_at + timedelta(minutes=1),
        reason=WithdrawalReason.DISCHARGE_ARRIVED_LATE,
        detail="The patient was discharged before the reading.",
        evidence=("dis",),
    )


def synthetic_events(total: int) -> list[bytes]:
    """Interleaved multi-session clinic traffic (the benchmark generator, bench/events.py)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bench" / "events.py"
    spec = importlib.util.spec_from_file_location("_bench_events", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.generate(total))
