"""The stream processor evicts finished sessions (issue 19): the removal and the engine's
tombstone go to the table (so the changelog), a late event for an evicted session is
recorded and judged by no rule, on this worker and on the next one (restart, rebalance),
and the tombstone is deleted from the table when the engine forgets it."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import orjson

from remsguard.adapters.kafka.session_view import SessionView
from remsguard.handlers.stored_session import (
    Evicted,
    decode_stored,
    encode_evicted,
    encode_stored_session,
)

from .test_stream_handler import T0, TOPICS, Harness, bp, dose, event

DISCHARGE = T0 + timedelta(minutes=125)


def finished(h: Harness) -> None:
    """s1: dosed, read every 5 minutes, discharged stable at minute 125."""
    h.send(bp(1, -5))
    h.send(dose(2, 0))
    for n, minute in enumerate(range(5, 125, 5), start=3):
        h.send(bp(n, minute))
    h.send(event(99, "session.discharged", 125, staff_id="rn", clinically_stable=True))


def settle(h: Harness, wall: datetime) -> None:
    """Quiet inputs, then timer rounds at `wall` until no deadline is left to decide."""
    h.clock.now += 10
    while True:
        h.processor.clocks(h.ends(), wall)
        ticks = h.processor.due_ticks()
        if not ticks:
            return
        for partition, session_id, at in ticks:
            tick = h.processor.tick_value(at)
            h.processor.process(TOPICS.ticks, partition, 0, session_id.encode(), tick)


def flush(h: Harness) -> list[tuple[bytes, bytes | None]]:
    written = h.processor.flush(0)
    for key, value in written:
        if value is None:
            h.backing.pop(key, None)
        else:
            h.backing[key] = value
    return written


def kinds(result: Any) -> list[str]:
    return [orjson.loads(o.value).get("kind", "alert") for o in result.outbound]


def test_a_finished_session_is_evicted_and_its_tombstone_written() -> None:
    h = Harness()
    finished(h)
    settle(h, DISCHARGE + timedelta(hours=23))
    flush(h)
    assert h.processor.evict() == []  # within the retention: kept
    settle(h, DISCHARGE + timedelta(hours=25))
    assert h.processor.evict() == ["s1"]
    assert "s1" not in h.store and h.store.dirty(0)
    h.clock.now += h.processor.flush_seconds
    assert h.processor.should_flush(0)  # an eviction alone makes the partition flush
    assert flush(h) == [(b"s1", encode_evicted(0, Evicted("c1", DISCHARGE)))]
    assert decode_stored(h.backing[b"s1"]) == (0, Evicted("c1", DISCHARGE))
    assert len(h.backing[b"s1"]) < 100


def test_a_late_event_after_eviction_is_recorded_judged_by_no_rule_also_after_a_restart() -> None:
    h = Harness()
    finished(h)
    settle(h, DISCHARGE + timedelta(hours=25))
    assert h.processor.evict() == ["s1"]
    flush(h)
    late = h.send(bp(200, 130, systolic=200))  # a crisis reading, but after the end
    assert (late.outcome, late.alerts, kinds(late)) == ("accepted", [], ["event.accepted"])
    assert "s1" not in h.store  # no new session opened
    # A new worker recovers the table: the tombstone comes back with it.
    again = Harness(dict(h.backing))
    assert "s1" not in again.store and "s1" in again.store.evicted
    late = again.send(bp(201, 131, systolic=200))
    assert (late.outcome, late.alerts, kinds(late)) == ("accepted", [], ["event.accepted"])
    assert "s1" not in again.store
    other_clinic = orjson.loads(bp(202, 132))
    other_clinic["clinic_id"] = "c2"
    refused = again.send(orjson.dumps(other_clinic))
    assert refused.dead_letter_reason == "session_of_another_clinic"
    # A rebalance away and back: dropped with the partition, recovered with it.
    again.processor.revoke({0})
    assert "s1" not in again.store.evicted
    again.processor.assign({0})
    assert again.send(bp(203, 133)).alerts == [] and "s1" not in again.store


def test_a_forgotten_tombstone_is_deleted_from_the_table() -> None:
    h = Harness()
    finished(h)
    settle(h, DISCHARGE + timedelta(hours=25))
    h.processor.evict()
    flush(h)
    settle(h, DISCHARGE + timedelta(days=32))
    assert h.processor.evict() == []
    assert "s1" not in h.store.evicted
    h.clock.now += h.processor.flush_seconds
    assert flush(h) == [(b"s1", None)] and h.backing == {}
    assert h.store.partition_of("s1") is None


def test_a_backlog_holds_eviction_back() -> None:
    h = Harness()
    finished(h)
    settle(h, DISCHARGE + timedelta(hours=25))
    h.send(bp(300, 130, session="s1"))  # an input is active again: its event clock rules
    h.processor.clocks(h.ends(), DISCHARGE + timedelta(hours=26))
    assert h.processor.eviction_clock() == T0 + timedelta(minutes=130)
    assert h.processor.evict() == []


def test_the_console_view_drops_evicted_sessions_and_silent_opened_ones() -> None:
    now = DISCHARGE + timedelta(hours=2)
    clock = [now]
    view = SessionView("unused:9092", "t", retention=timedelta(hours=24), clock=lambda: clock[0])
    h = Harness()
    finished(h)
    view.apply(b"s1", encode_stored_session(0, h.store["s1"]))
    assert list(view.sessions) == ["s1"]
    view.apply(b"s1", encode_evicted(0, Evicted("c1", DISCHARGE)))
    assert view.sessions == {} and view.undecodable == 0
    opened = Harness()
    opened.send(event(1, "session.opened", 0, patient_ref="p1"))
    view.apply(b"s1", encode_stored_session(0, opened.store["s1"]))
    assert list(view.sessions) == ["s1"]  # no activity yet: kept from when first seen
    clock[0] = now + timedelta(hours=25)
    assert view.prune() == 1 and view.sessions == {}
