"""Helpers for the staff-alerting tests: a compliance log with a driven clock, alerts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from remsguard.adapters.storage import ComplianceLog, make_engine, migrate
from remsguard.domain.decisions import Alert, Severity

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> datetime:
        self.now += timedelta(**kwargs)
        return self.now


def open_log(path: Path, clock: Clock) -> ComplianceLog:
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    return ComplianceLog(engine, now=clock)


def alert(
    alert_id: str,
    severity: Severity = Severity.CRITICAL,
    clinic: str = "c1",
    session: str = "s1",
    rule: str = "BP_CRISIS",
) -> Alert:
    return Alert(
        alert_id=alert_id,
        rule=rule,
        severity=severity,
        session_id=session,
        clinic_id=clinic,
        triggered_at=T0,
        message=f"{rule} on {session}",
        evidence=("e1",),
        protocol="spravato-rems",
        protocol_version="test",
    )
