"""The clinic compliance report of one month: the numbers behind
`GET /v1/reports/compliance?clinic=C&month=YYYY-MM` (drawn by ``report_document``).

The session counts, violations by rule and forms come from ``daily_summary``, the same
function `GET /v1/compliance/summary` answers with, summed over the month's days (and over
weeks for the trend), so the report and the auditor API cannot disagree. The rest reads the
compliance log: the minutes from each session's first dose to its BP reading nearest 40
minutes (judged against the session's protocol window), the time to acknowledge each
critical alert, forms submitted within their 7 days, and what is still open.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final

from remsguard.adapters.storage import AlertQuery, AlertRow, AlertStatus, ComplianceLog
from remsguard.adapters.storage.log import MAX_LIMIT
from remsguard.adapters.storage.models import utc
from remsguard.auditing.summary import compliant_share, daily_summary
from remsguard.contract.decode import decode_event
from remsguard.domain.events import DoseAdministered, Event, VitalsRecorded
from remsguard.domain.protocol import MonitoringProtocol, session_protocol

__all__ = [
    "CheckTime",
    "ComplianceReport",
    "OpenItem",
    "clinic_alerts",
    "compliance_report",
    "month_of",
]

TARGET_MINUTES: Final = 40.0
LOOK_MINUTES: Final = 90.0  # post-dose BP readings this late still show in the distribution
MAX_OPEN_ITEMS: Final = 200


@dataclass(frozen=True, slots=True)
class CheckTime:
    """One session's post-dose ("40-minute") check: minutes from the first dose to its BP
    reading nearest the middle of its protocol's POST_DOSE_BP_MISSED window (40 minutes for
    SPRAVATO; None: no BP within LOOK_MINUTES), the window and the protocol."""

    session_id: str
    minutes: float | None
    window: tuple[float, float] | None
    protocol: str

    @property
    def in_window(self) -> bool:
        return (
            self.minutes is not None
            and self.window is not None
            and self.window[0] <= self.minutes <= self.window[1]
        )


@dataclass(frozen=True, slots=True)
class OpenItem:
    kind: str  # "alert" or "form"
    session_id: str
    patient_ref: str | None
    what: str  # the rule, or "form overdue"
    severity: str
    since: datetime
    status: str


@dataclass(slots=True)
class WeekRow:
    start: date  # Monday (or the month's first day)
    sessions: int = 0
    sessions_with_violations: int = 0
    violations_by_rule: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class ComplianceReport:
    clinic_id: str
    month: date  # its first day
    generated_at: datetime
    sessions: int = 0
    sessions_with_violations: int = 0
    violations_by_rule: dict[str, int] = field(default_factory=dict)
    rule_severity: dict[str, str] = field(default_factory=dict)
    weeks: list[WeekRow] = field(default_factory=list)
    checks: list[CheckTime] = field(default_factory=list)
    ack_minutes: list[float] = field(default_factory=list)
    critical_alerts: int = 0
    critical_unacknowledged: int = 0
    forms_due: int = 0  # sessions with a form (ended)
    forms_submitted: int = 0
    forms_on_time: int = 0
    forms_overdue: int = 0
    open_items: list[OpenItem] = field(default_factory=list)
    open_items_total: int = 0

    @property
    def fully_compliant_share(self) -> float | None:
        return compliant_share(self.sessions, self.sessions_with_violations)

    @property
    def ack_median(self) -> float | None:
        return round(statistics.median(self.ack_minutes), 2) if self.ack_minutes else None

    @property
    def ack_p90(self) -> float | None:
        return _percentile(self.ack_minutes, 0.9)

    @property
    def checks_in_window(self) -> int:
        return sum(1 for c in self.checks if c.in_window)

    @property
    def checks_missing(self) -> int:
        return sum(1 for c in self.checks if c.minutes is None)

    def to_json(self) -> dict[str, Any]:
        return {
            "clinic_id": self.clinic_id,
            "month": self.month.strftime("%Y-%m"),
            "generated_at": self.generated_at,
            "sessions": self.sessions,
            "sessions_with_violations": self.sessions_with_violations,
            "fully_compliant_share": self.fully_compliant_share,
            "violations_by_rule": dict(sorted(self.violations_by_rule.items())),
            "weeks": [
                {
                    "start": w.start.isoformat(),
                    "sessions": w.sessions,
                    "sessions_with_violations": w.sessions_with_violations,
                    "violations_by_rule": dict(sorted(w.violations_by_rule.items())),
                }
                for w in self.weeks
            ],
            "forty_minute_check": {
                "sessions_dosed": len(self.checks),
                "in_window": self.checks_in_window,
                "no_reading": self.checks_missing,
                "minutes": [c.minutes for c in self.checks if c.minutes is not None],
                "by_protocol": {
                    name: {
                        "window": list(
                            next(c.window for c in self.checks if c.protocol == name) or []
                        ),
                        "sessions": sum(1 for c in self.checks if c.protocol == name),
                        "in_window": sum(
                            1 for c in self.checks if c.protocol == name and c.in_window
                        ),
                    }
                    for name in sorted({c.protocol for c in self.checks})
                },
            },
            "critical_acknowledgement": {
                "critical_alerts": self.critical_alerts,
                "acknowledged": len(self.ack_minutes),
                "unacknowledged": self.critical_unacknowledged,
                "median_minutes": self.ack_median,
                "p90_minutes": self.ack_p90,
            },
            "forms": {
                "due": self.forms_due,
                "submitted": self.forms_submitted,
                "submitted_within_7_days": self.forms_on_time,
                "overdue": self.forms_overdue,
            },
            "open_items_total": self.open_items_total,
            "open_items": [
                {
                    "kind": i.kind,
                    "session_id": i.session_id,
                    "patient_ref": i.patient_ref,
                    "what": i.what,
                    "severity": i.severity,
                    "since": i.since,
                    "status": i.status,
                }
                for i in self.open_items
            ],
        }


def _percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (the value at rank ceil(q * n))."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return round(ordered[min(rank, len(ordered)) - 1], 2)


def month_of(text: str) -> date:
    """``YYYY-MM`` -> the month's first day; ValueError otherwise."""
    year, _, month = text.partition("-")
    if len(year) != 4 or len(month) != 2 or not (year + month).isdigit():
        raise ValueError("a month, YYYY-MM")
    return date(int(year), int(month), 1)


def _next_month(first: date) -> date:
    return (first + timedelta(days=32)).replace(day=1)


def _week_start(day: date, first: date) -> date:
    return max(first, day - timedelta(days=day.weekday()))


def _events(log: ComplianceLog, session_id: str) -> list[Event]:
    decoded = (decode_event(r.payload.encode()) for r in log.session_events(session_id))
    return [e for e in decoded if isinstance(e, Event)]


def _check_time(
    session_id: str,
    events: list[Event],
    protocols: Mapping[str, MonitoringProtocol],
    default_protocol: str,
) -> CheckTime | None:
    doses = sorted(
        (e.occurred_at for e in events if isinstance(e, DoseAdministered)),
    )
    if not doses:
        return None
    first = doses[0]
    name, protocol = session_protocol(events, protocols, default_protocol)
    window = None
    target = TARGET_MINUTES
    if protocol is not None and "POST_DOSE_BP_MISSED" in protocol.rules:
        rule = protocol.rule("POST_DOSE_BP_MISSED")
        window = (rule["from_minutes"], rule["until_minutes"])
        target = (window[0] + window[1]) / 2
    after = [
        (e.occurred_at - first) / timedelta(minutes=1)
        for e in events
        if isinstance(e, VitalsRecorded) and e.is_bp_reading and e.occurred_at > first
    ]
    near = [m for m in after if m <= LOOK_MINUTES]
    minutes = min(near, key=lambda m: (abs(m - target), m)) if near else None
    return CheckTime(session_id, None if minutes is None else round(minutes, 1), window, name)


def clinic_alerts(
    log: ComplianceLog, clinic_id: str, since: datetime, until: datetime
) -> list[AlertRow]:
    """The clinic's alerts raised in [since, until), every page."""
    rows: list[AlertRow] = []
    cursor: str | None = None
    while True:
        page = log.alerts(
            AlertQuery(
                clinic_id=clinic_id, since=since, until=until, cursor=cursor, limit=MAX_LIMIT
            )
        )
        rows.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return rows


def compliance_report(
    log: ComplianceLog,
    clinic_id: str,
    month: date,
    *,
    now: datetime,
    protocols: Mapping[str, MonitoringProtocol],
    default_protocol: str,
) -> ComplianceReport:
    end = _next_month(month)
    report = ComplianceReport(clinic_id, month, utc(now))
    default = protocols.get(default_protocol)
    if default is not None:
        report.rule_severity = {name: r.severity.value for name, r in default.rules.items()}
    weeks: dict[date, WeekRow] = {}
    by_rule: Counter[str] = Counter()
    for day in daily_summary(log, since=month, until=end, now=now, clinic_id=clinic_id):
        start = _week_start(day.day, month)
        week = weeks.setdefault(start, WeekRow(start))
        for target in (report, week):
            target.sessions += day.sessions
            target.sessions_with_violations += day.sessions_with_violations
        for rule, n in day.violations_by_rule.items():
            week.violations_by_rule[rule] = week.violations_by_rule.get(rule, 0) + n
            by_rule[rule] += n
        report.forms_submitted += day.forms_submitted
        report.forms_overdue += day.forms_overdue
    report.violations_by_rule = dict(by_rule)
    start = month
    while start < end:  # every week of the month, quiet ones too
        weeks.setdefault(start, WeekRow(start))
        start = _week_start(start + timedelta(days=7), month)
    report.weeks = sorted(weeks.values(), key=lambda w: w.start)

    since = datetime.combine(month, time(), UTC)
    until = datetime.combine(end, time(), UTC)
    summaries = log.summaries.opened_between(clinic_id=clinic_id, since=since, until=until)
    patients = {s.session_id: s.patient_ref for s in summaries}
    items: list[OpenItem] = []
    for s in summaries:
        check = _check_time(s.session_id, _events(log, s.session_id), protocols, default_protocol)
        if check is not None:
            report.checks.append(check)
        form = log.get_form(s.session_id)
        if form is None:
            continue
        report.forms_due += 1
        due = None if form.due_at is None else utc(form.due_at)
        if form.submitted_at is not None and (due is None or utc(form.submitted_at) <= due):
            report.forms_on_time += 1
        if form.submitted_at is None and due is not None and due < utc(now):
            items.append(
                OpenItem(
                    "form", s.session_id, s.patient_ref, "form overdue", "warning", due, "overdue"
                )
            )

    for alert in clinic_alerts(log, clinic_id, since, until):
        if alert.severity == "critical" and alert.status != "withdrawn":
            report.critical_alerts += 1
            if alert.acknowledged_at is not None:
                waited = utc(alert.acknowledged_at) - utc(alert.triggered_at)
                report.ack_minutes.append(round(max(0.0, waited / timedelta(minutes=1)), 2))
            else:
                report.critical_unacknowledged += 1
        if alert.status in (AlertStatus.OPEN.value, AlertStatus.ACKNOWLEDGED.value):
            items.append(
                OpenItem(
                    "alert",
                    alert.session_id,
                    patients.get(alert.session_id),
                    alert.rule,
                    alert.severity,
                    utc(alert.triggered_at),
                    alert.status,
                )
            )
    rank = {"critical": 0, "warning": 1}
    items.sort(key=lambda i: (rank.get(i.severity, 2), i.since, i.session_id))
    report.open_items_total = len(items)
    report.open_items = items[:MAX_OPEN_ITEMS]
    return report
