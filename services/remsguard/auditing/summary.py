"""The compliance summary per clinic and day (the day a session opened, UTC)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any

import orjson
from sqlalchemy import select
from sqlmodel import Session

from remsguard.adapters.storage import ComplianceLog, MonitoringForm
from remsguard.adapters.storage.models import utc

__all__ = ["ClinicDay", "compliant_share", "daily_summary"]


def compliant_share(sessions: int, with_violations: int) -> float | None:
    """The share of sessions without a violation, to 4 places; None when there were none."""
    if not sessions:
        return None
    return round((sessions - with_violations) / sessions, 4)


@dataclass(slots=True)
class ClinicDay:
    clinic_id: str
    day: date
    sessions: int = 0
    sessions_with_violations: int = 0
    violations_by_rule: dict[str, int] = field(default_factory=dict)  # sessions per rule
    forms_submitted: int = 0
    forms_overdue: int = 0

    @property
    def fully_compliant_share(self) -> float | None:
        return compliant_share(self.sessions, self.sessions_with_violations)

    def to_json(self) -> dict[str, Any]:
        return {
            "clinic_id": self.clinic_id,
            "day": self.day.isoformat(),
            "sessions": self.sessions,
            "sessions_with_violations": self.sessions_with_violations,
            "violations_by_rule": dict(sorted(self.violations_by_rule.items())),
            "fully_compliant_share": self.fully_compliant_share,
            "forms_submitted": self.forms_submitted,
            "forms_overdue": self.forms_overdue,
        }


def daily_summary(
    clog: ComplianceLog,
    *,
    since: date,
    until: date,
    now: datetime,
    clinics: frozenset[str] | None = None,
    clinic_id: str | None = None,
) -> list[ClinicDay]:
    """Days in [since, until). A session violates when it has any alert (the form-overdue
    alert included); it is fully compliant otherwise and its form is not overdue."""
    start = datetime.combine(since, time(), UTC)
    end = datetime.combine(until, time(), UTC)
    summaries = clog.summaries.opened_between(
        clinics=clinics, clinic_id=clinic_id, since=start, until=end
    )
    forms: dict[str, MonitoringForm] = {}
    ids = [s.session_id for s in summaries]
    with Session(clog.engine) as db:
        for chunk in range(0, len(ids), 500):
            for found in db.scalars(
                select(MonitoringForm).where(
                    MonitoringForm.__table__.c.session_id.in_(ids[chunk : chunk + 500])  # type: ignore[attr-defined]
                )
            ):
                forms[found.session_id] = found
    days: dict[tuple[str, date], ClinicDay] = {}
    by_rule: dict[tuple[str, date], dict[str, int]] = defaultdict(dict)
    now = utc(now)
    for s in summaries:
        assert s.opened_at is not None
        key = (s.clinic_id, utc(s.opened_at).date())
        day = days.setdefault(key, ClinicDay(*key))
        day.sessions += 1
        rules: list[str] = orjson.loads(s.rules)
        form = forms.get(s.session_id)
        overdue = form is not None and (
            form.overdue_alert_id is not None
            or (form.submitted_at is None and form.due_at is not None and utc(form.due_at) < now)
        )
        if form is not None and form.submitted_at is not None:
            day.forms_submitted += 1
        if overdue:
            day.forms_overdue += 1
        if rules or overdue:
            day.sessions_with_violations += 1
        for rule in rules:
            by_rule[key][rule] = by_rule[key].get(rule, 0) + 1
    for key, day in days.items():
        day.violations_by_rule = by_rule.get(key, {})
    return sorted(days.values(), key=lambda d: (d.day, d.clinic_id))
