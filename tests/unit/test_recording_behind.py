"""Embedded ingest answers once events are journaled; the compliance log is written just
behind (issue 19, `embedded/recorder.py`). Reads wait for it (`caught_up`), a failed write is
retried in order and never skipped, nothing unrecorded is snapshotted, and what a stop could
not record is re-recorded by recovery from the journal.

The journal is real; the compliance log is the in-memory fake, with a gate that holds its
writes and a switch that makes them fail."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import orjson
import pytest

from remsguard.adapters.metrics import new_registry
from remsguard.adapters.storage import DecisionsRecorded
from remsguard.adapters.telemetry import Telemetry
from remsguard.bootstrap import load_protocols
from remsguard.contract.decode import decode_event
from remsguard.domain.decisions import Alert, AuditKind, AuditRecord, Decisions
from remsguard.domain.engine import MonitoringEngine
from remsguard.domain.events import Event
from remsguard.embedded.ingest import Incoming
from remsguard.embedded.journal import Checkpoint, EventJournal
from remsguard.embedded.recorder import DecisionRecorder
from remsguard.embedded.runtime import EmbeddedRuntime
from remsguard.embedded.snapshot import SnapshotStore, engine_version, protocols_version

from .runtime_kit import MemoryLog

NOW = datetime.now(UTC).replace(microsecond=0)


class GatedLog(MemoryLog):
    """Writes wait for `gate`; with `failing` set they raise instead."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.failing = False
        self.writes = 0

    def record_decisions(
        self, events: Iterable[Event], alerts: Iterable[Alert], audit: Iterable[AuditRecord]
    ) -> DecisionsRecorded:
        assert self.gate.wait(10), "the test never opened the gate"
        if self.failing:
            raise OSError("disk full")
        self.writes += 1
        return super().record_decisions(events, alerts, audit)


def _event(n: int, session: str = "s1") -> tuple[bytes, Event]:
    kind, data = (
        ("session.opened", {"patient_ref": "p1"})
        if n == 0
        else ("vitals.recorded", {"spo2": 91, "systolic": 130, "diastolic": 80})
    )
    raw = orjson.dumps(
        {
            "type": kind,
            "event_id": f"{session}-{n}",
            "session_id": session,
            "clinic_id": "c1",
            "occurred_at": (NOW - timedelta(minutes=30 - n)).isoformat(),
            "data": data,
        }
    )
    decoded = decode_event(raw)
    assert isinstance(decoded, Event)
    return raw, decoded


def _runtime(
    path: Path, log: GatedLog, *, snapshots: bool = False, every: int = 100_000
) -> EmbeddedRuntime:
    engine = MonitoringEngine(load_protocols())
    store = SnapshotStore(path / "engine.snapshot", engine_version(), protocols_version(engine))
    return EmbeddedRuntime(
        engine,
        EventJournal(path / "journal.db"),
        log,
        Telemetry(new_registry()),
        now=lambda: NOW,
        snapshots=store if snapshots else None,
        snapshot_every_events=every,
    )


async def _submit(runtime: EmbeddedRuntime, n: int) -> None:
    results = await runtime.submit([Incoming(*_event(n))], None)
    assert results[0].reason is None, results[0]


async def _recorded(read: Callable[[], Awaitable[bool]]) -> None:
    """Ask until a read finds the log caught up (a retry comes `retry_pause` later)."""
    for _ in range(100):
        if await read():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the log never caught up")


def test_a_request_is_answered_before_its_decisions_are_recorded_and_reads_wait(
    tmp_path: Path,
) -> None:
    log = GatedLog()
    runtime = _runtime(tmp_path, log)
    runtime.recover()

    async def run() -> None:
        await runtime.start()
        log.gate.clear()  # the compliance log stalls
        await asyncio.wait_for(_submit(runtime, 0), 5)  # answered all the same
        await asyncio.wait_for(_submit(runtime, 1), 5)  # SpO2 91: SPO2_LOW
        assert not log.alerts
        assert not await runtime.caught_up(timeout=0.3)  # a read would wait
        waiting = asyncio.create_task(runtime.caught_up(timeout=5))
        await asyncio.sleep(0.05)
        log.gate.set()
        assert await waiting  # ...and sees the alert once it is written
        assert [a.rule for a in log.alerts] == ["SPO2_LOW"]
        assert await runtime.caught_up(timeout=0.1)  # nothing behind: at once
        await runtime.stop()

    asyncio.run(run())
    assert runtime.journal.recorded_through() == runtime.journal.last()


def test_a_failed_write_is_retried_in_order_and_a_stop_leaves_the_rest_to_recovery(
    tmp_path: Path,
) -> None:
    log = GatedLog()
    runtime = _runtime(tmp_path, log, snapshots=True)
    runtime.recover()

    async def run() -> None:
        await runtime.start()
        log.failing = True
        await _submit(runtime, 0)
        await _submit(runtime, 1)
        assert not await runtime.caught_up(timeout=0.3)
        await runtime.stop()  # still failing: nothing recorded, no snapshot of it

    asyncio.run(run())
    assert not log.audit and not log.alerts
    assert runtime.journal.recorded_through() == Checkpoint()
    assert not (tmp_path / "engine.snapshot").exists()
    runtime.journal.close()

    healthy = GatedLog()
    restarted = _runtime(tmp_path, healthy, snapshots=True)
    summary = restarted.recover()
    assert summary.snapshot is None and summary.events == 2
    assert [a.rule for a in healthy.alerts] == ["SPO2_LOW"]  # re-recorded from the journal
    assert {r.subject_id for r in healthy.audit} >= {"s1-0", "s1-1"}


def test_a_failing_log_does_not_hold_ingest_up_for_snapshots(tmp_path: Path) -> None:
    """A snapshot is due after every event here, but the log fails: a snapshot waits for
    nothing that cannot come, and each request is answered at once (not one per 5 s); a
    read is served at once from what the log holds."""
    log = GatedLog()
    runtime = _runtime(tmp_path, log, snapshots=True, every=1)
    runtime.recover()

    async def run() -> None:
        await runtime.start()
        log.failing = True
        for n in range(4):
            await asyncio.wait_for(_submit(runtime, n), 2.0)
            await asyncio.sleep(0.05)  # let a snapshot begun after the step be written
        # One snapshot was taken and not published (its state is not recorded); the next
        # waits a while instead of forking the engine again after every step.
        begun = runtime.telemetry.registry.get_sample_value(
            "remsguard_engine_snapshot_seconds_count"
        )
        assert begun == 1
        # A read does not stall either: it is told at once that the log is behind.
        assert not await asyncio.wait_for(runtime.caught_up(timeout=5), 1.0)
        log.failing = False
        await _recorded(lambda: runtime.caught_up(timeout=5))  # retried, then recorded
        await runtime.stop()

    asyncio.run(run())
    assert [a.rule for a in log.alerts] == ["SPO2_LOW"]
    assert (tmp_path / "engine.snapshot").exists()  # once recorded, the stop's snapshot


def test_the_recorder_writes_queued_steps_together_oldest_first_after_a_failure() -> None:
    written: list[list[str]] = []
    fail = [True]
    failures: list[int] = []
    recorded: list[Checkpoint] = []

    def write(decisions: Decisions, _events: object) -> None:
        if fail[0]:
            fail[0] = False
            raise OSError("locked")
        written.append([r.record_id for r in decisions.audit])

    def step(record_id: str) -> Decisions:
        record = AuditRecord(record_id, AuditKind.EVENT_ACCEPTED, record_id, "s1", "c1", NOW)
        return Decisions(audit=[record])

    async def run() -> None:
        recorder = DecisionRecorder(
            write,
            lambda through, _d, _lag: recorded.append(through),
            lambda: failures.append(1),
            retry_pause=0.05,
        )
        recorder.start()
        recorder.queue(step("a"), [], Checkpoint(1, 0))
        recorder.queue(step("b"), [], Checkpoint(2, 0))
        assert not await recorder.caught_up(Checkpoint(2, 0))  # at once: the write failed
        await _recorded(lambda: recorder.caught_up(Checkpoint(2, 0)))  # after the retry
        recorder.queue(Decisions(), [], Checkpoint(3, 0))  # nothing to write: moves at once
        assert recorder.recorded == Checkpoint(3, 0) and recorder.idle
        await recorder.stop()

    asyncio.run(run())
    assert failures == [1]
    assert [ids for batch in written for ids in batch] == ["a", "b"]  # in order, once each
    assert recorded[-1] == Checkpoint(2, 0)


def _recorder(written: list[list[str]], linger: float) -> DecisionRecorder:
    def write(decisions: Decisions, _events: object) -> None:
        written.append([r.record_id for r in decisions.audit])

    return DecisionRecorder(write, lambda *_: None, lambda: None, linger=linger)


def _step(record_id: str) -> Decisions:
    record = AuditRecord(record_id, AuditKind.EVENT_ACCEPTED, record_id, "s1", "c1", NOW)
    return Decisions(audit=[record])


def test_steps_gather_for_the_linger_and_are_written_in_one_transaction() -> None:
    written: list[list[str]] = []

    async def run() -> None:
        recorder = _recorder(written, linger=0.2)
        recorder.start()
        for n, name in enumerate("abc", 1):
            recorder.queue(_step(name), [], Checkpoint(n, 0))
            await asyncio.sleep(0.02)
        assert written == []  # nobody waits: still gathering
        await asyncio.sleep(0.4)
        assert written == [["a", "b", "c"]]  # one write, after the linger
        await recorder.stop()

    asyncio.run(run())


def test_a_waiting_reader_ends_the_linger_at_once() -> None:
    written: list[list[str]] = []

    async def run() -> None:
        recorder = _recorder(written, linger=30.0)
        recorder.start()
        recorder.queue(_step("a"), [], Checkpoint(1, 0))
        await asyncio.sleep(0.02)
        started = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(recorder.caught_up(Checkpoint(1, 0)), timeout=2.0)
        assert asyncio.get_running_loop().time() - started < 1.0
        assert written == [["a"]]
        recorder.queue(_step("b"), [], Checkpoint(2, 0))
        await asyncio.wait_for(recorder.settled(), timeout=2.0)  # a snapshot's wait, too
        assert written == [["a"], ["b"]]
        await recorder.stop()

    asyncio.run(run())


def test_a_snapshot_due_while_the_log_is_behind_holds_nothing_up_and_waits_to_be_published(
    tmp_path: Path,
) -> None:
    """The log stalls (writes wait) and a snapshot is due after every event: each request is
    answered at once (a snapshot used to hold ingest up to 5 s waiting for the recorder);
    the snapshot waits as pending and is published only once the log holds its state."""
    log = GatedLog()
    runtime = _runtime(tmp_path, log, snapshots=True, every=1)
    runtime.recover()
    published = tmp_path / "engine.snapshot"

    async def run() -> None:
        await runtime.start()
        log.gate.clear()
        loop = asyncio.get_running_loop()
        for n in range(3):
            started = loop.time()
            await asyncio.wait_for(_submit(runtime, n), 5.0)
            assert loop.time() - started < 1.0
        await asyncio.sleep(0.3)
        assert not published.exists() and not log.alerts  # nothing recorded, nothing published
        log.gate.set()
        await _recorded(lambda: runtime.caught_up(timeout=5))
        for _ in range(100):
            if published.exists():
                break
            await asyncio.sleep(0.05)
        assert published.exists()
        await runtime.stop()

    asyncio.run(run())
    assert [a.rule for a in log.alerts] == ["SPO2_LOW"]
    restarted = _runtime(tmp_path, GatedLog(), snapshots=True)
    assert restarted.recover().snapshot is not None  # a restart starts from it


def _recovered(path: Path) -> tuple[GatedLog, EmbeddedRuntime]:
    log = GatedLog()
    runtime = _runtime(path, log)
    runtime.recover()
    return log, runtime


def _access(record_id: str, detail: dict[str, object]) -> AuditRecord:
    kind = cast(AuditKind, "api.query")  # a service kind, as `log_query` makes it
    return AuditRecord(record_id, kind, "principal-1", None, None, NOW, detail)


def test_a_service_record_is_durable_before_the_log_writes_it_and_reads_do_not_wait_for_it(
    tmp_path: Path,
) -> None:
    log, runtime = _recovered(tmp_path)
    access = _access("q1", {"endpoint": "/v1/audit/records", "filters": {"kind": "x"}})

    async def run() -> None:
        await runtime.start()
        await _submit(runtime, 0)
        assert await runtime.caught_up(timeout=2)
        log.gate.clear()  # the compliance log stalls
        await asyncio.wait_for(runtime.record(access), 2)  # answered all the same
        assert [r.record_id for r in runtime.journal.service_records()] == ["q1"]
        assert await asyncio.wait_for(runtime.caught_up(timeout=5), 0.5)  # not held by it
        with pytest.raises(ValueError, match="not JSON"):  # fails alone, journals nothing
            await runtime.record(_access("q2", {"at": NOW}))
        log.gate.set()
        await _recorded(lambda: _holds(log, "q1"))
        await runtime.stop()

    asyncio.run(run())
    written = next(r for r in log.audit if r.record_id == "q1")
    assert written == access  # the same record the journal was given
    assert runtime.journal.recorded_through() == runtime.journal.last()
    assert runtime.journal.last().service_records == 1


async def _holds(log: MemoryLog, record_id: str) -> bool:
    return any(r.record_id == record_id for r in log.audit)


def test_recovery_records_the_service_records_the_log_lost_and_survives_a_bad_one(
    tmp_path: Path,
) -> None:
    log, runtime = _recovered(tmp_path)

    async def run() -> None:
        await runtime.start()
        log.failing = True  # nothing reaches the log: as a crash right after the answers
        await runtime.record(_access("q1", {"rows": 3}))
        await runtime.record(_access("q2", {"rows": 0}))
        await runtime.stop()

    asyncio.run(run())
    assert not log.audit
    runtime.journal.close()
    with sqlite3.connect(tmp_path / "journal.db") as journal:  # a row edited by hand
        journal.execute(
            "UPDATE service_records SET detail = '{broken', clinic_id = 7 WHERE record_id = 'q2'"
        )

    healthy, restarted = _recovered(tmp_path)
    assert [(r.record_id, r.clinic_id, r.detail) for r in healthy.audit] == [
        ("q1", None, {"rows": 3}),
        ("q2", "7", {"unreadable_detail": "{broken"}),
    ]
    assert restarted.journal.recorded_through().service_records == 2
    restarted.journal.close()
    again, _ = _recovered(tmp_path)  # recorded through them: not written again
    assert not again.audit
