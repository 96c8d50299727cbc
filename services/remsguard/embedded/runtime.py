"""The embedded runtime: one asyncio task owns the engine.

Every change to engine state happens in `_run`, one step at a time:

1. **Live clock.** Each step first advances the engine to the wall clock, and a step runs at
   least every `tick_interval` seconds even when nothing arrives, so silent sessions still
   get their deadlines decided (the 40-minute check, the end of the window).
2. **Ingest, group-committed.** Requests waiting in the queue are taken together. Each event
   is admitted first (`_admit`): its clinic must be one the token may post for
   (`clinic_not_permitted`), its time within `bounds` of the process's clock
   (`occurred_in_future`, `too_old`), its session not another clinic's
   (`session_of_another_clinic`); an event id the session has seen is a duplicate when its
   content is the same and a `conflicting_duplicate` when not. Duplicates are answered and
   not journaled; every admitted event, and every rejection, is appended to the journal in
   one transaction that is fsync'd before anything else happens. Only then are the events
   applied to the engine, in arrival order. The engine's clock is the process's clock (the
   wall clock; `--simulate` gives a simulated one): event times never move it, so neither a
   device whose clock runs fast nor a hostile one can decide another clinic's deadlines
   early, or put them off.
3. **Compliance log, just behind.** The waiting requests are answered once their events are
   journaled and applied; the step's accepted events, alerts and audit records go to the
   recorder (`recorder.py`), which writes every step queued meanwhile in one transaction
   (idempotent by id) while the next steps run, and moves the journal's `recorded_through`
   checkpoint after it. Reads wait for it (`caught_up`: the HTTP layer calls it before every
   read), so a client that got its 2xx can read the alerts its events raised. The records
   the service makes of its own accord (an auditor query's access record, `record`) take the
   same way: journaled with the next group, so durable before the query is answered, and
   written by the recorder just behind, instead of each waiting for the log's writer while
   the recorder holds it (bench.embedded_ingest, auditor phase).
4. **Session summaries.** The sessions a recorded step touched are marked, with their
   patient_ref and protocol from engine state; a second task refreshes their summaries (and
   monitoring-form rows) with `ComplianceLog.refresh_sessions`, every marked session at once,
   at most every `summary_interval` seconds and in a worker thread, so the refresh never
   holds up ingest and batches itself under load: summaries trail the audit records by
   about one interval. Every session is marked again on recovery (a crash may come between
   records and their refresh), and `stop` refreshes what is still marked.

5. **Bounded state.** Every `eviction_interval` seconds the runtime journals an eviction call
   and then makes it (`MonitoringEngine.evict_finished` at the engine's clock, `retention`):
   finished sessions leave memory (`remsguard_sessions_evicted_total`). Journaled, because it
   changes engine state: recovery repeats the calls at their place in the journal (at most
   one an hour of their clock, see `_REPLAY_EVICTION_EVERY`), so a replay ends where the
   live process was.
6. **Snapshots** (`snapshot.py`). Every `snapshot_interval` seconds, or sooner once
   `snapshot_every_events` events were journaled since the last one, and on a graceful stop,
   the engine's state is pickled between two steps, with the journal position it covers, and
   written atomically in the background as a pending snapshot. It is published (renamed into
   place) once the compliance log holds every decision up to that position, so recovery only
   ever starts from a recorded state; ingest never waits for that (a snapshot due while the
   recorder was behind used to hold ingest up to 5 s).

**Restart recovery** (`recover`) loads the snapshot if there is a usable one (else says why
in `recovery.full_replay` and starts from an empty engine) and replays the journal after it
in arrival order, advancing the engine
to each event's recorded clock (never past now) before applying it, so deadlines are decided
where they were decided live; then it advances to now, so a deadline that came due while the
process was down fires once. A journaled event that cannot be applied (the contract changed,
or applying it fails) is quarantined with its reason and skipped; recovery goes on. Every
decision is handed to the compliance log again: alert and audit ids are deterministic, so
what was already recorded is a no-op and what a crash lost is filled in.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, Literal, Protocol

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram

from remsguard.adapters.storage import DecisionsRecorded
from remsguard.adapters.telemetry import HTTP_TOPIC, Telemetry
from remsguard.contract.decode import decode_event
from remsguard.domain.admission import (
    CLINIC_NOT_PERMITTED,
    CONFLICTING_DUPLICATE,
    PROCESSING_ERROR,
    SESSION_OF_ANOTHER_CLINIC,
    EventTimeBounds,
    rejection_of,
)
from remsguard.domain.decisions import Alert, AuditRecord, Decisions, Outcome, Rejection
from remsguard.domain.engine import (
    DEFAULT_FORGET_AFTER,
    DEFAULT_RETENTION,
    MonitoringEngine,
)
from remsguard.domain.events import Event
from remsguard.embedded.ingest import Incoming
from remsguard.embedded.journal import (
    Checkpoint,
    EventJournal,
    JournaledEvent,
    JournaledEviction,
    JournaledRecord,
    JournaledRejection,
)
from remsguard.embedded.recorder import DecisionRecorder
from remsguard.embedded.snapshot import EngineImage, Position, Snapshot, SnapshotStore, dump
from remsguard.identity import Principal
from remsguard.monitoring.clocks import Recorded, WallClock
from remsguard.monitoring.ports import DecisionSink
from remsguard.monitoring.service import advance, monitor

__all__ = [
    "EmbeddedRuntime",
    "EventResult",
    "RecoverySummary",
    "SessionSummaries",
    "Unavailable",
]

log = structlog.get_logger(__name__)

SERVICE: Final = "up"
_RECORD_CHUNK: Final = 20_000
_SNAPSHOT_RETRY_SECONDS: Final = 30.0  # after a snapshot that was not written or published
_SUMMARY_CHUNK: Final = 500  # sessions per refresh transaction (ingest's writes interleave)
# Each eviction call looks at every session held (~5 us each: ~50 ms at 10,000), once a minute
# live; a replay repeats them at most this often, or a 1M-event journal spends minutes on them
# (bench.embedded_restart). Approximate only for an event naming a session evicted live less
# than this before the replay's call: live it was taken as for an evicted session (recorded,
# judged by no rule), replayed as for a held one, which judges no reading after its end either.
_REPLAY_EVICTION_EVERY: Final = timedelta(hours=1)
# Periodic snapshots are written by a forked child (`SnapshotStore.write_forked`): pickling
# 9,800 sessions here paused ingest 3.0-4.6 s (bench.embedded_restart's state, loaded 2-core
# VM); the fork pauses it for the page tables' copy.
_FORK: Final = hasattr(os, "fork")


class DecisionLog(Protocol):
    """Where decisions go: `remsguard.adapters.storage.ComplianceLog` (idempotent by id)."""

    def record_decisions(
        self, events: Iterable[Event], alerts: Iterable[Alert], audit: Iterable[AuditRecord]
    ) -> DecisionsRecorded: ...


class SessionSummaries(Protocol):
    """Where session summaries are kept: `ComplianceLog.refresh_sessions`."""

    def refresh_sessions(
        self,
        session_ids: Iterable[str],
        *,
        patient_refs: Mapping[str, str | None] | None = None,
        protocols: Mapping[str, str | None] | None = None,
    ) -> int: ...


class Unavailable(Exception):
    """The runtime cannot take events now (stopping, overloaded, or the journal failed)."""


@dataclass(frozen=True, slots=True)
class EventResult:
    outcome: Outcome
    event_id: str | None = None
    session_id: str | None = None
    reason: str | None = None
    detail: str | None = None


@dataclass(slots=True)
class RecoverySummary:
    events: int = 0
    rejections: int = 0
    quarantined: int = 0
    alerts: int = 0
    audit_records: int = 0
    seconds: float = 0.0
    snapshot: Position | None = None  # where the snapshot it started from reached
    evictions: int = 0  # journaled eviction calls repeated


@dataclass(slots=True)
class _Batch:
    items: list[Incoming]
    principal: Principal | None
    source: str
    future: asyncio.Future[list[EventResult]]
    received: float  # unix seconds
    records: list[JournaledRecord] = field(default_factory=list)  # the service's own (`record`)


_WALL_CLOCK: Final = WallClock()  # events never move the clock; `_step` moves it to now
_APPLY: Final = "apply"
_DUPLICATE: Final = "duplicate"


@dataclass(slots=True)
class _Group:
    """What the requests taken together admitted so far (they are journaled together)."""

    events: dict[tuple[str, str], Event] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)  # new sessions: id -> clinic


@dataclass(slots=True)
class _Planned:
    """What step 2 decided for one incoming item before anything was written."""

    kind: Literal["apply", "duplicate", "rejected"]
    event: Event | None = None
    rejection: Rejection | None = None
    source: str = ""


@dataclass(frozen=True, slots=True)
class _Collect:
    """The step's sink: decisions gathered for the compliance log, counted as they come."""

    decisions: Decisions
    telemetry: Telemetry
    topic: str | None = None
    ingested_at: float | None = None

    def __call__(self, step: Decisions, event: Event | None, /) -> None:
        self.telemetry.observe_decisions(
            step, topic=self.topic, event=event, ingested_at=self.ingested_at
        )
        self.decisions.extend(step)


@dataclass(slots=True)
class _Metrics:
    """Embedded-only families; the shared ones come from the `Telemetry` catalogue."""

    commit_seconds: Histogram
    group_events: Histogram
    record_failures: Counter
    record_lag: Histogram
    journal_failures: Counter
    summary_seconds: Histogram
    summary_failures: Counter
    conflicting_duplicates: Counter
    quarantined: Counter
    evicted: Counter
    snapshot_seconds: Histogram
    snapshot_failures: Counter

    @classmethod
    def of(cls, registry: CollectorRegistry) -> _Metrics:
        return cls(
            commit_seconds=Histogram(
                "remsguard_journal_commit_seconds",
                "Time to append and fsync one group of requests to the event journal.",
                registry=registry,
                buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 2.5),
            ),
            group_events=Histogram(
                "remsguard_journal_group_events",
                "Events per journal group commit (requests waiting together share one fsync).",
                registry=registry,
                buckets=(1, 10, 100, 1000, 10_000, 100_000),
            ),
            record_failures=Counter(
                "remsguard_compliance_write_failures_total",
                "Failed writes to the compliance log (retried, in order, after a pause).",
                registry=registry,
            ),
            record_lag=Histogram(
                "remsguard_compliance_record_lag_seconds",
                "Time from a step's answer until its decisions are in the compliance log "
                "(reads wait for it).",
                registry=registry,
                buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            ),
            journal_failures=Counter(
                "remsguard_journal_failures_total",
                "Failed journal appends (their requests were answered 503).",
                registry=registry,
            ),
            summary_seconds=Histogram(
                "remsguard_session_summary_refresh_seconds",
                "Time to refresh the summaries of the sessions touched since the last refresh.",
                registry=registry,
                buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            ),
            summary_failures=Counter(
                "remsguard_session_summary_failures_total",
                "Failed session summary refreshes (retried).",
                registry=registry,
            ),
            conflicting_duplicates=Counter(
                "remsguard_conflicting_duplicates_total",
                "Events rejected for reusing an accepted event id with other content.",
                registry=registry,
            ),
            quarantined=Counter(
                "remsguard_journal_quarantined_total",
                "Journaled events set aside at recovery because they could not be applied.",
                registry=registry,
            ),
            evicted=Counter(
                "remsguard_sessions_evicted_total",
                "Finished sessions dropped from memory after the retention (evict_finished).",
                registry=registry,
            ),
            snapshot_seconds=Histogram(
                "remsguard_engine_snapshot_seconds",
                "Time ingest waits while engine state is pickled for a snapshot.",
                registry=registry,
                buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            ),
            snapshot_failures=Counter(
                "remsguard_engine_snapshot_failures_total",
                "Failed snapshot writes (the previous snapshot stays; retried later).",
                registry=registry,
            ),
        )


class EmbeddedRuntime:
    def __init__(
        self,
        engine: MonitoringEngine,
        journal: EventJournal,
        compliance: DecisionLog,
        telemetry: Telemetry,
        *,
        bounds: EventTimeBounds | None = None,
        tick_interval: float = 1.0,
        sessions_scan_interval: float = 10.0,
        max_queued_events: int = 500_000,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        summaries: SessionSummaries | None = None,
        summary_interval: float = 1.0,
        retention: timedelta = DEFAULT_RETENTION,
        forget_after: timedelta = DEFAULT_FORGET_AFTER,
        eviction_interval: float = 300.0,
        snapshots: SnapshotStore | None = None,
        snapshot_interval: float = 300.0,
        snapshot_every_events: int = 100_000,
    ) -> None:
        self.engine = engine
        self.journal = journal
        self.compliance = compliance
        self.telemetry = telemetry
        self.bounds = EventTimeBounds() if bounds is None else bounds
        self._tick_interval = tick_interval
        self._scan_interval = sessions_scan_interval
        self._max_queued = max_queued_events
        self._now = now
        self._metrics = _Metrics.of(telemetry.registry)
        self._queue: asyncio.Queue[_Batch | None] = asyncio.Queue()
        self._queued_events = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._journaled = Checkpoint()
        self._recorder = DecisionRecorder(
            self._record_now, self._recorded_through, self._metrics.record_failures.inc
        )
        self._stored_checkpoint = Checkpoint()
        self._summaries = summaries
        self._summary_interval = summary_interval
        # Sessions whose summary is behind their records: session id -> (patient_ref, protocol).
        self._dirty: dict[str, tuple[str | None, str | None]] = {}
        self._dirty_signal = asyncio.Event()
        self._refresher: asyncio.Task[None] | None = None
        self._refresher_stop = asyncio.Event()
        self._refreshing: dict[str, tuple[str | None, str | None]] = {}  # the batch in flight
        self._retention = retention
        self._forget_after = forget_after
        self._eviction_interval = eviction_interval
        self._evictions = 0  # the last journaled eviction call
        self._snapshots = snapshots
        self._snapshot_interval = snapshot_interval
        self._snapshot_every = snapshot_every_events
        self._snapshot_at = Position()  # what the last snapshot covered
        self._snapshot_write: asyncio.Task[None] | None = None
        self._snapshot_retry_at = 0.0  # time.monotonic(): not before, after one that failed

    # -- lifecycle ---------------------------------------------------------------------------

    def current_time(self) -> datetime:
        """The runtime's clock, what the engine decides deadlines by. Any thread."""
        return self._now()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done() and not self._stopping

    def recover(self) -> RecoverySummary:
        """Rebuild engine state from the snapshot and the journal after it (or the whole
        journal), then advance to now (see the module doc).

        Decisions made while re-applying rows the compliance log already holds (the journal's
        `recorded_through` checkpoint) are dropped; everything after is recorded again.
        """
        started = time.perf_counter()
        summary = RecoverySummary()
        engine = self.engine
        recorded = self.journal.recorded_through()
        pending = Decisions()
        pending_events: list[Event] = []

        def flush(final: bool = False) -> None:
            nonlocal pending, pending_events
            if final or len(pending.audit) >= _RECORD_CHUNK:
                summary.alerts += self._record_now(pending, pending_events)
                summary.audit_records += len(pending.audit)
                pending, pending_events = Decisions(), []

        def record(decisions: Decisions, _event: Event | None = None) -> None:
            pending.extend(decisions)

        def drop(decisions: Decisions, _event: Event | None = None) -> None:
            """Decisions of rows the log holds already (`recorded_through`)."""

        snapshot = self._load_snapshot()
        position = Position() if snapshot is None else snapshot.position
        summary.snapshot = None if snapshot is None else position
        evictions = self.journal.evictions(after=position.evictions)
        touched: set[str] = set()
        clock = Recorded(self._now())

        evicted_at: datetime | None = None

        def evict_through(seq: int) -> None:
            """Repeat the eviction calls journaled before the events row `seq`, at most one
            per `_REPLAY_EVICTION_EVERY` of their clock (and always the last)."""
            nonlocal evicted_at
            while evictions and evictions[0].after_event < seq:
                call = evictions.pop(0)
                at = min(call.clock, clock.now)
                if (
                    evictions
                    and evicted_at is not None
                    and at - evicted_at < _REPLAY_EVICTION_EVERY
                ):
                    continue
                advance(engine, at, record if call.after_event >= recorded.events else drop)
                engine.evict_finished(at, call.retention, call.forget_after)
                evicted_at = at
                summary.evictions += 1

        for row in self.journal.events(after=position.events):
            evict_through(row.seq)
            sink = record if row.seq > recorded.events else drop
            touched.add(row.session_id)
            try:
                decoded = decode_event(row.raw)
                if isinstance(decoded, Rejection):  # the contract changed since it was accepted
                    if row.clock is not None:  # its clock moves on all the same
                        advance(engine, min(row.clock, clock.now), sink)
                    self._quarantine(row, decoded.reason, decoded.detail)
                    summary.quarantined += 1
                    continue
                monitor(engine, decoded, "", clock, sink, recorded=row.clock)
            except Exception as exc:  # one record must never stop the service starting
                self._quarantine(row, PROCESSING_ERROR, f"{type(exc).__name__}: {exc}")
                summary.quarantined += 1
                continue
            summary.events += 1
            if sink is record:  # older rows' decisions are recorded already
                pending_events.append(decoded)
                flush()
        evict_through(2**62)
        for rejected in self.journal.rejections(after=recorded.rejections):
            rejection = Rejection(
                reason=rejected.reason,
                detail=rejected.detail,
                event_id=rejected.event_id,
                session_id=rejected.session_id,
                clinic_id=rejected.clinic_id,
            )
            monitor(engine, rejection, rejected.source, clock, record)
            summary.rejections += 1
        after = recorded.service_records
        pending.audit.extend(self.journal.service_records(after=after))
        advance(engine, self._now(), record)
        flush(final=True)
        # A crash may have come between records and their summaries' refresh: refresh every
        # session it may concern once (in the background, after start): all of them after a
        # full replay; after a snapshot, those it had marked and those the journal's tail names.
        if snapshot is None:
            self._mark_sessions(engine.sessions)
        else:
            self._dirty.update(snapshot.marked)
            self._mark_sessions(touched)
        last = self.journal.last()
        self.journal.set_recorded_through(last)
        self._journaled = self._recorder.recorded = self._stored_checkpoint = last
        self._evictions = self.journal.last_eviction()
        self._snapshot_at = position
        summary.seconds = time.perf_counter() - started
        return summary

    def _load_snapshot(self) -> Snapshot | None:
        """The usable snapshot loaded into the engine, or None (the log line says why)."""
        if self._snapshots is None:
            return None
        self._snapshots.discard_temporaries()  # of writers killed with an earlier process
        loaded = self._snapshots.read()
        if isinstance(loaded, Snapshot):
            last, evictions = self.journal.last(), self.journal.last_eviction()
            at = loaded.position
            if at.events > last.events or at.evictions > evictions:
                loaded = f"ahead of the journal (events {at.events} of {last.events})"
        if isinstance(loaded, str):
            say = log.info if loaded == "no snapshot" else log.warning
            say("recovery.full_replay", reason=loaded, path=str(self._snapshots.path))
            return None
        loaded.image.into(self.engine)
        log.info(
            "recovery.from_snapshot",
            events=loaded.position.events,
            sessions=len(loaded.image.sessions),
            tombstones=len(loaded.image.evicted),
        )
        return loaded

    async def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self.telemetry.observe_sessions(self.engine.sessions.values(), self.engine.protocol_of)
            self.telemetry.up(SERVICE, True)
            self._recorder.start()
            self._task = asyncio.create_task(self._run(), name="remsguard-embedded-runtime")
            if self._summaries is not None and self._refresher is None:
                self._refresher_stop.clear()
                self._refresher = asyncio.create_task(
                    self._refresh_loop(), name="remsguard-session-summaries"
                )

    async def stop(self) -> None:
        """Finish what is queued, then stop; the journal stays open (the owner closes it)."""
        if self._task is None:
            return
        self._stopping = True
        self.telemetry.up(SERVICE, False)
        await self._queue.put(None)
        try:
            await self._task
        finally:
            self._task = None
        await self._recorder.stop()
        recorded = self._recorder.recorded
        all_recorded = self._recorder.idle and recorded == self._journaled
        if recorded != self._stored_checkpoint:
            self.journal.set_recorded_through(recorded)
        if self._snapshot_write is not None:
            await self._snapshot_write
        if all_recorded and self._snapshots is not None and self._position() != self._snapshot_at:
            self._begin_snapshot(forked=False)  # the last: a restart after it replays nothing
            if self._snapshot_write is not None:
                await self._snapshot_write
        if self._refresher is not None:
            self._refresher_stop.set()
            self._dirty_signal.set()
            try:
                await self._refresher
            finally:
                self._refresher = None
        await self._refresh_dirty()  # what was marked while the last refresh ran

    # -- ingest ------------------------------------------------------------------------------

    async def submit(self, items: list[Incoming], principal: Principal | None) -> list[EventResult]:
        """Queue one request's events; resolves once they are journaled, applied and logged."""
        if not self.running:
            raise Unavailable("the runtime is not running")
        if self._queued_events + len(items) > self._max_queued and self._queued_events:
            raise Unavailable("too many events waiting; retry shortly")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[EventResult]] = loop.create_future()
        self._queued_events += len(items)
        batch = _Batch(items, principal, f"http:{uuid.uuid4().hex}", future, time.time())
        await self._queue.put(batch)
        return await future

    async def record(self, record: AuditRecord) -> None:
        """Append a record the service makes of its own accord (an auditor query's access
        record): journaled with the next group, so durable on return, and written to the
        compliance log just behind, as decisions are. When the runtime is not running, it is
        written to the log at once. `ValueError` for a detail that is not JSON."""
        journaled = JournaledRecord.of(record)
        if not self.running:
            await asyncio.to_thread(self._record_now, Decisions(audit=[record]))
            return
        future: asyncio.Future[list[EventResult]] = asyncio.get_running_loop().create_future()
        source = f"record:{record.record_id}"
        await self._queue.put(_Batch([], None, source, future, time.time(), [journaled]))
        await future

    async def caught_up(self, timeout: float = 5.0) -> bool:
        """Wait until the compliance log holds what every answered request decided (False:
        still behind after `timeout` seconds, or its writes are failing)."""
        # Not the service's own records (an auditor's earlier access record): they are
        # durable in the journal, and a read need not wait for the log to show them.
        through = Checkpoint(self._journaled.events, self._journaled.rejections)
        try:
            return await asyncio.wait_for(self._recorder.caught_up(through), timeout)
        except TimeoutError:
            return False

    async def _run(self) -> None:
        next_tick = time.monotonic()
        next_scan = time.monotonic() + self._scan_interval
        next_eviction = time.monotonic() + self._eviction_interval
        next_snapshot = time.monotonic() + self._snapshot_interval
        done = False
        while not done:
            timeout = max(0.0, next_tick - time.monotonic())
            batches: list[_Batch] = []
            try:
                first = await asyncio.wait_for(self._queue.get(), timeout=timeout)
            except TimeoutError:
                first = None
            else:
                if first is None:
                    done = True
                else:
                    batches.append(first)
                while not self._queue.empty():
                    more = self._queue.get_nowait()
                    if more is None:
                        done = True
                    else:
                        batches.append(more)
            try:
                await self._step(batches)
            except Exception as exc:  # the owner of the engine must not die silently
                log.exception("runtime.step_failed")
                for batch in batches:
                    if not batch.future.done():
                        batch.future.set_exception(Unavailable(f"internal error: {exc}"))
            for batch in batches:
                self._queued_events -= len(batch.items)
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + self._tick_interval
            if now >= next_scan:
                next_scan = now + self._scan_interval
                engine = self.engine
                self.telemetry.observe_sessions(engine.sessions.values(), engine.protocol_of)
            if now >= next_eviction:
                next_eviction = now + self._eviction_interval
                await self._evict()
            if self._snapshots is not None and self._snapshot_wanted(now >= next_snapshot):
                # Taken now, published once the log has recorded it (`_snapshot_written`):
                # ingest never waits for the recorder here.
                next_snapshot = now + self._snapshot_interval
                self._begin_snapshot()

    # -- bounded state and snapshots ---------------------------------------------------------

    async def _evict(self) -> None:
        """Journal an eviction call, then make it (see the module doc, step 5)."""
        engine = self.engine
        clock = engine.clock
        if clock is None:
            return
        call = JournaledEviction(self._journaled.events, clock, self._retention, self._forget_after)
        try:
            self._evictions = await asyncio.to_thread(self.journal.append_eviction, call)
        except Exception:
            log.exception("runtime.eviction_not_journaled")  # evicts nothing: retried later
            return
        held = len(engine.sessions)
        gone = engine.evict_finished(clock, self._retention, self._forget_after)
        if gone:
            self._metrics.evicted.inc(len(gone))
            log.info("runtime.sessions_evicted", evicted=len(gone), held=held - len(gone))

    def _position(self) -> Position:
        journaled = self._journaled
        return Position(journaled.events, journaled.rejections, self._evictions)

    def _snapshot_wanted(self, interval_passed: bool) -> bool:
        """Whether a snapshot is wanted: the interval passed or enough events came since the
        last one, and no snapshot is being written."""
        if self._snapshot_write is not None and not self._snapshot_write.done():
            return False
        if time.monotonic() < self._snapshot_retry_at:
            return False  # the last one was not written or not published: not every step
        position, last = self._position(), self._snapshot_at
        if position == last:
            return False
        return interval_passed or position.events - last.events >= self._snapshot_every

    def _begin_snapshot(self, forked: bool = _FORK) -> None:
        """Snapshot engine state now (between steps): from a forked child that pickles its
        copy-on-write image while the runtime goes on, or (`stop`, or where there is no fork)
        pickled here, the file written in a thread. It is written as pending, and published
        once the compliance log holds every decision up to its position: a restart replays
        nothing before a snapshot, so only a recorded state may be one."""
        assert self._snapshots is not None
        started = time.perf_counter()
        position = self._position()
        snapshot = Snapshot(position, EngineImage.of(self.engine), self._marked())
        store = self._snapshots
        written: Awaitable[object]
        try:
            if forked:
                pid = store.write_forked(snapshot, publish=False)
                written = asyncio.to_thread(store.wait, pid)
            else:
                payload = dump(snapshot)
                written = asyncio.to_thread(store.write_payload, position, payload, publish=False)
        except Exception:
            self._metrics.snapshot_failures.inc()
            log.exception("snapshot.failed")
            return
        paused = time.perf_counter() - started
        self._metrics.snapshot_seconds.observe(paused)
        self._snapshot_write = asyncio.create_task(
            self._snapshot_written(written, position, paused, len(snapshot.image.sessions)),
            name="remsguard-engine-snapshot",
        )

    def _marked(self) -> dict[str, tuple[str | None, str | None]]:
        return {**self._refreshing, **self._dirty}

    async def _snapshot_written(
        self, written: Awaitable[object], position: Position, paused: float, sessions: int
    ) -> None:
        started = time.perf_counter()
        try:
            outcome = await written
        except Exception:
            outcome = False
            log.exception("snapshot.write_failed")
        if outcome is False:
            self._metrics.snapshot_failures.inc()
            log.error("snapshot.not_written", events=position.events)
            self._snapshot_retry_at = time.monotonic() + _SNAPSHOT_RETRY_SECONDS
            return
        through = Checkpoint(position.events, position.rejections)
        if not await self._recorder.caught_up(through):  # the log's writes are failing
            log.warning("snapshot.not_published", events=position.events)
            # The next one (or the stop's, once recorded) takes its place, a while later.
            self._snapshot_retry_at = time.monotonic() + _SNAPSHOT_RETRY_SECONDS
            return
        assert self._snapshots is not None
        try:
            await asyncio.to_thread(self._snapshots.publish)
        except OSError:
            self._metrics.snapshot_failures.inc()
            log.exception("snapshot.not_published", events=position.events)
            self._snapshot_retry_at = time.monotonic() + _SNAPSHOT_RETRY_SECONDS
            return
        self._snapshot_at = position
        log.info(
            "snapshot.written",
            events=position.events,
            sessions=sessions,
            paused_seconds=round(paused, 3),
            write_seconds=round(time.perf_counter() - started, 3),
        )

    async def _step(self, batches: list[_Batch]) -> None:
        decisions, events = Decisions(), list[Event]()
        ticked = _Collect(decisions, self.telemetry)
        advance(self.engine, self._now(), ticked)  # the live clock: the wall clock, per step
        answers: list[tuple[_Batch, list[EventResult]]] = []
        if batches:
            answers = await self._ingest(batches, decisions, events)
            # Deadlines already past for what just arrived are decided now, not at the next
            # tick, so the requests' answers come after the alerts are in the log.
            advance(self.engine, self._now(), ticked)
        self._recorder.queue(decisions, events, self._journaled)
        for batch, results in answers:
            if not batch.future.done():
                batch.future.set_result(results)

    async def _ingest(
        self, batches: list[_Batch], decisions: Decisions, accepted: list[Event]
    ) -> list[tuple[_Batch, list[EventResult]]]:
        engine = self.engine
        clock = engine.clock
        now = self._now()
        group = _Group()
        plans: list[list[_Planned]] = []
        journal_events: list[JournaledEvent] = []
        journal_rejections: list[JournaledRejection] = []
        records = [record for batch in batches for record in batch.records]
        for batch in batches:
            plan: list[_Planned] = []
            for index, item in enumerate(batch.items):
                decoded = item.decoded
                admitted = (
                    decoded
                    if isinstance(decoded, Rejection)
                    else self._admit(decoded, batch.principal, now, group)
                )
                if isinstance(admitted, Rejection):
                    decoded = admitted
                    source = f"{batch.source}:{index}"
                    plan.append(_Planned("rejected", rejection=decoded, source=source))
                    journal_rejections.append(
                        JournaledRejection(
                            source,
                            decoded.reason,
                            decoded.detail,
                            decoded.event_id,
                            decoded.session_id,
                            decoded.clinic_id,
                            clock,
                        )
                    )
                    continue
                assert not isinstance(decoded, Rejection)
                if admitted == _DUPLICATE:
                    plan.append(_Planned("duplicate", event=decoded))
                else:
                    plan.append(_Planned("apply", event=decoded))
                    journal_events.append(
                        JournaledEvent(decoded.session_id, decoded.event_id, clock, item.raw)
                    )
            plans.append(plan)

        recorded = self._recorder.recorded
        checkpoint = None if recorded == self._stored_checkpoint else recorded
        started = time.perf_counter()
        try:
            # On the event loop, not in a worker thread: the fsync releases the GIL, and the
            # hop cost more than the append. A worker thread has to win the GIL back from
            # the busy loop after each of its SQLite calls: 8 single-event clients went from
            # about 910 to 1,650 requests/s this way (bench.embedded_ingest, wrk phase).
            self._journaled = self.journal.append(
                journal_events, journal_rejections, checkpoint, records
            )
        except Exception as exc:
            self._metrics.journal_failures.inc()
            log.exception("journal.append_failed", events=len(journal_events))
            for batch in batches:
                batch.future.set_exception(Unavailable(f"the event journal failed: {exc}"))
            return []
        if checkpoint is not None:
            self._stored_checkpoint = checkpoint
        self._metrics.commit_seconds.observe(time.perf_counter() - started)
        self._metrics.group_events.observe(sum(len(b.items) for b in batches))
        decisions.audit.extend(journaled.record for journaled in records)

        telemetry = self.telemetry
        answers: list[tuple[_Batch, list[EventResult]]] = []
        for batch, plan in zip(batches, plans, strict=True):
            results: list[EventResult] = []
            decided = _Collect(decisions, telemetry, HTTP_TOPIC, batch.received)
            for planned in plan:
                event = planned.event
                if planned.kind == "rejected":
                    rejection = planned.rejection
                    assert rejection is not None
                    monitor(engine, rejection, planned.source, _WALL_CLOCK, decided)
                    results.append(_rejected(rejection))
                    continue
                assert event is not None
                if planned.kind == "duplicate":  # answered, never applied
                    duplicate = Decisions(outcome=Outcome.DUPLICATE)
                    telemetry.observe_decisions(
                        duplicate, topic=HTTP_TOPIC, event=event, ingested_at=batch.received
                    )
                    results.append(EventResult(Outcome.DUPLICATE, event.event_id, event.session_id))
                    continue
                step = self._apply(event, decided)
                if step.rejection is not None:
                    results.append(_rejected(step.rejection))
                else:
                    accepted.append(event)
                    results.append(EventResult(step.outcome, event.event_id, event.session_id))
            answers.append((batch, results))
        return answers

    def _admit(
        self, event: Event, principal: Principal | None, now: datetime, group: _Group
    ) -> Rejection | Literal["apply", "duplicate"]:
        """Whether a contract-valid event may be applied (see the module doc, step 2)."""
        if principal is not None and not principal.may_see(event.clinic_id):
            detail = f"this token may not post events of clinic {event.clinic_id!r}"
            return rejection_of(event, CLINIC_NOT_PERMITTED, detail)
        out_of_bounds = self.bounds.check(event, now)
        if out_of_bounds is not None:
            return out_of_bounds
        session_id, event_id = event.session_id, event.event_id
        session = self.engine.sessions.get(session_id)
        owner = session.clinic_id if session is not None else group.owners.get(session_id)
        if owner is not None and owner != event.clinic_id:
            detail = f"session {session_id!r} belongs to another clinic"
            return rejection_of(event, SESSION_OF_ANOTHER_CLINIC, detail)
        original = group.events.get((session_id, event_id))
        if original is None and session is not None and event_id in session.seen:
            original = self._journaled_event(session_id, event_id)
            if original is None:
                return _DUPLICATE  # nothing to compare with (it was quarantined)
        if original is not None:
            if original == event:  # same content (instants compare as instants)
                return _DUPLICATE
            self._metrics.conflicting_duplicates.inc()
            log.warning(
                "ingest.conflicting_duplicate",
                session_id=session_id,
                event_id=event_id,
                clinic_id=event.clinic_id,
            )
            detail = f"event id {event_id!r} was already accepted with other content"
            return rejection_of(event, CONFLICTING_DUPLICATE, detail)
        group.events[(session_id, event_id)] = event
        group.owners.setdefault(session_id, event.clinic_id)
        return _APPLY

    def _apply(self, event: Event, decided: DecisionSink) -> Decisions:
        """The one step (`monitor`), but an event the engine fails on is quarantined and
        answered as rejected (`processing_error`), so it can neither stop this step nor a
        restart."""
        try:
            return monitor(self.engine, event, "", _WALL_CLOCK, decided)
        except Exception as exc:
            detail = f"{type(exc).__name__}: {exc}"[:200]
            self.journal.quarantine_event(
                event.session_id, event.event_id, PROCESSING_ERROR, detail
            )
            self._metrics.quarantined.inc()
            log.exception(
                "ingest.event_quarantined", session_id=event.session_id, event_id=event.event_id
            )
            rejection = rejection_of(event, PROCESSING_ERROR, detail)
            step = Decisions(outcome=Outcome.REJECTED, rejection=rejection)
            decided(step, event)
            return step

    def _journaled_event(self, session_id: str, event_id: str) -> Event | None:
        raw = self.journal.raw_event(session_id, event_id)
        decoded = None if raw is None else decode_event(raw)
        return None if decoded is None or isinstance(decoded, Rejection) else decoded

    def _quarantine(self, row: JournaledEvent, reason: str, detail: str) -> None:
        """Set aside a journaled event recovery cannot apply; start-up goes on without it."""
        self.journal.quarantine(row.seq, reason, detail)
        self._metrics.quarantined.inc()
        log.error(
            "journal.event_quarantined",
            seq=row.seq,
            session_id=row.session_id,
            event_id=row.event_id,
            reason=reason,
            detail=detail[:200],
        )

    # -- session summaries -------------------------------------------------------------------

    def _mark_sessions(self, session_ids: Iterable[str]) -> None:
        """Mark sessions for a summary refresh, with what engine state knows of them. Called
        only by the owner of the engine (the runtime task, or `recover` before it starts)."""
        if self._summaries is None:
            return
        sessions = self.engine.sessions
        dirty = self._dirty
        for session_id in session_ids:
            session = sessions.get(session_id)
            if session is None:
                dirty.setdefault(session_id, (None, None))
            else:
                dirty[session_id] = (session.patient_ref, session.protocol)
        if dirty:
            self._dirty_signal.set()

    def _mark_touched(self, decisions: Decisions) -> None:
        if self._summaries is None or not (decisions.audit or decisions.alerts):
            return
        touched = {r.session_id for r in decisions.audit if r.session_id is not None}
        touched.update(a.session_id for a in decisions.alerts)
        self._mark_sessions(touched)

    async def _refresh_loop(self) -> None:
        stop = self._refresher_stop
        while True:
            await self._dirty_signal.wait()
            self._dirty_signal.clear()
            if stop.is_set():
                return  # `stop` refreshes what is left
            ok = await self._refresh_dirty()
            # Coalesce: what is marked meanwhile is refreshed together, one interval later.
            pause = self._summary_interval if ok else max(1.0, self._summary_interval)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=pause)

    async def _refresh_dirty(self) -> bool:
        if self._summaries is None or not self._dirty:
            return True
        batch, self._dirty = self._dirty, {}
        self._refreshing = batch
        started = time.perf_counter()
        try:
            await asyncio.to_thread(self._refresh_now, batch)
        except Exception:
            self._refreshing = {}
            self._metrics.summary_failures.inc()
            log.exception("session_summaries.refresh_failed", sessions=len(batch))
            for session_id, known in batch.items():
                self._dirty.setdefault(session_id, known)
            self._dirty_signal.set()
            return False
        self._refreshing = {}
        self._metrics.summary_seconds.observe(time.perf_counter() - started)
        return True

    def _refresh_now(self, batch: Mapping[str, tuple[str | None, str | None]]) -> None:
        assert self._summaries is not None
        ids = sorted(batch)
        for start in range(0, len(ids), _SUMMARY_CHUNK):
            chunk = ids[start : start + _SUMMARY_CHUNK]
            self._summaries.refresh_sessions(
                chunk,
                patient_refs={sid: batch[sid][0] for sid in chunk},
                protocols={sid: batch[sid][1] for sid in chunk},
            )

    def _record_now(self, decisions: Decisions, events: Sequence[Event] = ()) -> int:
        """Write accepted events' content and decisions to the compliance log in one
        transaction; returns how many alerts were new. Any thread."""
        if not (events or decisions.alerts or decisions.audit):
            return 0
        started = time.perf_counter()
        recorded = self.compliance.record_decisions(events, decisions.alerts, decisions.audit)
        appended = recorded.audit
        self.telemetry.audit_batch(
            appended.inserted, appended.duplicates, time.perf_counter() - started
        )
        return recorded.new_alerts

    def _recorded_through(self, _through: Checkpoint, decisions: Decisions, lag: float) -> None:
        self._metrics.record_lag.observe(lag)
        self._mark_touched(decisions)


def _rejected(rejection: Rejection) -> EventResult:
    return EventResult(
        Outcome.REJECTED,
        rejection.event_id,
        rejection.session_id,
        rejection.reason,
        rejection.detail,
    )
