"""`replay`'s summary and line numbers: blank lines skipped but counted, each outcome counted."""

from __future__ import annotations

import orjson

from remsguard.domain.decisions import Alert, AuditRecord, Rejection
from remsguard.domain.engine import MonitoringEngine
from remsguard.handlers.replay import ReplayEvents, replay

from .scenario import T0, protocols


def _line(event_id: str, minute: int, data: dict[str, object]) -> bytes:
    return orjson.dumps(
        {
            "event_id": event_id,
            "type": "vitals.recorded",
            "session_id": "s1",
            "clinic_id": "c1",
            "occurred_at": f"2026-11-23T09:{minute:02d}:00Z",
            "data": data,
        }
    )


def test_blank_lines_are_skipped_and_every_outcome_is_counted() -> None:
    low = _line("e2", 2, {"spo2": 85})
    lines = [
        b"",
        _line("e1", 1, {"spo2": 97}),
        b"\n",
        b" \t\r\n\x0b\x0c",
        low,
        low,  # a duplicate
        b"{not json",
        _line("e3", 3, {"spo2": 300}),  # out of range
        _line("e4", 4, {"spo2": 98}) + b"\n",
    ]
    alerts: list[Alert] = []
    rejected: list[tuple[int, str]] = []
    audit: list[AuditRecord] = []

    def on_rejected(number: int, rejection: Rejection) -> None:
        rejected.append((number, rejection.reason))

    summary = replay(
        ReplayEvents(lines), MonitoringEngine(protocols()), alerts.append, on_rejected, audit.append
    )
    assert rejected == [(7, "invalid_json"), (8, "out_of_range")]
    assert [a.rule for a in alerts] == ["SPO2_CRITICAL"]
    assert (summary.accepted, summary.duplicates, summary.rejected) == (3, 1, 2)
    assert summary.alerts == 1
    assert summary.audit_records == len(audit) == 3 + 1 + 2  # accepted, alert raised, rejected
    assert summary.last_event_at == T0.replace(minute=4)


def test_without_an_audit_sink_the_summary_counts_the_same() -> None:
    lines = [_line(f"e{m}", m, {"spo2": 97 if m % 3 else 85}) for m in range(1, 20)]
    lines += [lines[4], b"   "]
    summaries = [
        replay(ReplayEvents(lines), MonitoringEngine(protocols()), lambda a: None, print, sink)
        for sink in (lambda r: None, None)
    ]
    assert summaries[0] == summaries[1]
    assert (summaries[0].accepted, summaries[0].duplicates) == (19, 1)
