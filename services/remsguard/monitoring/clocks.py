"""The clock policies of the paths: what moves the engine's clock as events arrive.

- `EventTime` (replay): the greatest event time seen, after each event.
- `WallClock` (embedded mode): events never move it; the runtime moves the engine to the
  wall clock once per step (`remsguard.monitoring.service.advance`).
- `Recorded` (embedded recovery): the clock journaled with each event, never past `now`,
  before the event is applied, so deadlines are decided where they were decided live.
- `Watermark` (the stream step): one per input topic-partition; events never move the
  engine's clock, they raise the watermark the processor caps by the wall clock and turns
  into ticks (`remsguard.handlers.stream.StreamProcessor.clocks`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from remsguard.domain.events import Event

__all__ = ["EventTime", "Recorded", "WallClock", "Watermark"]


class EventTime:
    def before(self, event: Event, recorded: datetime | None) -> datetime | None:
        return None

    def after(self, event: Event) -> datetime | None:
        return event.occurred_at


class WallClock:
    def before(self, event: Event, recorded: datetime | None) -> datetime | None:
        return None

    def after(self, event: Event) -> datetime | None:
        return None


@dataclass(frozen=True, slots=True)
class Recorded:
    now: datetime  # a recorded clock is not an input to obey: never past this

    def before(self, event: Event, recorded: datetime | None) -> datetime | None:
        return None if recorded is None else min(recorded, self.now)

    def after(self, event: Event) -> datetime | None:
        return None


@dataclass(slots=True)
class Watermark:
    mark: datetime | None = None  # the greatest event time applied from this input

    def before(self, event: Event, recorded: datetime | None) -> datetime | None:
        return None

    def after(self, event: Event) -> datetime | None:
        if self.mark is None or event.occurred_at > self.mark:
            self.mark = event.occurred_at
        return None
