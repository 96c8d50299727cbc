"""Replay decodes lines a batch at a time (`ReplayEvents.read_ahead`) with `decode_events`:
the same answers as `decode_event` line by line, and the same outputs in the same order
whatever the batch size (issue 19)."""

from __future__ import annotations

import gzip
import select
import subprocess
import sys
from pathlib import Path

import orjson

from remsguard.bootstrap import build_engine
from remsguard.contract.decode import MAX_EVENT_BYTES, decode_event, decode_events
from remsguard.contract.outbound import alert_to_json, audit_record_to_json
from remsguard.domain.decisions import Alert, AuditRecord, Rejection, Withdrawal
from remsguard.handlers.replay import ReplayEvents, replay

CORPUS = Path(__file__).resolve().parent.parent / "fixtures" / "changelog" / "events.jsonl.gz"


def _lines() -> list[bytes]:
    lines = gzip.decompress(CORPUS.read_bytes()).splitlines()
    good = orjson.loads(lines[5])
    hostile = [
        b"",
        b"   ",
        b"{not json",
        b"[]",
        b"null",
        orjson.dumps({**good, "type": "no.such"}),
        orjson.dumps({**good, "occurred_at": "2026-11-23T10:00:00"}),
        orjson.dumps({**good, "data": {**good["data"], "extra": 1}}),
        orjson.dumps({k: v for k, v in good.items() if k != "session_id"}),
        orjson.dumps({**good, "event_id": "x" * MAX_EVENT_BYTES}),
        orjson.dumps({**good, "event_id": "é" * (MAX_EVENT_BYTES // 4)}),
        orjson.dumps({**good, "event_id": "\U0001f600" * (MAX_EVENT_BYTES // 4 + 1)}),
        b'{"event_id": "\\ud800"}',
    ]
    return hostile + lines + hostile


def test_decode_events_answers_as_decode_event_line_by_line() -> None:
    lines = _lines()
    got = decode_events(lines)
    want = [decode_event(line) for line in lines]
    assert got == want
    assert got == decode_events([line.decode("utf-8", "surrogatepass") for line in lines])
    assert sum(isinstance(e, Rejection) for e in got) > 20


def _outputs(read_ahead: int) -> tuple[list[bytes], object]:
    out: list[bytes] = []

    def on_alert(alert: Alert) -> None:
        out.append(b"A" + alert_to_json(alert))

    def on_rejected(number: int, rejection: Rejection) -> None:
        out.append(f"X{number} {rejection!r}".encode())

    def on_audit(record: AuditRecord) -> None:
        out.append(b"R" + audit_record_to_json(record))

    def on_withdrawal(withdrawal: Withdrawal) -> None:
        out.append(f"W{withdrawal!r}".encode())

    command = ReplayEvents(_lines(), read_ahead=read_ahead)
    engine = build_engine("spravato-rems", None)
    summary = replay(command, engine, on_alert, on_rejected, on_audit, on_withdrawal)
    return out, summary


def test_the_outputs_do_not_depend_on_the_read_ahead() -> None:
    one, summary = _outputs(1)
    assert len(one) > 1000
    for read_ahead in (2, 7, 1000, 100_000):
        assert _outputs(read_ahead) == (one, summary)


def test_a_pipe_gets_each_events_alerts_before_the_next_line_arrives() -> None:
    """`remsguard replay -` reading a pipe (a live feed) answers line by line; a file is read
    ahead (the outputs are the same, above)."""
    at = "2026-11-23T09:00:00Z"
    envelope = {"session_id": "s1", "clinic_id": "c1", "occurred_at": at}
    opened = {**envelope, "type": "session.opened", "event_id": "e1", "data": {"patient_ref": "p"}}
    low = {**envelope, "type": "vitals.recorded", "event_id": "e2", "data": {"spo2": 84}}
    process = subprocess.Popen(
        [sys.executable, "-m", "remsguard", "replay", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        process.stdin.write(orjson.dumps(opened) + b"\n" + orjson.dumps(low) + b"\n")
        process.stdin.flush()  # and nothing more yet: the pipe stays open
        ready, _, _ = select.select([process.stdout], [], [], 60)
        assert ready, "no alert before the next line"
        assert orjson.loads(process.stdout.readline())["rule"] == "SPO2_CRITICAL"
    finally:
        process.stdin.close()
        process.wait(60)
