"""The stream processor's logic, without Kafka: one message in, the messages to send out.

The faust agent (`adapters/kafka/processor.py`) only moves bytes: it calls `StreamProcessor`
for every message of the input and tick topics, sends what it returns, and writes the
session pickles `flush` hands it into its table. Everything here is testable with dicts.

Delivery (at-least-once, deterministic ids):
- outputs (alerts, audit records, dead letters) are sent as soon as an event is processed;
- session state is written behind, per partition, every `flush_seconds` (every
  `backlog_flush_seconds` while the partition is more than `BACKLOG_MESSAGES` behind its end
  offsets: a backlog rewrites each session's whole pickle about once per flush, so a longer
  period writes less per event while nobody waits on the stored state): the agent seals
  the pickles of the partition's dirty sessions, and writes them to the table (changelog)
  only once every output sent before the seal is acknowledged by Kafka, and only then acks
  the messages; so an input offset is never committed before its state is in the
  changelog, and state that says "event seen" is never in the changelog before that
  event's outputs are in Kafka (the stream does not wait for those acks meanwhile);
- after a crash the uncommitted messages are processed again: their outputs are sent again
  with the same `alert_id` / `record_id` (consumers dedupe by id); the engine ignores events
  its recovered state has already seen.

Clock (per partition number p, over the co-partitioned input topic-partitions):
- an input topic-partition is *idle* when it is caught up (its end offset processed) and
  nothing arrived on it for `idle_grace_seconds`;
- while any input of p is not idle (a backlog, a device uploading a buffer, live traffic),
  the clock is the lowest event-time watermark (greatest `occurred_at` processed) of those
  inputs: a deadline never fires before the readings queued behind it on any of the three
  topics have been read;
- when every input of p is idle, it is the wall clock, so a silent device's deadlines fire.
It never goes back. Deadlines are kept in a heap per partition; the timer turns the due ones
into tick messages that the agent applies (`tick`), so table writes stay in the agent.
"""

from __future__ import annotations

import heapq
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any, Final

from remsguard.contract.dead_letters import DEAD_LETTER_MAX_BYTES, dead_letter
from remsguard.contract.decode import decode_event
from remsguard.contract.outbound import alert_to_json, audit_record_to_json, withdrawal_to_json
from remsguard.domain import admission
from remsguard.domain.admission import EventTimeBounds, rejection_of
from remsguard.domain.decisions import Decisions, Outcome, Rejection
from remsguard.domain.engine import DEFAULT_RETENTION, MonitoringEngine
from remsguard.domain.events import AssessmentRecorded, Event, VitalsRecorded
from remsguard.handlers.session_store import SessionStore, keep_tombstones_in
from remsguard.handlers.stream_topics import StreamTopics
from remsguard.monitoring.clocks import Watermark
from remsguard.monitoring.service import monitor

__all__ = [
    "DEAD_LETTER_MAX_BYTES",
    "Outbound",
    "Result",
    "SessionStore",
    "StreamProcessor",
    "decode_tick",
    "encode_tick",
]

PROCESSING_ERROR: Final = "processing_error"
# A partition this many input messages behind its end offsets is catching up a backlog: its
# state is written every `backlog_flush_seconds` (~1 s of one worker's input here).
BACKLOG_MESSAGES: Final = 2_000
FLUSH: Final = b"F"


@dataclass(frozen=True, slots=True)
class Outbound:
    """One message to produce."""

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(slots=True)
class Result:
    outbound: list[Outbound] = field(default_factory=list)
    outcome: str = Outcome.ACCEPTED.value
    alerts: list[str] = field(default_factory=list)  # rules of the alerts raised
    dead_letter_reason: str | None = None
    decisions: Decisions | None = None  # for telemetry (Telemetry.observe_decisions)
    event: Event | None = None  # the decoded input event, if it decoded


def encode_tick(now: datetime, epoch: str) -> bytes:
    """A tick: decide the session's deadlines at `now`; valid only in `epoch` (see `_tick`)."""
    return b"T" + epoch.encode() + b" " + now.astimezone(UTC).isoformat().encode()


def decode_tick(value: bytes) -> tuple[str, datetime] | None:
    """The epoch and clock time of a tick message; None for a flush request."""
    if value.startswith(b"T"):
        epoch, _, at = value[1:].decode().partition(" ")
        return epoch, datetime.fromisoformat(at)
    return None


@dataclass(slots=True)
class _Partition:
    """Clock and write-behind bookkeeping for one partition number."""

    assigned_at: float
    clock: datetime | None = None  # event time: never ahead of what has been read
    idle: bool = False  # every input caught up and quiet for the grace period (last check)
    last_flush: float = 0.0
    unflushed: int = 0  # messages processed since the last flush
    behind: bool = False  # more than BACKLOG_MESSAGES behind the inputs' ends (last check)
    heap: list[tuple[datetime, int, str]] = field(default_factory=list)


class StreamProcessor:
    """Per-worker processing state over the partitions it actively owns."""

    def __init__(
        self,
        engine: MonitoringEngine,
        store: SessionStore,
        topics: StreamTopics,
        *,
        idle_grace_seconds: float = 3.0,
        flush_seconds: float = 0.25,
        backlog_flush_seconds: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        instance: str | None = None,
        bounds: EventTimeBounds | None = None,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        partition_count: int | None = None,
        key_hash: Callable[[bytes], int] | None = None,
        retention: timedelta = DEFAULT_RETENTION,
    ) -> None:
        if engine.sessions is not store:
            raise ValueError("the engine must use the store as its sessions")
        keep_tombstones_in(engine, store)
        self.retention = retention
        if partition_count is not None and key_hash is None:
            raise ValueError("checking partitions needs the producer partitioner's key hash")
        self.engine = engine
        self.store = store
        self.topics = topics
        self.idle_grace = idle_grace_seconds
        self.flush_seconds = flush_seconds
        self.backlog_flush_seconds = max(flush_seconds, backlog_flush_seconds or flush_seconds)
        self._monotonic = monotonic
        self.bounds = EventTimeBounds() if bounds is None else bounds
        self._wall_clock = wall
        self._inputs = frozenset(topics.inputs)
        # The input topics' partition count, to check each message sits where the default
        # partitioner puts its key (None: not checked), and that partitioner's hash (Kafka's
        # murmur2, given by the Kafka adapter).
        self.partition_count = partition_count
        self._key_hash = key_hash
        self._key_partition: dict[bytes, int] = {}
        self._partitions: dict[int, _Partition] = {}
        self._watermarks: dict[tuple[str, int], Watermark] = {}  # per input topic-partition
        self._consumed: dict[tuple[str, int], int] = {}  # next offset to process
        self._last_message: dict[tuple[str, int], float] = {}  # monotonic time of the last
        self._wall: datetime | None = None
        self._due: dict[str, datetime] = {}  # the deadline each session is queued for
        self._order = count()
        self._instance = instance or uuid.uuid4().hex[:12]
        self._epochs = count()
        self.epoch = ""
        self._new_epoch()

    def _new_epoch(self) -> None:
        """Ticks sent before now are void: they were timed by another worker's (or this one's
        pre-rebalance) progress, which may be ahead of the offsets re-read from now on."""
        self.epoch = f"{self._instance}.{next(self._epochs)}"

    def tick_value(self, now: datetime) -> bytes:
        """The tick message that asks the agent to decide a session's deadlines at `now`."""
        return encode_tick(now, self.epoch)

    # -- assignment ------------------------------------------------------------------------

    @property
    def partitions(self) -> set[int]:
        return set(self._partitions)

    def assign(self, partitions: set[int]) -> None:
        """Take (or keep) exactly these partitions; rebuild the deadline heaps from state."""
        gone = set(self._partitions) - partitions
        self.revoke(gone)
        self._new_epoch()
        now = self._monotonic()
        for partition in partitions:
            self._partitions.setdefault(partition, self._new_partition(partition, now))
        self.store.load(partitions)
        self._due.clear()
        for state in self._partitions.values():
            state.heap.clear()
        for session_id in list(self.store):
            owner = self.store.partition_of(session_id)
            if owner is not None and owner in self._partitions:
                self._reschedule(owner, session_id, force=True)

    def adopt(self, partitions: set[int]) -> None:
        """Partitions just assigned (their state may still be recovering): accept their
        messages now; `assign` rebuilds the deadline heaps once recovery is over."""
        self._new_epoch()
        now = self._monotonic()
        for partition in partitions:
            self._partitions.setdefault(partition, self._new_partition(partition, now))

    def owns(self, partition: int) -> bool:
        return partition in self._partitions

    def revoke(self, partitions: set[int]) -> None:
        if not partitions:
            return
        self._new_epoch()
        for name in list(self.store):
            if self.store.partition_of(name) in partitions:
                self._due.pop(name, None)
        self.store.forget(partitions)
        for partition in partitions:
            self._partitions.pop(partition, None)
        for key in [k for k in self._watermarks if k[1] in partitions]:
            del self._watermarks[key]
        for key in [k for k in self._consumed if k[1] in partitions]:
            del self._consumed[key]
        for key in [k for k in self._last_message if k[1] in partitions]:
            del self._last_message[key]

    def has_consumed(self, topic: str, partition: int) -> bool:
        return (topic, partition) in self._consumed

    def consumed(self, topic: str, partition: int) -> int | None:
        """The next offset to process of an input partition, once known (for consumer lag)."""
        return self._consumed.get((topic, partition))

    def note_position(self, topic: str, partition: int, position: int) -> None:
        """Where consumption of an input starts, before any of its messages is processed."""
        self._consumed.setdefault((topic, partition), position)

    def _new_partition(self, partition: int, now: float) -> _Partition:
        """Flush phases spread over the period (golden-ratio offsets by partition number):
        partitions assigned together would otherwise pickle all their sessions at once, and
        the stream would stall for the sum of them."""
        phase = (partition * 0.6180339887) % 1.0
        return _Partition(assigned_at=now, last_flush=now - phase * self.flush_seconds)

    def _state(self, partition: int) -> _Partition:
        state = self._partitions.get(partition)
        if state is None:  # a message before the assignment callback: adopt the partition
            now = self._monotonic()
            state = self._partitions[partition] = self._new_partition(partition, now)
        return state

    # -- messages --------------------------------------------------------------------------

    def process(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        timestamp: float | None = None,
    ) -> Result:
        """One message of an input topic or of the tick topic. Never raises.

        `timestamp` is the record's (unix seconds): an input event's time is judged against
        it, never later than the wall clock, so a backlog read late is not too old, and a
        producer's timestamp cannot let a future-dated event in.
        """
        state = self._state(partition)
        self.store.partition = partition
        if topic == self.topics.ticks:
            result = self._tick(partition, key, value or b"")
        else:
            tp = (topic, partition)
            raw = value if value is not None else b""
            result = self._input(tp, f"{topic}/{partition}/{offset}", key, raw, timestamp)
            self._last_message[tp] = self._monotonic()
            self._consumed[tp] = max(self._consumed.get(tp, 0), offset + 1)
        state.unflushed += 1
        return result

    def _input(
        self,
        tp: tuple[str, int],
        source: str,
        key: bytes | None,
        raw: bytes,
        timestamp: float | None,
    ) -> Result:
        """One input message (`source`: topic/partition/offset, for a rejection's record)."""
        partition = tp[1]
        result = Result()
        session_id: str | None = None
        try:
            event = decode_event(raw)
            if not isinstance(event, Rejection):
                event = (
                    self._misplaced(event, key, partition)
                    or self.bounds.check(event, self._received_at(timestamp))
                    or event
                )
            if not isinstance(event, Rejection):
                session_id = event.session_id
                result.event = event
            watermark = self._watermarks.get(tp)
            if watermark is None:
                watermark = self._watermarks[tp] = Watermark()
            decisions = monitor(
                self.engine, event, source, watermark, lambda step, _: self._emit(step, result)
            )
            if session_id is not None and decisions.outcome == Outcome.ACCEPTED:
                may_come_sooner = not isinstance(event, VitalsRecorded | AssessmentRecorded)
                self._reschedule(partition, session_id, force=may_come_sooner)
            if decisions.rejection is not None:
                rejection = decisions.rejection
                self._dead_letter(result, key, raw, rejection.reason, rejection.detail, source)
        except Exception as exc:  # one bad message must never stop the partition
            detail = f"{type(exc).__name__}: {exc}"[:200]
            result.outbound.clear()
            result.alerts.clear()
            self._dead_letter(result, key, raw, PROCESSING_ERROR, detail, source)
            result.outcome = PROCESSING_ERROR
            if session_id is not None:
                self._reschedule(partition, session_id, force=True)
        return result

    def _misplaced(self, event: Event, key: bytes | None, partition: int) -> Rejection | None:
        """Why a message is not where its session's messages are (None: it is). Every message
        of a session must be keyed by its session_id and sit on the partition the default
        partitioner gives that key: one keyed otherwise would be judged without the
        session's state, by whichever worker owns the partition it landed on."""
        if not key:
            return rejection_of(
                event,
                admission.NO_KEY,
                "the message has no key; key every message by its session_id (raw UTF-8)",
            )
        if key != event.session_id.encode("utf-8"):
            shown = key[:64].decode("utf-8", "replace")
            return rejection_of(
                event,
                admission.KEY_MISMATCH,
                f"key {shown!r} is not the session_id {event.session_id[:64]!r}; key every "
                "message by its session_id (raw UTF-8)",
            )
        count, key_hash = self.partition_count, self._key_hash
        if count is not None and key_hash is not None:
            expected = self._key_partition.get(key)
            if expected is None:
                expected = (key_hash(key) & 0x7FFFFFFF) % count
                if len(self._key_partition) >= 200_000:
                    self._key_partition.clear()
                self._key_partition[key] = expected
            if expected != partition:
                return rejection_of(
                    event,
                    admission.WRONG_PARTITION,
                    f"on partition {partition}, but the default partitioner puts this key on "
                    f"partition {expected} of {count}; produce with the default (murmur2) "
                    "partitioner and no explicit partition",
                )
        return None

    def _received_at(self, timestamp: float | None) -> datetime:
        wall = self._wall_clock()
        if timestamp is None or not 0 < timestamp < wall.timestamp():
            return wall
        return datetime.fromtimestamp(timestamp, UTC)

    def _tick(self, partition: int, key: bytes | None, value: bytes) -> Result:
        result = Result(outcome="tick")
        tick = decode_tick(value)
        if tick is None or not key:
            result.outcome = "flush"
            return result
        epoch, now = tick
        if epoch != self.epoch:
            # Re-read after a crash or rebalance: the inputs it was timed against may not have
            # been re-read yet. The rebuilt deadline heap sends its own ticks.
            result.outcome = "stale_tick"
            return result
        session_id = key.decode("utf-8")
        try:
            self._emit(self.engine.tick(session_id, now), result)
        except Exception as exc:
            result.outbound.clear()
            result.alerts.clear()
            result.outcome = PROCESSING_ERROR
            detail = f"{type(exc).__name__}: {exc}"[:200]
            self._dead_letter(
                result, key, value, PROCESSING_ERROR, detail, f"{self.topics.ticks}/{partition}"
            )
        self._reschedule(partition, session_id, force=True)
        return result

    def _emit(self, decisions: Decisions, result: Result) -> None:
        result.outcome = decisions.outcome.value
        result.decisions = decisions
        topics = self.topics
        for alert in decisions.alerts:
            result.outbound.append(
                Outbound(topics.alerts, alert.session_id.encode("utf-8"), alert_to_json(alert))
            )
            result.alerts.append(alert.rule)
        for withdrawal in decisions.withdrawals:  # consoles drop it, notifications stop
            session = withdrawal.session_id.encode("utf-8")
            result.outbound.append(Outbound(topics.alerts, session, withdrawal_to_json(withdrawal)))
        for record in decisions.audit:
            key = record.session_id.encode("utf-8") if record.session_id else None
            result.outbound.append(Outbound(topics.audit, key, audit_record_to_json(record)))

    def _dead_letter(
        self,
        result: Result,
        key: bytes | None,
        raw: bytes,
        reason: str,
        detail: str,
        source: str,
    ) -> None:
        value, headers = dead_letter(raw, reason, detail, source)
        result.outbound.append(Outbound(self.topics.deadletter, key, value, headers))
        result.dead_letter_reason = reason

    # -- deadlines and the clock -----------------------------------------------------------

    def _reschedule(self, partition: int, session_id: str, *, force: bool) -> None:
        if not force and session_id in self._due:
            return  # readings only move deadlines later: the queued one stays a lower bound
        due = self.engine.next_due(session_id)
        if due is None:
            self._due.pop(session_id, None)
            return
        if self._due.get(session_id) == due:
            return
        self._due[session_id] = due
        heapq.heappush(self._state(partition).heap, (due, next(self._order), session_id))

    def clocks(
        self,
        ends: Mapping[tuple[str, int], int],
        wall: datetime,
    ) -> dict[int, datetime | None]:
        """Advance every owned partition's event clock; returns them.

        `ends`: end offsets of the input topic-partitions (missing: unknown, so lagging).
        An input is *idle* when it is caught up and nothing arrived on it for the grace
        period; idle inputs do not hold the event clock back.
        """
        now = self._monotonic()
        self._wall = wall
        out: dict[int, datetime | None] = {}
        for partition, state in self._partitions.items():
            active: list[datetime | None] = []
            seen: list[datetime] = []
            caught_up = True  # every input processed up to its end offset
            behind = 0  # input messages not processed yet (known ends only)
            for topic in self.topics.inputs:
                tp = (topic, partition)
                watermark = self._watermarks.get(tp)
                mark = None if watermark is None else watermark.mark
                if mark is not None:
                    seen.append(mark)
                end = ends.get(tp)
                done = end is not None and self._consumed.get(tp, -1) >= end
                if end is not None:
                    behind += max(0, end - self._consumed.get(tp, end))
                caught_up = caught_up and done
                quiet = now - max(self._last_message.get(tp, 0.0), state.assigned_at)
                if not done or quiet < self.idle_grace:
                    active.append(mark)
            candidate: datetime | None
            if not active:
                candidate = max(seen, default=None)
            elif any(mark is None for mark in active):
                candidate = None  # an input we have read nothing of yet may hold anything
            else:
                candidate = min(mark for mark in active if mark is not None)
            if candidate is not None and candidate > wall:
                candidate = wall  # event times never move a clock past the wall clock
            if candidate is not None and (state.clock is None or candidate > state.clock):
                state.clock = candidate
            state.idle = caught_up and not active
            state.behind = behind > BACKLOG_MESSAGES
            out[partition] = state.clock
        return out

    def clock_lags(self, wall: datetime) -> dict[int, float]:
        """Seconds each partition's clock is behind where it could be (after `clocks`): 0
        when every input is caught up and quiet (deadlines are then decided at the wall
        clock), else the wall clock minus the event-time clock (a backlog being read)."""
        return {
            partition: 0.0 if state.idle else max(0.0, (wall - state.clock).total_seconds())
            for partition, state in self._partitions.items()
            if state.clock is not None
        }

    def due_ticks(self) -> list[tuple[int, str, datetime]]:
        """(partition, session, clock) for every queued deadline that may be decided now.

        A deadline is decided at the partition's event clock once that passed it, or at the
        wall clock once that passed it while every input of the partition has been idle for
        the grace period, and so the session too (neither a backlog nor a device uploading a
        buffer is judged before it has been read). A session is handed out
        once; the agent queues its next deadline when it applies the tick. A queued deadline
        the session no longer has before that clock (readings only move deadlines later, and
        queue none) is queued again at the session's own instead of sent.
        """
        ticks = []
        wall = self._wall
        for partition, state in self._partitions.items():
            clock, heap = state.clock, state.heap
            limit = max(clock, wall) if clock is not None and wall is not None else clock or wall
            if limit is None:
                continue
            deferred = []
            while heap and heap[0][0] < limit:  # decided once the clock is strictly past
                entry = heapq.heappop(heap)
                due, _, session_id = entry
                if self._due.get(session_id) != due:
                    continue  # superseded
                if clock is not None and due < clock:
                    at = clock
                elif wall is not None and state.idle:
                    at = wall
                else:
                    deferred.append(entry)
                    continue
                actual = self.engine.next_due(session_id)
                if actual is None or actual >= at:
                    # Readings moved the deadline on since it was queued (or the session has
                    # none left): a tick now would decide nothing. Queue what the session
                    # has, as `_reschedule` after that tick would, without the round trip
                    # through Kafka.
                    if actual is None:
                        del self._due[session_id]
                    else:
                        self._due[session_id] = actual
                        heapq.heappush(heap, (actual, next(self._order), session_id))
                    continue
                del self._due[session_id]
                ticks.append((partition, session_id, at))
            for entry in deferred:
                heapq.heappush(heap, entry)
        return ticks

    # -- eviction --------------------------------------------------------------------------

    def eviction_clock(self) -> datetime | None:
        """The clock finished sessions are evicted at (after `clocks`): the earliest of the
        owned partitions' clocks, each the wall clock while every input of it is idle, else
        its event-time clock; None while one has none (nothing read yet). A backlog being
        read holds eviction back, so its late readings are judged with their sessions."""
        if not self._partitions:
            return None
        times: list[datetime] = []
        for state in self._partitions.values():
            at = self._wall if state.idle else state.clock
            if at is None:
                return None
            times.append(at)
        return min(times)

    def evict(self) -> list[str]:
        """Evict the sessions finished more than `retention` before `eviction_clock()`
        (`MonitoringEngine.evict_finished`); their removal, and their tombstones, are written
        with each partition's next flush. Returns the evicted ids."""
        now = self.eviction_clock()
        if now is None:
            return []
        gone = self.engine.evict_finished(now, self.retention)
        for session_id in gone:
            self._due.pop(session_id, None)
        return gone

    # -- write-behind --------------------------------------------------------------------

    def should_flush(self, partition: int) -> bool:
        state = self._partitions.get(partition)
        if state is None:
            return False
        period = self.backlog_flush_seconds if state.behind else self.flush_seconds
        return (state.unflushed > 0 or self.store.dirty(partition)) and (
            self._monotonic() - state.last_flush >= period
        )

    def stale_partitions(self) -> list[int]:
        """Partitions with processed-but-unflushed messages older than the flush period."""
        return [p for p in self._partitions if self.should_flush(p)]

    def flush(self, partition: int) -> list[tuple[bytes, bytes | None]]:
        """What to write for `partition` (`SessionStore.flush`: None deletes a key); call once
        its outputs are acknowledged."""
        state = self._state(partition)
        state.unflushed = 0
        state.last_flush = self._monotonic()
        return self.store.flush(partition)

    def stats(self) -> dict[str, Any]:
        return {
            "sessions": len(self.store),
            "evicted": len(self.store.evicted),
            "queued_deadlines": len(self._due),
            "partitions": {
                p: {
                    "clock": None if s.clock is None else s.clock.isoformat(),
                    "idle": s.idle,
                    "heap": len(s.heap),
                    "unflushed": s.unflushed,
                }
                for p, s in sorted(self._partitions.items())
            },
            "consumed": {f"{t}/{p}": o for (t, p), o in sorted(self._consumed.items())},
        }
