"""What a live path checks before it accepts an event: its time against the receiver's clock.

Event time is an input to validate, not to obey. The contract already bounds `occurred_at`
to `EARLIEST`..`LATEST` (so no datetime arithmetic in the engine can overflow); a live path
(embedded ingest, the Kafka processor, `publish`, the device client) also refuses an event
stamped further ahead of its own clock than `max_future` (a device clock running fast, or a
hostile one trying to move deadlines) or older than `max_age` (outside what the service
monitors). Replay of a historical file applies only the contract's bounds.

The reason codes of every rejection the service decides beyond the wire contract live here,
so the engine, the adapters and the contract's closed list agree on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from remsguard.domain.decisions import Rejection
from remsguard.domain.events import Event

__all__ = [
    "CLINIC_NOT_PERMITTED",
    "CONFLICTING_DUPLICATE",
    "EARLIEST",
    "KEY_MISMATCH",
    "LATEST",
    "MESSAGE_TOO_LARGE",
    "NO_KEY",
    "OCCURRED_IN_FUTURE",
    "PROCESSING_ERROR",
    "SESSION_OF_ANOTHER_CLINIC",
    "TOO_OLD",
    "UNKNOWN_PROTOCOL",
    "WRONG_PARTITION",
    "EventTimeBounds",
    "rejection_of",
]

EARLIEST: Final = datetime(2000, 1, 1, tzinfo=UTC)
"""No event of a monitored session is older than this (the contract's lower bound)."""
LATEST: Final = datetime(2100, 1, 1, tzinfo=UTC)
"""Nor later than this: far from `datetime.max`, so every deadline sum stays representable."""

OCCURRED_IN_FUTURE: Final = "occurred_in_future"
TOO_OLD: Final = "too_old"
CLINIC_NOT_PERMITTED: Final = "clinic_not_permitted"
SESSION_OF_ANOTHER_CLINIC: Final = "session_of_another_clinic"
CONFLICTING_DUPLICATE: Final = "conflicting_duplicate"
UNKNOWN_PROTOCOL: Final = "unknown_protocol"
PROCESSING_ERROR: Final = "processing_error"
# Kafka doors: every message of a session must be keyed by its session_id (raw UTF-8) and sit
# on the partition the default partitioner gives that key, or its session's state is split.
NO_KEY: Final = "no_key"
KEY_MISMATCH: Final = "key_mismatch"
WRONG_PARTITION: Final = "wrong_partition"
# Larger than the topic's max.message.bytes: the broker would refuse it (publish, client).
MESSAGE_TOO_LARGE: Final = "message_too_large"


@dataclass(frozen=True, slots=True)
class EventTimeBounds:
    """How far from the receiver's clock an event's time may be."""

    max_future: timedelta = timedelta(minutes=5)
    max_age: timedelta = timedelta(days=30)

    @classmethod
    def of(cls, max_future_seconds: float, max_age_days: float) -> EventTimeBounds:
        return cls(timedelta(seconds=max_future_seconds), timedelta(days=max_age_days))

    def check(self, event: Event, now: datetime) -> Rejection | None:
        """None if `event` may be accepted at `now`; else why not."""
        at = event.occurred_at
        if at > now + self.max_future:
            ahead = (at - now).total_seconds()
            return rejection_of(
                event,
                OCCURRED_IN_FUTURE,
                f"occurred_at is {ahead:.0f} s ahead of the receiver's clock "
                f"(at most {self.max_future.total_seconds():.0f} s allowed)",
            )
        if at < now - self.max_age:
            return rejection_of(
                event,
                TOO_OLD,
                f"occurred_at is older than {self.max_age.days} days",
            )
        return None


def rejection_of(event: Event, reason: str, detail: str) -> Rejection:
    """A rejection of a contract-valid event, carrying its ids."""
    return Rejection(
        reason=reason,
        detail=detail,
        event_id=event.event_id,
        session_id=event.session_id,
        clinic_id=event.clinic_id,
    )
