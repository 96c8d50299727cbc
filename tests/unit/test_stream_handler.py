"""The stream processor's logic without Kafka: decode -> engine -> outbound messages,
dead letters, the write-behind store, and the clock (event time, idle inputs, wall clock)."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from remsguard.adapters.kafka.topics import Topics
from remsguard.bootstrap import load_protocols
from remsguard.client import UnroutableEvent, route
from remsguard.contract.decode import MAX_EVENT_BYTES
from remsguard.domain.engine import MonitoringEngine
from remsguard.handlers.stream import (
    DEAD_LETTER_MAX_BYTES,
    SessionStore,
    StreamProcessor,
    decode_tick,
    encode_tick,
)

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
TOPICS = Topics.named("unit-")
WALL = T0 + timedelta(days=1)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def event(n: int, kind: str, minute: float, session: str = "s1", **data: Any) -> bytes:
    return orjson.dumps(
        {
            "event_id": f"{session}-{n}",
            "type": kind,
            "session_id": session,
            "clinic_id": "c1",
            "occurred_at": (T0 + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "data": data,
        }
    )


def dose(n: int, minute: float, session: str = "s1") -> bytes:
    return event(
        n, "dose.administered", minute, session, drug="esketamine", route="intranasal", dose_mg=56
    )


def bp(n: int, minute: float, session: str = "s1", systolic: int = 120) -> bytes:
    return event(n, "vitals.recorded", minute, session, systolic=systolic, diastolic=80)


class Harness:
    def __init__(self, backing: dict[bytes, bytes] | None = None) -> None:
        self.backing: dict[bytes, bytes] = {} if backing is None else backing
        self.store = SessionStore(self.backing)
        self.engine = MonitoringEngine(load_protocols(), sessions=self.store)
        self.clock = Clock()
        self.processor = StreamProcessor(
            self.engine,
            self.store,
            TOPICS.stream(),
            idle_grace_seconds=2,
            monotonic=self.clock,
            wall=lambda: WALL,  # the receiver's clock that event times are judged against
        )
        self.offsets: dict[tuple[str, int], int] = {}
        self.processor.assign({0})
        for topic in TOPICS.inputs:  # the consumer starts at offset 0 of empty topics
            self.processor.note_position(topic, 0, 0)

    def send(self, raw: bytes, partition: int = 0, topic: str | None = None) -> Any:
        if topic is None:
            topic, _key, _ = route(raw, TOPICS)
        offset = self.offsets.get((topic, partition), 0)
        self.offsets[(topic, partition)] = offset + 1
        return self.processor.process(topic, partition, offset, b"s1", raw)

    def ends(self) -> dict[tuple[str, int], int]:
        return {(t, 0): self.offsets.get((t, 0), 0) for t in TOPICS.inputs}

    def tick_all(self, wall: datetime) -> list[str]:
        """One timer round and the agent applying its ticks; returns the alert rules."""
        self.processor.clocks(self.ends(), wall)
        rules: list[str] = []
        for partition, session_id, at in self.processor.due_ticks():
            result = self.processor.process(
                TOPICS.ticks, partition, 0, session_id.encode(), self.processor.tick_value(at)
            )
            rules += result.alerts
        return rules

    def flush(self) -> None:
        for key, blob in self.processor.flush(0):
            self.backing[key] = blob


def outbound_topics(result: Any) -> list[str]:
    return [out.topic for out in result.outbound]


def test_an_event_becomes_audit_records_and_alerts() -> None:
    h = Harness()
    result = h.send(event(1, "vitals.recorded", 0, spo2=85))
    assert result.outcome == "accepted"
    assert result.alerts == ["SPO2_CRITICAL"]
    assert outbound_topics(result).count(TOPICS.alerts) == 1
    assert TOPICS.audit in outbound_topics(result)
    alert = next(o for o in result.outbound if o.topic == TOPICS.alerts)
    assert alert.key == b"s1" and orjson.loads(alert.value)["rule"] == "SPO2_CRITICAL"


def test_duplicates_change_nothing() -> None:
    h = Harness()
    h.send(event(1, "vitals.recorded", 0, spo2=85))
    again = h.send(event(1, "vitals.recorded", 0, spo2=85))
    assert again.outcome == "duplicate" and again.outbound == []


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\x00\xff not json", "invalid_json"),
        (b"[1, 2]", "not_an_object"),
        (b'{"event_id": "x", "type": "vitals.recorded"}', "missing_field"),
        (b'{"type": "nope"}', "unknown_type"),
        (b'{"pad": "' + b"x" * (MAX_EVENT_BYTES + 10) + b'"}', "too_large"),
        (b"", "invalid_json"),
    ],
)
def test_contract_breaking_input_is_dead_lettered_with_its_reason(raw: bytes, reason: str) -> None:
    h = Harness()
    result = h.processor.process(TOPICS.vitals, 2, 41, b"k", raw)
    assert result.dead_letter_reason == reason
    (dead,) = [o for o in result.outbound if o.topic == TOPICS.deadletter]
    headers = dict(dead.headers)
    assert headers["reason"] == reason.encode()
    assert headers["source"] == f"{TOPICS.vitals}/2/41".encode()
    assert dead.key == b"k" and dead.value == raw
    audit = [orjson.loads(o.value) for o in result.outbound if o.topic == TOPICS.audit]
    assert [a["kind"] for a in audit] == ["event.rejected"]


def test_huge_dead_letters_are_cut_and_say_so() -> None:
    h = Harness()
    raw = b"x" * (DEAD_LETTER_MAX_BYTES + 5)
    result = h.processor.process(TOPICS.dosing, 0, 0, None, raw)
    (dead,) = [o for o in result.outbound if o.topic == TOPICS.deadletter]
    assert len(dead.value) == DEAD_LETTER_MAX_BYTES
    assert dict(dead.headers)["truncated"] == str(len(raw)).encode()


def test_an_engine_exception_is_dead_lettered_and_the_stream_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness()

    def boom(*_: Any) -> Any:
        raise RuntimeError("engine bug")

    monkeypatch.setattr(h.engine, "handle", boom)
    result = h.send(bp(1, 0))
    assert result.outcome == "processing_error"
    assert [o.topic for o in result.outbound] == [TOPICS.deadletter]
    assert b"engine bug" in dict(result.outbound[0].headers)["detail"]
    monkeypatch.undo()
    assert h.send(bp(2, 1)).outcome == "accepted"


def test_state_is_written_behind_and_survives_a_new_worker() -> None:
    h = Harness()
    h.send(bp(1, -5))
    h.send(dose(2, 0))
    assert h.backing == {} and h.store.dirty(0)
    h.flush()
    assert set(h.backing) == {b"s1"} and not h.store.dirty(0)
    partition, session = pickle.loads(h.backing[b"s1"])
    assert partition == 0 and session.seen == {"s1-1", "s1-2"}
    # A new worker on the same table: the session, its dedupe set and its deadlines are back.
    again = Harness(dict(h.backing))
    assert again.send(dose(2, 0)).outcome == "duplicate"
    assert again.processor.stats()["queued_deadlines"] == 1


def test_partitions_assigned_together_flush_at_different_moments() -> None:
    h = Harness()
    h.processor.assign(set(range(6)))
    for partition in range(6):  # every partition has something to write
        h.send(bp(1, -5), partition=partition)
    period, due_at = h.processor.flush_seconds, {}
    for step in range(101):
        h.clock.now = 1000.0 + period * step / 100
        for partition in range(6):
            if partition not in due_at and h.processor.should_flush(partition):
                due_at[partition] = step
    assert len(due_at) == 6  # each is due within one period
    assert len(set(due_at.values())) == 6  # and none at the same moment as another
    assert max(due_at.values()) - min(due_at.values()) >= 50  # spread over the period


def test_unflushed_changes_are_lost_with_the_partition_and_redone_from_input() -> None:
    h = Harness()
    h.send(bp(1, -5))
    h.flush()
    h.send(dose(2, 0))
    h.processor.revoke({0})  # e.g. a crash before the flush: the input is read again
    h.processor.assign({0})
    assert h.send(dose(2, 0)).outcome == "accepted"


def test_backlog_clock_follows_the_slowest_input_not_the_wall_clock() -> None:
    h = Harness()
    h.send(bp(1, -5))
    h.send(dose(2, 0))
    for n, minute in enumerate(range(5, 70, 5), start=3):  # vitals far ahead ...
        h.send(event(n, "vitals.recorded", minute, spo2=97))
    ends = h.ends()
    ends[(TOPICS.dosing, 0)] += 100  # ... while the dosing topic still has a backlog
    h.clock.now += 10
    clocks = h.processor.clocks(ends, wall=T0 + timedelta(days=3))
    assert clocks[0] == T0  # the dosing watermark: nothing past it may be decided yet
    assert h.processor.due_ticks() == []  # the pre-dose check is due only after T0 + 5 min


def test_event_time_decides_deadlines_once_every_active_input_passed_them() -> None:
    h = Harness()
    h.send(bp(1, -5))
    h.send(dose(2, 0))
    h.clock.now += 2.5  # the dosing topic goes quiet: it no longer holds the clock back
    h.send(bp(3, 40))
    h.send(event(4, "assessment.recorded", 56, sedation_moaas=5))
    h.send(bp(5, 56))
    wall = T0 + timedelta(days=3)
    clocks = h.processor.clocks(h.ends(), wall)
    assert clocks[0] == T0 + timedelta(minutes=56)  # not the wall clock: inputs are active
    ticks = h.processor.due_ticks()
    assert ticks == [(0, "s1", T0 + timedelta(minutes=56))]
    result = h.processor.process(TOPICS.ticks, 0, 0, b"s1", h.processor.tick_value(ticks[0][2]))
    assert result.alerts == ["VITALS_GAP"]  # 0 to 40 minutes without vitals ...
    assert "POST_DOSE_BP_MISSED" not in h.tick_all(wall)  # ... but the 40-minute BP is there


def test_a_silent_device_is_judged_by_the_wall_clock_once_quiet() -> None:
    h = Harness()
    h.send(bp(1, -5))
    h.send(dose(2, 0))
    wall = T0 + timedelta(minutes=60)
    assert h.tick_all(wall) == []  # not quiet yet
    h.clock.now += 2.5
    rules = h.tick_all(wall)
    assert "POST_DOSE_BP_MISSED" in rules


def test_a_tick_timed_before_a_crash_or_rebalance_is_void() -> None:
    # The worker that sent it had read further than the offsets re-read now: applied, it
    # would judge the 40-minute check before the BP reading behind it is re-read.
    dead = Harness()
    dead.send(bp(1, -5))
    dead.send(dose(2, 0))
    late_tick = dead.processor.tick_value(T0 + timedelta(minutes=60))
    survivor = Harness(dead.backing)
    survivor.send(bp(1, -5))
    survivor.send(dose(2, 0))
    stale = survivor.processor.process(TOPICS.ticks, 0, 0, b"s1", late_tick)
    assert (stale.outcome, stale.alerts) == ("stale_tick", [])
    survivor.send(bp(3, 41))
    survivor.processor.revoke({0})  # a rebalance voids this worker's own earlier ticks too
    own_tick = survivor.processor.tick_value(T0 + timedelta(minutes=60))
    survivor.processor.assign({0})
    assert survivor.processor.process(TOPICS.ticks, 0, 1, b"s1", own_tick).outcome == "stale_tick"
    current = survivor.processor.process(
        TOPICS.ticks, 0, 2, b"s1", survivor.processor.tick_value(T0 + timedelta(minutes=60))
    )
    assert current.outcome == "accepted"
    assert "POST_DOSE_BP_MISSED" not in current.alerts


def test_a_device_uploading_a_buffer_is_not_judged_mid_upload() -> None:
    h = Harness()
    h.send(bp(1, -5))
    h.send(dose(2, 0))
    h.clock.now += 1  # the upload goes on: readings keep arriving
    h.send(bp(3, 41))
    assert "POST_DOSE_BP_MISSED" not in h.tick_all(T0 + timedelta(hours=5))
    h.clock.now += 3
    assert "POST_DOSE_BP_MISSED" not in h.tick_all(T0 + timedelta(hours=5))


def test_ticks_and_flush_requests_round_trip() -> None:
    at = datetime(2026, 11, 20, 9, 0, 1, 500, tzinfo=UTC)
    assert decode_tick(encode_tick(at, "w1.3")) == ("w1.3", at)
    assert decode_tick(b"F") is None
    h = Harness()
    assert h.processor.process(TOPICS.ticks, 0, 0, b"", b"F").outcome == "flush"


def test_the_client_routes_by_type_and_keys_by_session() -> None:
    assert route(dose(1, 0), TOPICS)[:2] == (TOPICS.dosing, b"s1")
    assert route(bp(1, 0), TOPICS)[0] == TOPICS.vitals
    opened = event(1, "session.opened", 0, patient_ref="p")
    assert route(opened, TOPICS)[0] == TOPICS.sessions
    with pytest.raises(UnroutableEvent):
        route(b'{"type": "nope"}', TOPICS)
    with pytest.raises(UnroutableEvent):
        route(b"garbage", TOPICS)


def test_event_times_are_judged_against_the_receivers_clock() -> None:
    """Issue 13: an event too far ahead of the receiving clock, or too old, is dead-lettered
    with its reason; a record timestamp judges a backlog by when it was produced, and one
    later than the wall clock cannot let a future-dated event in."""
    h = Harness()
    ahead = (WALL - T0).total_seconds() / 60 + 6  # minutes after T0: 6 minutes ahead
    assert h.send(bp(1, ahead)).dead_letter_reason == "occurred_in_future"
    assert h.send(bp(2, ahead - 2)).outcome == "accepted"  # 4 minutes fast: within the skew
    old = -31 * 24 * 60
    assert h.send(bp(3, old)).dead_letter_reason == "too_old"
    produced = (T0 + timedelta(minutes=old + 10)).timestamp()  # produced 10 minutes later
    result = h.processor.process(TOPICS.vitals, 0, 99, b"s1", bp(4, old), produced)
    assert result.outcome == "accepted"
    forged = (WALL + timedelta(days=1)).timestamp()  # a producer's timestamp from tomorrow
    result = h.processor.process(TOPICS.vitals, 0, 100, b"s1", bp(5, ahead + 60), forged)
    assert result.dead_letter_reason == "occurred_in_future"


def test_event_clock_never_passes_the_wall_clock() -> None:
    """A device running fast moves no partition's clock past the wall clock."""
    h = Harness()
    h.send(bp(1, -5))
    h.send(dose(2, 0))
    h.send(bp(3, 4))
    wall = T0 + timedelta(minutes=1)  # the device's readings are 3 minutes ahead of it
    h.clock.now += 10
    assert h.processor.clocks(h.ends(), wall)[0] == wall


def test_a_session_of_another_clinic_is_dead_lettered() -> None:
    h = Harness()
    h.send(bp(1, -5))
    stranger = orjson.loads(bp(2, 1, systolic=250))
    stranger["clinic_id"] = "c2"
    result = h.send(orjson.dumps(stranger))
    assert result.dead_letter_reason == "session_of_another_clinic"
    assert result.alerts == []
    assert h.send(bp(3, 2, systolic=250)).alerts == ["BP_CRISIS"]  # its own clinic: judged


def test_a_partition_catching_up_a_backlog_writes_its_state_less_often() -> None:
    h = Harness()
    h.processor.backlog_flush_seconds = 5.0
    h.send(bp(1, -5))
    ends = h.ends()
    h.clock.now += h.processor.flush_seconds
    h.processor.clocks(ends, WALL)
    assert h.processor.should_flush(0)  # caught up: the usual period
    ends[(TOPICS.vitals, 0)] += 5_000  # far behind: a backlog
    h.processor.clocks(ends, WALL)
    assert not h.processor.should_flush(0)
    h.clock.now += 5.0
    assert h.processor.should_flush(0)


def test_a_deadline_readings_moved_on_is_queued_again_not_ticked() -> None:
    h = Harness()
    h.send(bp(1, -5))
    h.send(dose(2, 0))
    h.clock.now += 2.5
    h.send(event(3, "vitals.recorded", 6, spo2=97))
    assert h.tick_all(WALL) == []  # the pre-dose check; the gap check is queued next
    queued = h.processor._due["s1"]
    assert queued == T0 + timedelta(minutes=26)
    for n, minute in enumerate(range(9, 40, 3), start=4):  # readings move the gap check on
        h.send(event(n, "vitals.recorded", minute, spo2=97))
    assert h.processor._due["s1"] == queued  # readings leave the queued one, a lower bound
    actual = h.engine.next_due("s1")
    assert actual == T0 + timedelta(minutes=55)  # the post-dose BP check is next now
    assert h.processor.clocks(h.ends(), WALL)[0] == T0 + timedelta(minutes=39)
    assert h.processor.due_ticks() == []  # a tick at 39 minutes would have decided nothing
    assert h.processor._due["s1"] == actual
    h.clock.now += 3  # quiet: the wall clock decides what is due, with a tick
    assert "POST_DOSE_BP_MISSED" in h.tick_all(T0 + timedelta(hours=3))
