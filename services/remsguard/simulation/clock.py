"""The clock of a simulated run: simulated time passes `speed` times faster than real time.

`remsguard up --simulate` feeds clinic days faster than real time, so its event times run
ahead of the wall clock. Rather than let event times move the service's clock (which would let
any device do the same), the whole process runs on this clock: the runtime's deadlines, the
event-time checks at the door and the simulator's start all read it, and `up` says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

__all__ = ["SimulatedClock"]


class SimulatedClock:
    """`clock()` is `origin` plus `speed` times the real time since `start_at` was called."""

    def __init__(
        self,
        speed: float,
        *,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if speed <= 0:
            raise ValueError("a simulated clock needs a speed above 0")
        self.speed = speed
        self._monotonic = monotonic
        self._origin = wall()
        self._started = monotonic()

    def start_at(self, origin: datetime) -> None:
        """Carry on from `origin` (e.g. where the last simulated run stopped)."""
        self._origin = origin
        self._started = self._monotonic()

    def __call__(self) -> datetime:
        elapsed = (self._monotonic() - self._started) * self.speed
        return self._origin + timedelta(seconds=elapsed)
