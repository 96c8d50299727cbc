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

    def record_decisions(
        self, events: Iterable[Event], alerts: Iterable[Alert], audit: Iterable[AuditRecord]
    ) -> DecisionsRecorded:
        self.events.extend(events)
        raised, records = list(alerts), list(audit)
        self.alerts.extend(raised)
        self.audit.extend(records)
        return DecisionsRecorded(len(raised), AppendResult(len(records), 0, len(self.audit)))
