"""The one step of every path (replay, embedded ingest and recovery, the stream step):
an event, decoded (or refused, with its reason) by the caller's transport, goes to the
engine; the clock moves as the path's policy says; every decision goes to the path's sink.
A new rule lives in the engine; a new sink is one `DecisionSink`; neither touches a path."""

from __future__ import annotations

from datetime import datetime

from remsguard.domain.decisions import Decisions, Rejection
from remsguard.domain.engine import MonitoringEngine
from remsguard.domain.events import Event
from remsguard.monitoring.ports import DecisionSink, EventClock

__all__ = ["advance", "monitor"]


def monitor(
    engine: MonitoringEngine,
    arrival: Event | Rejection,
    source: str,
    clock: EventClock,
    sink: DecisionSink,
    recorded: datetime | None = None,
) -> Decisions:
    """Apply one arrival and return the engine's decisions on it (those of the clock's
    moves went to `sink` too, before and after them). A rejection is recorded with its
    `source` (where the transport got it: `line:12`, `topic/partition/offset`, …)."""
    if isinstance(arrival, Rejection):
        decisions = engine.reject(arrival, source=source)
        sink(decisions, None)
        return decisions
    before = clock.before(arrival, recorded)
    if before is not None:
        advance(engine, before, sink)
    decisions = engine.handle(arrival)
    sink(decisions, arrival)
    after = clock.after(arrival)
    if after is not None:
        current = engine.clock
        if current is None or after > current:
            advance(engine, after, sink)
    return decisions


def advance(engine: MonitoringEngine, to: datetime, sink: DecisionSink) -> Decisions:
    """Move the engine's clock (a tick, the end of a replay, start-up's now): the deadlines
    now due are decided and go to `sink`."""
    due = engine.advance_to(to)
    sink(due, None)
    return due
