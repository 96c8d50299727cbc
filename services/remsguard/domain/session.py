"""Session: everything the engine remembers about one treatment session, in event-time order."""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from remsguard.domain.events import Medication

LAST_ID = "\U0010ffff"  # sorts after every event id: (t, LAST_ID) follows every row at time t


class BPReading(NamedTuple):
    at: datetime
    event_id: str
    systolic: float
    diastolic: float


class Measurement(NamedTuple):
    """One numeric observation (SpO2, respiratory rate or MOAA/S) at one time."""

    at: datetime
    event_id: str
    value: float


class Mark(NamedTuple):
    """A point in time that matters: a dose, a discharge, a vitals reading."""

    at: datetime
    event_id: str


@dataclass(slots=True)
class Session:
    """Mutable per-session state; every list is kept sorted by (event time, event id)."""

    session_id: str
    clinic_id: str
    protocol: str
    patient_ref: str | None = None
    opened: bool = False
    medications: frozenset[Medication] = frozenset()
    seen: set[str] = field(default_factory=set)
    doses: list[Mark] = field(default_factory=list)
    discharges: list[Mark] = field(default_factory=list)
    vitals: list[Mark] = field(default_factory=list)
    bp: list[BPReading] = field(default_factory=list)
    spo2: list[Measurement] = field(default_factory=list)
    respiratory_rate: list[Measurement] = field(default_factory=list)
    sedation: list[Measurement] = field(default_factory=list)
    fired: set[str] = field(default_factory=set)  # rule:key of every alert and check done
    gap_cursor: Mark | None = None  # last point whose VITALS_GAP question is decided
    scheduled: datetime | None = None  # earliest deadline the engine has queued for us

    def __getstate__(self) -> tuple[Any, ...]:
        """Field values in order, rows as plain tuples: a named tuple pickles through a Python
        call per row, which made a session's pickle 2.6x slower (the stream processor writes
        every changed session to its changelog each flush)."""
        return tuple(
            [tuple(row) for row in getattr(self, name)] if name in _ROWS else getattr(self, name)
            for name in _FIELDS
        )

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        """Reads this shape and the one before it (`(None, {slot: value})`, rows as they are)."""
        if len(state) == 2 and state[0] is None and isinstance(state[1], dict):
            values, plain = [state[1].get(name, MISSING) for name in _FIELDS], False
        else:
            values, plain = list(state), True
        values += [MISSING] * (len(_FIELDS) - len(values))  # fields added since it was written
        for spec, value in zip(fields(self), values, strict=True):
            if value is MISSING:
                factory = spec.default_factory
                value = factory() if callable(factory) else spec.default
            elif plain and spec.name in _ROWS:
                kind = _ROWS[spec.name]
                value = [tuple.__new__(kind, row) for row in value]
            object.__setattr__(self, spec.name, value)

    @property
    def first_dose(self) -> Mark | None:
        return self.doses[0] if self.doses else None

    @property
    def latest_dose(self) -> Mark | None:
        return self.doses[-1] if self.doses else None

    @property
    def discharge(self) -> Mark | None:
        """The session ends at its earliest discharge; later events trigger no rules."""
        return self.discharges[0] if self.discharges else None

    def ended_before(self, at: datetime) -> bool:
        discharge = self.discharge
        return discharge is not None and discharge.at < at

    def baseline(self) -> BPReading | None:
        """The latest BP reading at or before the first dose."""
        first = self.first_dose
        if first is None:
            return None
        index = bisect_right(self.bp, (first.at, LAST_ID))
        return self.bp[index - 1] if index else None

    def bp_between(self, start: datetime, end: datetime) -> list[BPReading]:
        low = bisect_right(self.bp, (start,))
        high = bisect_right(self.bp, (end, LAST_ID))
        return self.bp[low:high]

    def latest_sedation_until(self, end: datetime) -> Measurement | None:
        index = bisect_right(self.sedation, (end, LAST_ID))
        return self.sedation[index - 1] if index else None


_ROWS: dict[str, type[tuple[Any, ...]]] = {
    "doses": Mark,
    "discharges": Mark,
    "vitals": Mark,
    "bp": BPReading,
    "spo2": Measurement,
    "respiratory_rate": Measurement,
    "sedation": Measurement,
}
_FIELDS = tuple(spec.name for spec in fields(Session))

Row = TypeVar("Row", Mark, BPReading, Measurement)


def insert(rows: list[Row], row: Row) -> int:
    """Insert keeping event-time order; returns the index it landed at."""
    if not rows or rows[-1] <= row:  # the usual case: readings arrive in order
        rows.append(row)
        return len(rows) - 1
    index = bisect_right(rows, row)
    rows.insert(index, row)
    return index
