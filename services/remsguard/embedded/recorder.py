"""Recording behind ingest: the compliance log is written by its own task, in step order,
while the next steps are journaled and applied.

A step's requests are answered once its events are journaled (fsync'd) and applied. What the
step decided is queued here with the journal position it covers (`Checkpoint`). The recorder
takes every step queued meanwhile and stores them in one transaction (`write`), then moves
`recorded` to the last one's position; the runtime hands that position to the journal with
its next append, and recovery re-records everything journaled after it (alert and record ids
are deterministic, so a repeat is a no-op). A write that fails is kept and retried, in order,
after a pause; nothing after it is recorded first.

Steps are gathered for up to `linger` seconds before a write (group commit: a transaction
costs about as much CPU for one step as for fifty, and the writes shared the one process's
core with ingest; 25 ms took 8 single-event clients from 714 to about 1,000 events/s,
docs/PERFORMANCE.md). A reader waiting, a snapshot waiting, or stopping ends the wait at once,
so no read waits for the linger.

Reads wait for it: `caught_up()` returns once everything journaled when it was called is
recorded, so a client that got its 2xx and then asks for alerts sees the ones its events
raised. While the log's writes fail it returns at once (False), and the read is served from
what the log holds (`compliance_log.write_failed` and `remsguard_compliance_write_failures_total`
say why) instead of stalling every request.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from remsguard.domain.decisions import Decisions
from remsguard.domain.events import Event
from remsguard.embedded.journal import Checkpoint

__all__ = ["LINGER_SECONDS", "DecisionRecorder", "covers"]

log = structlog.get_logger(__name__)

LINGER_SECONDS = 0.025  # how long steps may gather before a write (nobody waiting)

Write = Callable[[Decisions, Sequence[Event]], object]


def covers(recorded: Checkpoint, wanted: Checkpoint) -> bool:
    """Whether a recorded position includes every journal row of `wanted`."""
    return (
        recorded.events >= wanted.events
        and recorded.rejections >= wanted.rejections
        and recorded.service_records >= wanted.service_records
    )


@dataclass(slots=True)
class _Step:
    decisions: Decisions
    events: list[Event]
    through: Checkpoint
    queued_at: float  # time.monotonic()


class DecisionRecorder:
    """Writes queued steps' decisions with `write` (in a worker thread), oldest first.

    `on_recorded(through, decisions, lag)` runs on the event loop after each successful
    write (`lag`: seconds since the oldest step written was queued); `on_failure()` after
    each failed one (the write is retried after `retry_pause` s)."""

    def __init__(
        self,
        write: Write,
        on_recorded: Callable[[Checkpoint, Decisions, float], None],
        on_failure: Callable[[], None],
        *,
        recorded: Checkpoint | None = None,
        retry_pause: float = 1.0,
        linger: float = LINGER_SECONDS,
    ) -> None:
        self._write = write
        self._on_recorded = on_recorded
        self._on_failure = on_failure
        self._retry_pause = retry_pause
        self._linger = linger
        self._hurry = asyncio.Event()  # someone waits for the queued steps: write them now
        self.recorded = Checkpoint() if recorded is None else recorded
        self._queued: list[_Step] = []
        self._in_flight = False
        self._wake = asyncio.Event()
        # Readers waiting: the position each wants recorded (None: wants it `settled`).
        self._waiters: list[tuple[Checkpoint | None, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.failing = False  # the last write failed; its steps wait for the retry

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing being written."""
        return not self._queued and not self._in_flight

    def queue(self, decisions: Decisions, events: list[Event], through: Checkpoint) -> None:
        """Record a step's decisions and accepted events, covering the journal to `through`.
        A step with nothing to record moves `recorded` at once when nothing is ahead of it."""
        if not (decisions.audit or decisions.alerts or events) and self.idle:
            self.recorded = through
            self._notify()
            return
        self._queued.append(_Step(decisions, events, through, time.monotonic()))
        self._wake.set()

    async def caught_up(self, through: Checkpoint) -> bool:
        """Return once every journal row up to `through` is recorded (True), or at once while
        the log's writes fail (False: the caller serves what the log holds, not a stall)."""
        if not covers(self.recorded, through) and not self.failing:
            await self._wait(through)
        return covers(self.recorded, through)

    async def settled(self) -> None:
        """Return once nothing is queued or being written, or the last write failed."""
        if not self._settled:
            await self._wait(None)

    @property
    def _settled(self) -> bool:
        return self.idle or self.failing

    def _wait(self, through: Checkpoint | None) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((through, future))
        self._hurry.set()
        return future

    def start(self) -> None:
        if self._task is None:
            self._closing = False
            self._task = asyncio.create_task(self._run(), name="remsguard-compliance-recorder")

    async def stop(self, attempts: int = 3) -> None:
        """Write what is queued (up to `attempts` tries when failing), then stop. What is
        still unwritten is left to recovery, which re-records it from the journal."""
        if self._task is None:
            return
        self._closing = True
        self._wake.set()
        self._hurry.set()
        try:
            await self._task
        finally:
            self._task = None
        for _ in range(attempts):
            if not self._queued:
                break
            await self._write_queued()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._closing:
                return
            await self._gather()
            if self._queued and not await self._write_queued():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wait_closing(), timeout=self._retry_pause)
                self._wake.set()

    async def _gather(self) -> None:
        """Let steps gather until the oldest queued is `linger` old, unless someone waits."""
        self._hurry.clear()
        if not self._queued or self._waiters or self.failing:
            return
        left = self._linger - (time.monotonic() - self._queued[0].queued_at)
        if left > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hurry.wait(), timeout=left)

    async def _wait_closing(self) -> None:
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()

    async def _write_queued(self) -> bool:
        """Write every queued step in one call; False (kept for a retry) if it failed."""
        steps, self._queued = self._queued, []
        decisions, events = Decisions(), []
        for step in steps:
            decisions.extend(step.decisions)
            events.extend(step.events)
        self._in_flight = True
        try:
            await asyncio.to_thread(self._write, decisions, events)
        except Exception:
            self._queued[:0] = steps  # oldest first, ahead of what came meanwhile
            self.failing = True
            self._on_failure()
            log.exception("compliance_log.write_failed", audit_records=len(decisions.audit))
            self._notify()
            return False
        finally:
            self._in_flight = False
        self.failing = False
        self.recorded = steps[-1].through
        self._on_recorded(self.recorded, decisions, time.monotonic() - steps[0].queued_at)
        self._notify()
        return True

    def _notify(self) -> None:
        """Wake the readers whose wait is over."""
        waiting = []
        for through, future in self._waiters:
            done = self.failing or (
                self.idle if through is None else covers(self.recorded, through)
            )
            if future.done():
                continue
            if done:
                future.set_result(None)
            else:
                waiting.append((through, future))
        self._waiters = waiting
