"""Embedded restart from a snapshot (issue 19): the engine state and every later decision are
the same as after replaying the whole journal; finished sessions are evicted live and the
eviction is repeated at recovery; a damaged, foreign or missing snapshot means a full replay.

The journal and the snapshot file are real; the compliance log is a small in-memory fake."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from remsguard.adapters.metrics import new_registry
from remsguard.adapters.telemetry import Telemetry
from remsguard.bootstrap import load_protocols
from remsguard.contract.decode import decode_event
from remsguard.domain.decisions import Decisions
from remsguard.domain.engine import MonitoringEngine
from remsguard.domain.events import Event
from remsguard.embedded.ingest import Incoming
from remsguard.embedded.journal import EventJournal
from remsguard.embedded.runtime import EmbeddedRuntime
from remsguard.embedded.snapshot import (
    EngineImage,
    Position,
    Snapshot,
    SnapshotStore,
    engine_version,
    protocols_version,
)

from .runtime_kit import MemoryLog

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
RETENTION = timedelta(hours=1)


class _Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def _session(index: int) -> Iterator[tuple[datetime, bytes]]:
    """A session every 40 minutes: opened, BP, dose, readings every 10 minutes (some low),
    discharged at 127 minutes; every fourth is never discharged."""
    sid, start = f"s{index}", T0 + timedelta(minutes=40 * index)
    rows: list[tuple[int, str, dict[str, object]]] = [
        (0, "session.opened", {"patient_ref": f"p{index}"}),
        (5, "vitals.recorded", {"systolic": 124, "diastolic": 80}),
        (10, "dose.administered", {"drug": "esketamine", "route": "intranasal", "dose_mg": 56}),
    ]
    for minute in range(20, 140, 10):
        spo2 = 86 if (index + minute) % 70 == 0 else 97
        rows.append((minute, "vitals.recorded", {"spo2": spo2, "systolic": 130, "diastolic": 82}))
    if index % 4 != 3:
        rows.append((137, "session.discharged", {"staff_id": "rn", "clinically_stable": True}))
    for n, (minute, kind, data) in enumerate(rows):
        at = start + timedelta(minutes=minute)
        doc = {"type": kind, "event_id": f"{sid}-{n}", "session_id": sid, "clinic_id": "c1"}
        yield at, orjson.dumps({**doc, "occurred_at": at.isoformat(), "data": data})


def _traffic(sessions: int) -> list[tuple[datetime, bytes]]:
    return sorted((row for i in range(sessions) for row in _session(i)), key=lambda r: r[0])


def _store(path: Path, engine: MonitoringEngine) -> SnapshotStore:
    return SnapshotStore(path / "engine.snapshot", engine_version(), protocols_version(engine))


def _runtime(
    path: Path, clock: _Clock, *, snapshots: bool = True, every: int = 1_000_000
) -> EmbeddedRuntime:
    engine = MonitoringEngine(load_protocols())
    return EmbeddedRuntime(
        engine,
        EventJournal(path / "journal.db"),
        MemoryLog(),
        Telemetry(new_registry()),
        now=clock,
        retention=RETENTION,
        eviction_interval=0.0,  # after every step
        snapshots=_store(path, engine) if snapshots else None,
        snapshot_every_events=every,  # by default only on a graceful stop
    )


async def _post(
    runtime: EmbeddedRuntime, clock: _Clock, rows: list[tuple[datetime, bytes]]
) -> None:
    for at, raw in rows:
        clock.now = max(clock.now, at + timedelta(seconds=20))
        results = await runtime.submit([Incoming(raw, decode_event(raw))], None)
        assert results[0].reason is None, results[0]


def _state(engine: MonitoringEngine) -> tuple[object, ...]:
    image = EngineImage.of(engine)
    return image.sessions, image.clock, image.evicted


def _later(engine: MonitoringEngine, end: datetime) -> list[Decisions]:
    """What the engine decides next: late events (for a held session, for an evicted one),
    a new session, and the clock two days on."""
    late = [raw for _, raw in _session(3)][-3:] + [raw for _, raw in _session(0)][-2:]
    fresh = [raw for _, raw in _session(60)]
    out = []
    for raw in late + fresh:
        decoded = decode_event(raw)
        assert isinstance(decoded, Event)
        out.append(engine.handle(decoded))
    out.append(engine.advance_to(end + timedelta(days=2)))
    return out


@pytest.mark.parametrize("every", [1_000_000, 40], ids=["at-stop", "forked-every-40"])
def test_a_restart_from_a_snapshot_equals_a_full_replay(tmp_path: Path, every: int) -> None:
    """The second run ends as a crash would; with `every` 40 it also snapshots on the way,
    from forked children, and the restart uses whichever snapshot was last renamed in."""
    traffic = _traffic(24)
    half = len(traffic) // 2
    clock = _Clock()

    async def first() -> None:
        runtime = _runtime(tmp_path, clock)
        assert runtime.recover().snapshot is None  # nothing yet
        await runtime.start()
        await _post(runtime, clock, traffic[:half])
        await runtime.stop()  # writes the snapshot
        runtime.journal.close()

    asyncio.run(first())
    live: list[EmbeddedRuntime] = []

    async def second_then_crash() -> None:
        runtime = _runtime(tmp_path, clock, every=every)
        summary = runtime.recover()
        assert summary.snapshot is not None and summary.events == 0
        await runtime.start()
        await _post(runtime, clock, traffic[half:])
        clock.now += timedelta(hours=3)  # every session finished long enough: evicted
        fresh = _fresh("late-0", clock.now - timedelta(minutes=1))
        assert (await runtime.submit([Incoming(*fresh)], None))[0].reason is None
        # Once more (a duplicate): answered after the eviction that followed the last step.
        assert (await runtime.submit([Incoming(*fresh)], None))[0].outcome.value == "duplicate"
        live.append(runtime)
        # no stop: asyncio.run cancels the runtime task, as a crash would end it

    asyncio.run(second_then_crash())
    crashed = live[0].engine
    assert crashed.tombstones, "finished sessions were evicted live"

    from_snapshot = _runtime(tmp_path, clock)
    summary = from_snapshot.recover()
    assert summary.snapshot is not None
    assert 0 < summary.events < len(traffic) and summary.evictions > 0
    full = _runtime(tmp_path, clock, snapshots=False)
    replayed = full.recover()
    assert replayed.snapshot is None and replayed.events == len(traffic) + 1

    assert _state(from_snapshot.engine) == _state(full.engine) == _state(crashed)
    assert _later(from_snapshot.engine, clock.now) == _later(full.engine, clock.now)


def _fresh(event_id: str, at: datetime) -> tuple[bytes, Event]:
    raw = orjson.dumps(
        {
            "type": "session.opened",
            "event_id": event_id,
            "session_id": "s-late",
            "clinic_id": "c1",
            "occurred_at": at.isoformat(),
            "data": {"patient_ref": "p-late"},
        }
    )
    decoded = decode_event(raw)
    assert isinstance(decoded, Event)
    return raw, decoded


def test_a_damaged_or_foreign_snapshot_means_a_full_replay(tmp_path: Path) -> None:
    traffic = _traffic(4)
    clock = _Clock()

    async def run() -> None:
        runtime = _runtime(tmp_path, clock)
        runtime.recover()
        await runtime.start()
        await _post(runtime, clock, traffic)
        await runtime.stop()
        runtime.journal.close()

    asyncio.run(run())
    path = tmp_path / "engine.snapshot"
    good = path.read_bytes()
    expected = _runtime(tmp_path, clock, snapshots=False)
    expected.recover()

    def restart() -> tuple[Position | None, tuple[object, ...]]:
        runtime = _runtime(tmp_path, clock)
        summary = runtime.recover()
        runtime.journal.close()
        return summary.snapshot, _state(runtime.engine)

    assert restart()[0] is not None
    damaged = bytearray(good)
    damaged[-10] ^= 0xFF
    for blob in (bytes(damaged), good[:-1], b"", good.replace(b'"engine":"', b'"engine":"x', 1)):
        path.write_bytes(blob)
        assert restart() == (None, _state(expected.engine))
    path.unlink()
    assert restart() == (None, _state(expected.engine))


def test_a_snapshot_is_read_back_only_by_the_versions_that_wrote_it(tmp_path: Path) -> None:
    engine = MonitoringEngine(load_protocols())
    snapshot = Snapshot(Position(3, 1, 2), EngineImage.of(engine), {"s1": ("p", None)})
    store = SnapshotStore(tmp_path / "s", "engine-a", "protocols-a")
    store.write(snapshot)
    loaded = store.read()
    assert isinstance(loaded, Snapshot) and loaded.position == Position(3, 1, 2)
    assert loaded.marked == {"s1": ("p", None)}
    assert "engine" in str(SnapshotStore(tmp_path / "s", "engine-b", "protocols-a").read())
    assert "protocols" in str(SnapshotStore(tmp_path / "s", "engine-a", "protocols-b").read())
    assert not list(tmp_path.glob("s.*tmp"))


def test_a_pending_snapshot_is_read_only_once_published(tmp_path: Path) -> None:
    """Written before its state is recorded, a snapshot waits as pending: recovery does not
    see it until `publish`, and one left by a killed process is discarded at start."""
    engine = MonitoringEngine(load_protocols())
    store = SnapshotStore(tmp_path / "s", "engine-a", "protocols-a")
    store.write(Snapshot(Position(1, 0, 0), EngineImage.of(engine), {}))
    store.write(Snapshot(Position(5, 0, 0), EngineImage.of(engine), {}), publish=False)
    first = store.read()
    assert isinstance(first, Snapshot) and first.position == Position(1, 0, 0)
    assert store.publish()
    published = store.read()
    assert isinstance(published, Snapshot) and published.position == Position(5, 0, 0)
    assert not store.publish()  # nothing pending any more

    store.write(Snapshot(Position(9, 0, 0), EngineImage.of(engine), {}), publish=False)
    assert store.discard_temporaries() == 1 and not store.pending.exists()
    kept = store.read()
    assert isinstance(kept, Snapshot) and kept.position == Position(5, 0, 0)
