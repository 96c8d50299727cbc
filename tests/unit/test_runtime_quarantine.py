"""An event the engine fails on is quarantined in the journal, live and at recovery: it is
answered as rejected, the other events of its request go through, and a restart skips it.

The journal is the real SQLite one; the compliance log is a small in-memory fake."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

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

from .runtime_kit import MemoryLog

NOW = datetime.now(UTC).replace(microsecond=0)


class _FailingEngine(MonitoringEngine):
    """The engine with a bug that only one event triggers."""

    def handle(self, event: Event) -> Decisions:
        if event.event_id == "poison":
            raise ArithmeticError("a bug in the engine")
        return super().handle(event)


def _item(event_id: str, minutes_ago: int) -> Incoming:
    raw = orjson.dumps(
        {
            "type": "vitals.recorded",
            "event_id": event_id,
            "session_id": "s1",
            "clinic_id": "c1",
            "occurred_at": (NOW - timedelta(minutes=minutes_ago)).isoformat(),
            "data": {"spo2": 97},
        }
    )
    return Incoming(raw, decode_event(raw))


def _runtime(path: Path, log: MemoryLog) -> EmbeddedRuntime:
    engine = _FailingEngine(load_protocols())
    return EmbeddedRuntime(engine, EventJournal(path), log, Telemetry(new_registry()))


def test_an_event_the_engine_fails_on_is_quarantined_live_and_skipped_at_restart(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.db"
    log = MemoryLog()

    async def live() -> list[tuple[str, str | None]]:
        runtime = _runtime(path, log)
        runtime.recover()
        await runtime.start()
        try:
            results = await runtime.submit([_item("a", 3), _item("poison", 2), _item("b", 1)], None)
        finally:
            await runtime.stop()
            runtime.journal.close()
        return [(r.outcome.value, r.reason) for r in results]

    assert asyncio.run(live()) == [
        ("accepted", None),
        ("rejected", "processing_error"),
        ("accepted", None),
    ]
    assert [e.event_id for e in log.events] == ["a", "b"]

    restarted = _runtime(path, MemoryLog())
    summary = restarted.recover()  # the poison event is not applied again
    assert (summary.events, summary.quarantined) == (2, 0)
    assert restarted.engine.sessions["s1"].seen == {"a", "b"}
    assert [reason for _, reason, _ in restarted.journal.quarantined()] == ["processing_error"]
    restarted.journal.close()
