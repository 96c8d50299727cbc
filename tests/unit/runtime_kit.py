"""What the embedded runtime's unit tests share: an in-memory compliance log."""

from __future__ import annotations

from collections.abc import Iterable

from remsguard.adapters.storage import AppendResult, DecisionsRecorded
from remsguard.domain.decisions import Alert, AuditRecord
from remsguard.domain.events import Event


class MemoryLog:
    """The runtime's `DecisionLog`, kept in lists."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []
        self.audit: list[AuditRecord] = []
        self.events: list[Event] = []

    def append_audit(self, records: Iterable[AuditRecord]) -> object:
        self.audit.extend(records)
        return None

    def save_alerts(self, alerts: Iterable[Alert]) -> int:
        batch = list(alerts)
        self.alerts.extend(batch)
        return len(batch)

    def save_events(self, events: Iterable[Event]) -> int:
        batch = list(events)
        self.events.extend(batch)
        return len(batch)

    def record_decisions(
        self, events: Iterable[Event], alerts: Iterable[Alert], audit: Iterable[AuditRecord]
    ) -> DecisionsRecorded:
        self.save_events(events)
        new_alerts = self.save_alerts(alerts)
        before = len(self.audit)
        self.append_audit(audit)
        appended = len(self.audit) - before
        return DecisionsRecorded(new_alerts, AppendResult(appended, 0, len(self.audit)))
