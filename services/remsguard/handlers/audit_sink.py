"""The audit sink's unit of work: decode a batch of audit-topic (and alerts-topic) messages
and store it in the compliance log, idempotently.

At-least-once: the caller commits consumer offsets only after ``store`` returns, so a crash
re-delivers the batch and ``append_audit``/``save_alerts`` skip what is already stored (by
``record_id``/``alert_id``, which the engine derives deterministically).

The store is a port (`SinkStore`): the compliance log (`adapters.storage.ComplianceLog`)
fills it; nothing here imports storage.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from pydantic import ValidationError

from remsguard.contract.decode import decode_event
from remsguard.contract.outbound import AuditRecordPublic, alert_from_json
from remsguard.domain.decisions import Alert, AuditRecord
from remsguard.domain.events import Event


@dataclass(slots=True)
class SinkBatch:
    records: list[AuditRecord] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)  # input events, for the forms
    malformed: list[tuple[str, str]] = field(default_factory=list)  # (where, why)


def audit_record_from_json(raw: bytes) -> AuditRecord:
    # The public model has the domain record's fields, in its order.
    return AuditRecord(**dict(AuditRecordPublic.model_validate_json(raw)))


def decode_batch(messages: Iterable[tuple[str, bytes | None, str]]) -> SinkBatch:
    """``(kind, value, where)`` with kind ``"audit"``, ``"alert"`` or ``"event"`` (an input
    event: kept for ``session_events``; one the contract rejects is the processor's business,
    not a malformed sink message), in consumption order."""
    batch = SinkBatch()
    for kind, value, where in messages:
        if value is None:
            batch.malformed.append((where, "empty message"))
            continue
        try:
            if kind == "event":
                event = decode_event(value)
                if isinstance(event, Event):
                    batch.events.append(event)
            elif kind == "audit":
                batch.records.append(audit_record_from_json(value))
            else:
                batch.alerts.append(alert_from_json(value))
        except (ValidationError, ValueError) as exc:
            batch.malformed.append((where, str(exc).splitlines()[0]))
    return batch


@dataclass(frozen=True, slots=True)
class Stored:
    records: int
    duplicates: int
    alerts: int
    sessions: int


class Appended(Protocol):
    """What an append of audit records reports."""

    @property
    def inserted(self) -> int: ...
    @property
    def duplicates(self) -> int: ...


class SinkStore(Protocol):
    """Where the sink stores a batch, idempotently (the compliance log)."""

    def append_audit(self, records: Iterable[AuditRecord]) -> Appended: ...
    def save_alerts(self, alerts: Iterable[Alert]) -> int: ...
    def save_events(self, events: Iterable[Event]) -> int: ...
    def refresh_sessions(self, session_ids: Iterable[str]) -> int: ...


def store(log: SinkStore, batch: SinkBatch) -> Stored:
    appended = log.append_audit(batch.records)
    alerts = log.save_alerts(batch.alerts)
    if batch.events:
        log.save_events(batch.events)
    sessions = {r.session_id for r in batch.records if r.session_id is not None}
    sessions.update(a.session_id for a in batch.alerts)
    sessions.update(e.session_id for e in batch.events)  # a late session.opened names the patient
    refreshed = log.refresh_sessions(sessions) if sessions else 0
    return Stored(appended.inserted, appended.duplicates, alerts, refreshed)
