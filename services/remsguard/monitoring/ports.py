"""What the service layer hands decisions to, as each path provides it."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from remsguard.domain.decisions import Decisions
from remsguard.domain.events import Event

__all__ = ["DecisionSink", "EventClock"]


class DecisionSink(Protocol):
    """Takes each batch of decisions as the engine makes them, with the event that caused
    them (None: the clock moved). Replay prints them; embedded mode collects them for the
    compliance log and counts them; the stream step turns them into outbound messages."""

    def __call__(self, decisions: Decisions, event: Event | None, /) -> None: ...


class EventClock(Protocol):
    """When an event moves the engine's clock (`clocks` holds each path's policy)."""

    def before(self, event: Event, recorded: datetime | None) -> datetime | None:
        """Where to move the clock before the event is applied (None: not moved).
        `recorded`: the clock the transport kept with the event (the journal's), if any."""
        ...

    def after(self, event: Event) -> datetime | None:
        """Where to move the clock once the event is applied (None: not moved)."""
        ...
