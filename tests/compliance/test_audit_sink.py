"""`remsguard audit-sink` on the real broker: the same rows as `replay --db`, and re-delivery
(duplicates on the topic, or a whole topic consumed again after lost offsets) inserts nothing
twice."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaProducer
from typer.testing import CliRunner

from remsguard.adapters.storage import AuditQuery, ComplianceLog, verify_log
from remsguard.adapters.storage.chain import EVENT_STORED
from remsguard.bootstrap import build_engine
from remsguard.contract.outbound import alert_to_json, audit_record_to_json
from remsguard.domain.decisions import Alert, AuditRecord, Rejection
from remsguard.entrypoints.cli import app
from remsguard.handlers.replay import ReplayEvents, replay

from .factories import synthetic_events

runner = CliRunner()


def engine_output(lines: list[bytes]) -> tuple[list[AuditRecord], list[Alert]]:
    records: list[AuditRecord] = []
    alerts: list[Alert] = []

    def rejected(_line: int, rejection: Rejection) -> None:
        raise AssertionError(rejection)

    replay(
        ReplayEvents(lines), build_engine("spravato-rems"), alerts.append, rejected, records.append
    )
    return records, alerts


def sink(url: str, bootstrap: str, audit: str, alerts: str, group: str) -> None:
    result = runner.invoke(
        app,
        [
            "audit-sink",
            "--db",
            url,
            "--bootstrap",
            bootstrap,
            "--topic",
            audit,
            "--alerts-topic",
            alerts,
            "--group",
            group,
            "--batch",
            "700",
            "--idle-timeout",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output


@pytest.mark.kafka
def test_audit_sink_is_idempotent_under_redelivery(
    kafka_bootstrap: str, fresh_topic: Callable[[str], str], tmp_path: Path
) -> None:
    records, alerts = engine_output(synthetic_events(2000))
    assert alerts
    audit_topic, alerts_topic = fresh_topic("audit"), fresh_topic("alerts")
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)
    for record in [*records, *records[: len(records) // 3]]:  # a third delivered twice
        producer.send(
            audit_topic, key=(record.session_id or "").encode(), value=audit_record_to_json(record)
        )
    for alert in [*alerts, *alerts]:
        producer.send(alerts_topic, key=alert.session_id.encode(), value=alert_to_json(alert))
    producer.flush()
    producer.close()

    url = f"sqlite:///{tmp_path / 'log.db'}"
    sink(url, kafka_bootstrap, audit_topic, alerts_topic, "sink-a")
    with ComplianceLog.open(url) as log:
        assert log.size() == len({r.record_id for r in records})
        stored = {r.record_id for r in log.audit_records(AuditQuery(limit=1000)).items}
        assert stored <= {r.record_id for r in records}
        first_rows = log.size()
    # Offsets lost (new group): every message is delivered again.
    sink(url, kafka_bootstrap, audit_topic, alerts_topic, "sink-b")
    # The same file through replay --db into another database: the same rows.
    replay_url = f"sqlite:///{tmp_path / 'replay.db'}"
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"".join(synthetic_events(2000)))
    assert runner.invoke(app, ["replay", str(events), "--db", replay_url]).exit_code == 0
    with ComplianceLog.open(url) as log, ComplianceLog.open(replay_url) as replayed:
        # replay --db also stores the events (the sink here reads no input topic), each
        # session's vouched for by an event.stored record; the rest is the same.
        vouchers = {k for k in _keys(replayed) if k[1] == EVENT_STORED}
        assert {k[2] for k in vouchers} == {
            s.session_id for s in replayed.summaries.opened_between()
        }
        assert log.size() == first_rows == replayed.size() - len(vouchers)
        assert verify_log(log.engine).ok and verify_log(replayed.engine).ok
        assert _keys(log) == _keys(replayed) - vouchers
        sink_alerts = {a.alert_id for a in log.session_timeline(alerts[0].session_id)[1]}
        assert alerts[0].alert_id in sink_alerts
        sessions = {s.session_id: s for s in log.summaries.opened_between()}
        replay_sessions = {s.session_id: s for s in replayed.summaries.opened_between()}
        assert sessions.keys() == replay_sessions.keys()
        for sid, s in sessions.items():
            r = replay_sessions[sid]
            assert (s.alerts_total, s.events_accepted, s.rules) == (
                r.alerts_total,
                r.events_accepted,
                r.rules,
            )


def _keys(log: ComplianceLog) -> set[tuple[str, str, str | None, str]]:
    out: set[tuple[str, str, str | None, str]] = set()
    cursor = None
    while True:
        page = log.audit_records(AuditQuery(limit=1000, cursor=cursor))
        out.update((r.record_id, r.kind, r.session_id, r.detail) for r in page.items)
        if page.next_cursor is None:
            return out
        cursor = page.next_cursor
