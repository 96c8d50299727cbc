"""Changelog values written by an earlier engine still load, and the engine then decides as
it did: the stream processor's table (and changelog topic) outlives the code that wrote it.

The fixture (`tests/fixtures/changelog`, written by `make.py` with the code of c35090d): a
simulated clinic day with violations and reordering plus a few hand-made sessions (a
protocol with medications arriving after the readings, a dose after the discharge, observed
respiratory depression, an unstable discharge), replayed to line `SPLIT`; every session's
table value as that code wrote it; and every decision the engine made after loading them
and going on with the rest of the corpus (alerts, audit records, withdrawals, `next_due` and
readiness of every session right after loading and at the end).
"""

from __future__ import annotations

import gzip
import pickle
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

from remsguard.bootstrap import build_engine
from remsguard.contract.decode import decode_event
from remsguard.contract.outbound import alert_to_json, audit_record_to_json
from remsguard.domain.decisions import Decisions, Rejection
from remsguard.domain.engine import MonitoringEngine
from remsguard.handlers.stored_session import decode_stored_session

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "changelog"
SPLIT = 700


def steps(engine: MonitoringEngine, lines: list[bytes]) -> Iterator[int]:
    """Apply each valid line, the clock at the greatest event time; yields its number."""
    for number, line in enumerate(lines, start=1):
        event = decode_event(line)
        if isinstance(event, Rejection):
            continue
        engine.handle(event)
        if engine.clock is None or event.occurred_at > engine.clock:
            engine.advance_to(event.occurred_at)
        yield number


def first_half(lines: list[bytes]) -> MonitoringEngine:
    engine = build_engine("spravato-rems", None)
    for _ in steps(engine, lines):
        pass
    return engine


def load(path: Path) -> MonitoringEngine:
    """A new engine holding the stored sessions, as a worker taking the partitions over."""
    stored = pickle.loads(gzip.decompress(path.read_bytes()))
    engine = build_engine("spravato-rems", None)
    for session_id, blob in stored["values"].items():
        engine.sessions[session_id] = decode_stored_session(blob)[1]
    engine.clock = stored["clock"]
    engine.rebuild_schedule()
    return engine


def go_on(engine: MonitoringEngine, lines: list[bytes]) -> Iterator[bytes]:
    """Every decision from here, in order, as text lines."""

    def emit(decisions: Decisions) -> Iterator[bytes]:
        for alert in decisions.alerts:
            yield b"A " + alert_to_json(alert) + b"\n"
        for record in decisions.audit:
            yield b"R " + audit_record_to_json(record) + b"\n"
        for withdrawal in decisions.withdrawals:
            yield b"W " + repr(withdrawal).encode() + b"\n"
        if decisions.rejection is not None:
            yield b"X " + repr(decisions.rejection).encode() + b"\n"

    def look(now: datetime) -> Iterator[bytes]:
        for session_id in sorted(engine.sessions):
            due, ready = engine.next_due(session_id), engine.readiness(session_id, now)
            yield f"S {session_id} {due!r} {ready!r}\n".encode()

    assert engine.clock is not None
    yield from look(engine.clock)
    latest = engine.clock
    for number, line in enumerate(lines, start=1):
        event = decode_event(line)
        if isinstance(event, Rejection):
            yield from emit(engine.reject(event, source=f"line:{number}"))
            continue
        yield from emit(engine.handle(event))
        latest = max(latest, event.occurred_at)
        if engine.clock is None or event.occurred_at > engine.clock:
            yield from emit(engine.advance_to(event.occurred_at))
    yield from emit(engine.advance_to(latest + timedelta(days=1)))
    yield from look(latest + timedelta(days=1))


def test_values_written_before_still_load_and_the_engine_decides_the_same() -> None:
    lines = gzip.decompress((FIXTURE / "events.jsonl.gz").read_bytes()).splitlines()
    engine = load(FIXTURE / "values.pickle.gz")
    assert len(engine.sessions) > 10
    got = b"".join(go_on(engine, lines[SPLIT:])).splitlines()
    want = gzip.decompress((FIXTURE / "expected.txt.gz").read_bytes()).splitlines()
    assert len(got) == len(want)
    for number, (mine, theirs) in enumerate(zip(got, want, strict=True), start=1):
        assert mine == theirs, f"line {number}"
    kinds = {line[:1] for line in want}
    assert {b"A", b"R", b"S"} <= kinds  # alerts, records, looks (withdrawals: in the state)
