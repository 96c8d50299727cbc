"""The embedded runtime: one asyncio task owns the engine.

Every change to engine state happens in `_run`, one step at a time:

1. **Live clock.** Each step first advances the engine to the wall clock, and a step runs at
   least every `tick_interval` seconds even when nothing arrives, so silent sessions still
   get their deadlines decided (the 40-minute check, the end of the window).
2. **Ingest, group-committed.** Requests waiting in the queue are taken together. Duplicates
   (an event id the session has seen) are answered as such and not journaled; every other
   contract-valid event, and every contract rejection, is appended to the journal in one
   transaction that is fsync'd before anything else happens. Only then are the events
   applied to the engine, in arrival order, exactly as `remsguard replay` does: after each
   event the clock moves up to its event time (clock mode `event`), so the engine clock is
   max(wall clock, latest event time) — the same watermark as replay, which also lets a
   simulator run faster than real time. (Clock mode `wall` ignores event times: safer when
   devices' clocks may run ahead, since a future-dated event moves every session's clock.)
3. **Compliance log.** The step's alerts and audit records are written through the
   `ComplianceLog` seam (idempotent by id) before the waiting requests are answered, so a
   client that got its 2xx can read the alerts its events raised.
4. **Session summaries.** The sessions a recorded step touched are marked, with their
   patient_ref and protocol from engine state; a second task refreshes their summaries (and
   monitoring-form rows) with `ComplianceLog.refresh_sessions`, every marked session at once,
   at most every `summary_interval` seconds and in a worker thread, so the refresh never
   holds up ingest and batches itself under load: summaries trail the audit records by
   about one interval. Every session is marked again on recovery (a crash may come between
   records and their refresh), and `stop` refreshes what is still marked.

**Restart recovery** (`recover`) replays the journal in arrival order, advancing the engine
to each event's recorded clock before applying it, so deadlines are decided where they were
decided live; then it advances to now, so a deadline that came due while the process was
down fires once. Every decision is handed to the compliance log again: alert and audit ids
are deterministic, so what was already recorded is a no-op and what a crash lost is filled in.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal, Protocol

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram

from remsguard.adapters.telemetry import HTTP_TOPIC, Telemetry
from remsguard.contract.decode import decode_event
from remsguard.domain.decisions import Alert, AuditRecord, Decisions, Outcome, Rejection
from remsguard.domain.engine import MonitoringEngine
from remsguard.domain.events import Event
from remsguard.embedded.compliance import Principal
from remsguard.embedded.ingest import Incoming
from remsguard.embedded.journal import (
    Checkpoint,
    EventJournal,
    JournaledEvent,
    JournaledRejection,
)

__all__ = [
    "ClockMode",
    "EmbeddedRuntime",
    "EventResult",
    "RecoverySummary",
    "SessionSummaries",
    "Unavailable",
]

log = structlog.get_logger(__name__)

ClockMode = Literal["event", "wall"]
CLINIC_NOT_ALLOWED: Final = "clinic_not_allowed"
SERVICE: Final = "up"
_RECORD_CHUNK: Final = 20_000
_SUMMARY_CHUNK: Final = 500  # sessions per refresh transaction (ingest's writes interleave)


class DecisionLog(Protocol):
    """Where decisions go: `remsguard.adapters.storage.ComplianceLog` (idempotent by id)."""

    def append_audit(self, records: Iterable[AuditRecord]) -> object: ...

    def save_alerts(self, alerts: Iterable[Alert]) -> int: ...

    def save_events(self, events: Iterable[Event]) -> int: ...


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
    alerts: int = 0
    audit_records: int = 0
    seconds: float = 0.0


@dataclass(slots=True)
class _Batch:
    items: list[Incoming]
    principal: Principal | None
    source: str
    future: asyncio.Future[list[EventResult]]
    received: float  # unix seconds


@dataclass(slots=True)
class _Planned:
    """What step 2 decided for one incoming item before anything was written."""

    kind: Literal["apply", "duplicate", "rejected"]
    event: Event | None = None
    rejection: Rejection | None = None
    source: str = ""


@dataclass(slots=True)
class _Metrics:
    """Embedded-only families; the shared ones come from the `Telemetry` catalogue."""

    commit_seconds: Histogram
    group_events: Histogram
    record_failures: Counter
    journal_failures: Counter
    summary_seconds: Histogram
    summary_failures: Counter

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
                "Failed writes to the compliance log (retried on the next step).",
                registry=registry,
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
        )


class EmbeddedRuntime:
    def __init__(
        self,
        engine: MonitoringEngine,
        journal: EventJournal,
        compliance: DecisionLog,
        telemetry: Telemetry,
        *,
        clock_mode: ClockMode = "event",
        tick_interval: float = 1.0,
        sessions_scan_interval: float = 10.0,
        max_queued_events: int = 500_000,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        summaries: SessionSummaries | None = None,
        summary_interval: float = 1.0,
    ) -> None:
        self.engine = engine
        self.journal = journal
        self.compliance = compliance
        self.telemetry = telemetry
        self.clock_mode: ClockMode = clock_mode
        self._tick_interval = tick_interval
        self._scan_interval = sessions_scan_interval
        self._max_queued = max_queued_events
        self._now = now
        self._metrics = _Metrics.of(telemetry.registry)
        self._queue: asyncio.Queue[_Batch | None] = asyncio.Queue()
        self._queued_events = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._unrecorded = Decisions()
        self._unrecorded_events: list[Event] = []  # accepted events not yet in the log
        self._journaled = Checkpoint()
        self._recorded = Checkpoint()
        self._stored_checkpoint = Checkpoint()
        self._summaries = summaries
        self._summary_interval = summary_interval
        # Sessions whose summary is behind their records: session id -> (patient_ref, protocol).
        self._dirty: dict[str, tuple[str | None, str | None]] = {}
        self._dirty_signal = asyncio.Event()
        self._refresher: asyncio.Task[None] | None = None
        self._refresher_stop = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------------

    def current_time(self) -> datetime:
        """The runtime's clock: the wall clock, or in clock mode `event` the engine clock when
        events have moved it ahead (what the engine decides deadlines by). Any thread."""
        now = self._now()
        clock = self.engine.clock
        if self.clock_mode == "event" and clock is not None and clock > now:
            return clock
        return now

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done() and not self._stopping

    def recover(self) -> RecoverySummary:
        """Rebuild engine state from the journal, then advance to now (see the module doc).

        Decisions made while re-applying rows the compliance log already holds (the journal's
        `recorded_through` checkpoint) are dropped; everything after is recorded again.
        """
        started = time.perf_counter()
        summary = RecoverySummary()
        engine = self.engine
        recorded = self.journal.recorded_through()
        pending = Decisions()
        pending_events: list[Event] = []
        latest: datetime | None = None

        def flush(final: bool = False) -> None:
            nonlocal pending, pending_events
            if final or len(pending.audit) >= _RECORD_CHUNK:
                summary.alerts += self._record_now(pending, pending_events)
                summary.audit_records += len(pending.audit)
                pending, pending_events = Decisions(), []

        for row in self.journal.events():
            step = Decisions()
            if row.clock is not None:
                step.extend(engine.advance_to(row.clock))
            decoded = decode_event(row.raw)
            if isinstance(decoded, Rejection):  # the contract changed since it was accepted
                log.warning(
                    "journal.event_no_longer_valid",
                    seq=row.seq,
                    event_id=row.event_id,
                    reason=decoded.reason,
                )
            else:
                step.extend(engine.handle(decoded))
                summary.events += 1
                if latest is None or decoded.occurred_at > latest:
                    latest = decoded.occurred_at
            if row.seq > recorded.events:  # older rows' decisions are recorded already
                pending.extend(step)
                if not isinstance(decoded, Rejection):
                    pending_events.append(decoded)
                flush()
        for rejected in self.journal.rejections(after=recorded.rejections):
            rejection = Rejection(
                reason=rejected.reason,
                detail=rejected.detail,
                event_id=rejected.event_id,
                session_id=rejected.session_id,
                clinic_id=rejected.clinic_id,
            )
            pending.extend(engine.reject(rejection, source=rejected.source))
            summary.rejections += 1
        now = self._now()
        if self.clock_mode == "event" and latest is not None and latest > now:
            now = latest
        pending.extend(engine.advance_to(now))
        flush(final=True)
        # A crash may have come between records and their summaries' refresh: refresh every
        # session once (in the background, after start).
        self._mark_sessions(engine.sessions)
        last = self.journal.last()
        self.journal.set_recorded_through(last)
        self._journaled = self._recorded = self._stored_checkpoint = last
        summary.seconds = time.perf_counter() - started
        return summary

    async def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self.telemetry.observe_sessions(self.engine.sessions.values(), self.engine.protocol_of)
            self.telemetry.up(SERVICE, True)
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
        if self._recorded != self._stored_checkpoint and not self._unrecorded.audit:
            self.journal.set_recorded_through(self._recorded)
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

    async def _run(self) -> None:
        next_tick = time.monotonic()
        next_scan = time.monotonic() + self._scan_interval
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

    async def _step(self, batches: list[_Batch]) -> None:
        decisions, events = self._unrecorded, self._unrecorded_events
        self._unrecorded, self._unrecorded_events = Decisions(), []
        ticked = self.engine.advance_to(self._now())
        self.telemetry.observe_decisions(ticked)
        decisions.extend(ticked)
        answers: list[tuple[_Batch, list[EventResult]]] = []
        if batches:
            answers = await self._ingest(batches, decisions, events)
            # Deadlines already past for what just arrived are decided now, not at the next
            # tick, so the requests' answers come after the alerts are in the log.
            caught_up = self.engine.advance_to(self._now())
            self.telemetry.observe_decisions(caught_up)
            decisions.extend(caught_up)
        if decisions.alerts or decisions.audit:
            try:
                await asyncio.to_thread(self._record_now, decisions, events)
            except Exception:
                self._metrics.record_failures.inc()
                log.exception("compliance_log.write_failed", audit_records=len(decisions.audit))
                self._unrecorded.extend(decisions)
                self._unrecorded_events.extend(events)
            else:
                self._recorded = self._journaled
                self._mark_touched(decisions)
        else:
            self._recorded = self._journaled
        for batch, results in answers:
            if not batch.future.done():
                batch.future.set_result(results)

    async def _ingest(
        self, batches: list[_Batch], decisions: Decisions, accepted: list[Event]
    ) -> list[tuple[_Batch, list[EventResult]]]:
        engine = self.engine
        event_clock = self.clock_mode == "event"
        clock = engine.clock
        seen: set[tuple[str, str]] = set()
        plans: list[list[_Planned]] = []
        journal_events: list[JournaledEvent] = []
        journal_rejections: list[JournaledRejection] = []
        for batch in batches:
            plan: list[_Planned] = []
            for index, item in enumerate(batch.items):
                decoded = item.decoded
                principal = batch.principal
                if not isinstance(decoded, Rejection) and (
                    principal is not None and not principal.may_see(decoded.clinic_id)
                ):
                    decoded = Rejection(
                        reason=CLINIC_NOT_ALLOWED,
                        detail=f"this token may not post events of clinic {decoded.clinic_id!r}",
                        event_id=decoded.event_id,
                        session_id=decoded.session_id,
                        clinic_id=decoded.clinic_id,
                    )
                if isinstance(decoded, Rejection):
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
                key = (decoded.session_id, decoded.event_id)
                session = engine.sessions.get(decoded.session_id)
                if key in seen or (session is not None and decoded.event_id in session.seen):
                    plan.append(_Planned("duplicate", event=decoded))
                else:
                    seen.add(key)
                    plan.append(_Planned("apply", event=decoded))
                    journal_events.append(
                        JournaledEvent(decoded.session_id, decoded.event_id, clock, item.raw)
                    )
                if event_clock and (clock is None or decoded.occurred_at > clock):
                    clock = decoded.occurred_at
            plans.append(plan)

        checkpoint = None if self._recorded == self._stored_checkpoint else self._recorded
        started = time.perf_counter()
        try:
            self._journaled = await asyncio.to_thread(
                self.journal.append, journal_events, journal_rejections, checkpoint
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

        telemetry = self.telemetry
        answers: list[tuple[_Batch, list[EventResult]]] = []
        for batch, plan in zip(batches, plans, strict=True):
            results: list[EventResult] = []
            received = batch.received
            for planned in plan:
                event = planned.event
                if planned.kind == "rejected":
                    rejection = planned.rejection
                    assert rejection is not None
                    step = engine.reject(rejection, source=planned.source)
                    telemetry.observe_decisions(step, topic=HTTP_TOPIC, ingested_at=received)
                    decisions.extend(step)
                    results.append(_rejected(rejection))
                    continue
                assert event is not None
                if planned.kind == "duplicate":
                    step = Decisions(outcome=Outcome.DUPLICATE)
                    results.append(EventResult(Outcome.DUPLICATE, event.event_id, event.session_id))
                else:
                    step = engine.handle(event)
                    decisions.extend(step)
                    if step.rejection is not None:
                        results.append(_rejected(step.rejection))
                    else:
                        accepted.append(event)
                        results.append(EventResult(step.outcome, event.event_id, event.session_id))
                telemetry.observe_decisions(
                    step, topic=HTTP_TOPIC, event=event, ingested_at=received
                )
                if event_clock and (engine.clock is None or event.occurred_at > engine.clock):
                    advanced = engine.advance_to(event.occurred_at)
                    telemetry.observe_decisions(advanced)
                    decisions.extend(advanced)
            answers.append((batch, results))
        return answers

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
        started = time.perf_counter()
        try:
            await asyncio.to_thread(self._refresh_now, batch)
        except Exception:
            self._metrics.summary_failures.inc()
            log.exception("session_summaries.refresh_failed", sessions=len(batch))
            for session_id, known in batch.items():
                self._dirty.setdefault(session_id, known)
            self._dirty_signal.set()
            return False
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
        """Write accepted events' content and decisions to the compliance log; returns how
        many alerts were new."""
        if events:
            self.compliance.save_events(events)
        new_alerts = 0
        if decisions.alerts:
            new_alerts = self.compliance.save_alerts(decisions.alerts)
        if decisions.audit:
            started = time.perf_counter()
            result = self.compliance.append_audit(decisions.audit)
            inserted = getattr(result, "inserted", len(decisions.audit))
            duplicates = getattr(result, "duplicates", 0)
            self.telemetry.audit_batch(inserted, duplicates, time.perf_counter() - started)
        return new_alerts


def _rejected(rejection: Rejection) -> EventResult:
    return EventResult(
        Outcome.REJECTED,
        rejection.event_id,
        rejection.session_id,
        rejection.reason,
        rejection.detail,
    )
