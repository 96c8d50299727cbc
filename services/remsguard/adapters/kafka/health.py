"""Whether a processor worker is doing its job, for `/healthz` and `remsguard_worker_up`.

The worker is unhealthy (a 503 saying why) when, for longer than `stall_seconds`:
- its timer has not run (the event loop is blocked, or the worker has stopped);
- it has been rebalancing or recovering its table;
- its agent crashed (faust restarts it: a crash loop looks alive otherwise);
- a heartbeat it sent to one of its partitions has not come back through the agent. The
  timer sends a flush request (`F`) to the tick topic's partition p every few seconds; the
  agent seeing it proves produce -> broker -> consume -> process works for p, so a lost
  broker, a stalled partition or a stuck agent all show here.
`check` runs on the metrics server's thread: it only reads.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

__all__ = ["WorkerHealth"]


class WorkerHealth:
    def __init__(
        self, stall_seconds: float, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.stall = stall_seconds
        self.heartbeat_every = max(0.5, min(5.0, stall_seconds / 4))
        self._now = monotonic
        self._started = monotonic()
        self._timer: float | None = None
        self._rebalancing_since: float | None = None
        self._crashes = 0
        self._crashed_at: float | None = None
        self._crash = ""
        self._unanswered: dict[int, float] = {}  # partition -> oldest heartbeat not seen
        self._last_heartbeat = 0.0

    # -- what the worker reports ---------------------------------------------------------

    def timer_ran(self, rebalancing: bool) -> None:
        now = self._now()
        self._timer = now
        if not rebalancing:
            self._rebalancing_since = None
        elif self._rebalancing_since is None:
            self._rebalancing_since = now

    def heartbeat_due(self) -> bool:
        return self._now() - self._last_heartbeat >= self.heartbeat_every

    def heartbeats_sent(self, partitions: Iterable[int]) -> None:
        now = self._last_heartbeat = self._now()
        for partition in partitions:
            self._unanswered.setdefault(partition, now)

    def heartbeat_seen(self, partition: int) -> None:
        self._unanswered.pop(partition, None)

    def revoked(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self._unanswered.pop(partition, None)

    def crashed(self, exc: BaseException) -> None:
        self._crashes += 1
        self._crashed_at = self._now()
        self._crash = f"{type(exc).__name__}: {exc}"[:200]

    # -- the verdict ---------------------------------------------------------------------

    def check(self) -> str | None:
        """None when healthy; else one line saying what is wrong."""
        now = self._now()
        stall = self.stall
        if self._crashed_at is not None and now - self._crashed_at < stall:
            return (
                f"the agent crashed {self._crashes} time(s), last {now - self._crashed_at:.0f} s "
                f"ago: {self._crash}"
            )
        timer = self._timer
        if timer is None:
            if now - self._started > stall:
                return f"not started after {now - self._started:.0f} s"
            return None
        if now - timer > stall:
            return f"the worker's timer has not run for {now - timer:.0f} s"
        since = self._rebalancing_since
        if since is not None and now - since > stall:
            return f"rebalancing or recovering for {now - since:.0f} s"
        late = {p: now - at for p, at in dict(self._unanswered).items() if now - at > stall}
        if late:
            worst = max(late, key=late.__getitem__)
            return (
                f"partition(s) {sorted(late)} processed nothing for {late[worst]:.0f} s "
                "(a heartbeat sent then has not come through the agent)"
            )
        return None
