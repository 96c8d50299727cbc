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


Row = TypeVar("Row", Mark, BPReading, Measurement)


class _Kept:
    """What the engine keeps on a session to save work: derived from its state, never
    pickled or compared, and not a dataclass field (so `fields(Session)` is the state)."""

    __slots__ = ("done",)

    # `deadlines.due_checks`: (the dose, the end, bits of its checks done), or None.
    done: tuple[Mark, Mark | None, int] | None


@dataclass(slots=True)
class Session(_Kept):
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
    observed: list[Mark] = field(default_factory=list)  # assessments: respiratory depression
    unstable: list[Mark] = field(default_factory=list)  # discharges not clinically stable
    withdrawn: set[str] = field(default_factory=set)  # rule:key of the alerts taken back
    raised_again: dict[str, int] = field(default_factory=dict)  # rule:key -> times re-raised

    def __post_init__(self) -> None:
        keep_done(self, None)

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
        keep_done(self, None)

    @property
    def first_dose(self) -> Mark | None:
        return self.doses[0] if self.doses else None

    @property
    def latest_dose(self) -> Mark | None:
        return self.doses[-1] if self.doses else None

    @property
    def discharge(self) -> Mark | None:
        """Where the session ends: its first discharge not followed by a dose (a dose after a
        discharge puts the patient back under monitoring). Later events trigger no rules."""
        discharges = self.discharges
        if not discharges:
            return None
        doses = self.doses
        if not doses or discharges[0].at >= doses[-1].at:  # the usual session
            return discharges[0]
        return self.discharge_after(doses[-1].at)

    def discharge_after(self, at: datetime) -> Mark | None:
        """The first discharge at or after `at` (a discharge at a dose's instant ends it)."""
        discharges = self.discharges
        index = bisect_right(discharges, (at,))
        return discharges[index] if index < len(discharges) else None

    def ended_before(self, at: datetime, dose: Mark) -> bool:
        """The monitoring that `dose` began ended (by its discharge) before `at`."""
        discharge = self.discharge_after(dose.at)
        return discharge is not None and discharge.at < at

    def baseline(self) -> BPReading | None:
        """The latest BP reading at or before the first dose; of several at that instant, the
        lowest (a rise is measured from it, so none is missed, whatever the event ids)."""
        first = self.first_dose
        if first is None:
            return None
        rows = self.bp
        index = bisect_right(rows, (first.at, LAST_ID))
        if not index:
            return None
        row = rows[index - 1]
        if index > 1 and rows[index - 2].at == row.at:
            return min(latest_instant(rows[:index]), key=_pressures)
        return row

    def bp_between(self, start: datetime, end: datetime) -> list[BPReading]:
        low = bisect_right(self.bp, (start,))
        high = bisect_right(self.bp, (end, LAST_ID))
        return self.bp[low:high]

    def latest_sedation_until(self, end: datetime) -> Measurement | None:
        """The latest assessment's MOAA/S up to `end`; of several at that instant, the lowest."""
        index = bisect_right(self.sedation, (end, LAST_ID))
        if not index:
            return None
        rows = self.sedation
        if index > 1 and rows[index - 2].at == rows[index - 1].at:
            return min(latest_instant(rows[:index]), key=_value)
        return rows[index - 1]


def keep_done(session: Session, done: tuple[Mark, Mark | None, int] | None) -> None:
    """Set `Session.done` (a slot of the base class, which mypy does not see as one)."""
    _DONE.__set__(session, done)


_DONE: Any = _Kept.__dict__["done"]


def latest_instant(rows: list[Row]) -> list[Row]:
    """The rows at the last instant of `rows` (one, usually): judged together, by the worst."""
    at = rows[-1].at
    low = len(rows) - 1
    while low and rows[low - 1].at == at:
        low -= 1
    return rows[low:]


def _pressures(row: BPReading) -> tuple[float, float]:
    return row.systolic, row.diastolic


def _value(row: Measurement) -> float:
    return row.value


_ROWS: dict[str, type[tuple[Any, ...]]] = {
    "doses": Mark,
    "discharges": Mark,
    "vitals": Mark,
    "bp": BPReading,
    "spo2": Measurement,
    "respiratory_rate": Measurement,
    "sedation": Measurement,
    "observed": Mark,
    "unstable": Mark,
}
_FIELDS = tuple(spec.name for spec in fields(Session))


def insert(rows: list[Row], row: Row) -> int:
    """Insert keeping event-time order; returns the index it landed at."""
    if not rows or rows[-1] <= row:  # the usual case: readings arrive in order
        rows.append(row)
        return len(rows) - 1
    index = bisect_right(rows, row)
    rows.insert(index, row)
    return index
