"""Replay: run the engine over a file of events in file order, as if they arrived that way."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from remsguard.contract.decode import decode_event
from remsguard.domain.decisions import Alert, AuditRecord, Decisions, Rejection, Withdrawal
from remsguard.domain.engine import MonitoringEngine


@dataclass(frozen=True, slots=True)
class ReplayEvents:
    """The command: raw JSON lines in arrival order, and where the clock stops at the end."""

    lines: Iterable[bytes]
    until: datetime | None = None


@dataclass(slots=True)
class ReplaySummary:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    alerts: int = 0
    withdrawals: int = 0
    audit_records: int = 0
    last_event_at: datetime | None = field(default=None)


@contextmanager
def _bulk_collection() -> Iterator[None]:
    """Collect garbage less often while engine state grows: its objects form no cycles."""
    thresholds = gc.get_threshold()
    gc.set_threshold(100_000, 50, 100)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)


def replay(
    command: ReplayEvents,
    engine: MonitoringEngine,
    on_alert: Callable[[Alert], None],
    on_rejected: Callable[[int, Rejection], None],
    on_audit: Callable[[AuditRecord], None] | None = None,
    on_withdrawal: Callable[[Withdrawal], None] | None = None,
) -> ReplaySummary:
    """The clock is the greatest event time seen so far, and finally `until`. Withdrawals
    (alerts taken back by a later fact) go to `on_withdrawal` right after their cause."""
    summary = ReplaySummary()

    def emit(decisions: Decisions) -> None:
        for alert in decisions.alerts:
            on_alert(alert)
        summary.alerts += len(decisions.alerts)
        if on_withdrawal is not None:
            for withdrawal in decisions.withdrawals:
                on_withdrawal(withdrawal)
        summary.withdrawals += len(decisions.withdrawals)
        if on_audit is not None:
            for record in decisions.audit:
                on_audit(record)
        summary.audit_records += len(decisions.audit)

    # The usual event's counts are kept in locals and added to the summary at the end.
    accepted = duplicates = quiet_audit_records = 0
    handle = engine.handle
    with _bulk_collection():
        for number, line in enumerate(command.lines, start=1):
            if not line or line.isspace():  # a blank line (`isspace` copies nothing)
                continue
            event = decode_event(line)
            if isinstance(event, Rejection):
                summary.rejected += 1
                on_rejected(number, event)
                emit(engine.reject(event, source=f"line:{number}"))
                continue
            decisions = handle(event)
            if decisions.rejection is not None:
                summary.rejected += 1
                on_rejected(number, decisions.rejection)
            elif decisions.outcome == "duplicate":
                duplicates += 1
            else:
                accepted += 1
            if decisions.alerts or decisions.withdrawals or on_audit is not None:
                emit(decisions)
            else:  # the usual event: nothing to hand on but its audit records, kept by no one
                quiet_audit_records += len(decisions.audit)
            clock = engine.clock
            if clock is None or event.occurred_at > clock:
                due = engine.advance_to(event.occurred_at)
                if due.alerts or due.withdrawals or due.audit:
                    emit(due)
                summary.last_event_at = event.occurred_at
        if command.until is not None:
            emit(engine.advance_to(command.until))
    summary.accepted += accepted
    summary.duplicates += duplicates
    summary.audit_records += quiet_audit_records
    return summary
