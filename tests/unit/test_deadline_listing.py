"""How deadline checks are listed: the VITALS_GAP candidate and the earliest check due.

The gap candidate is looked up on indices into the session's readings; these tests hold it
to the plain definition on a list of points (the first dose, then the readings after the
cursor up to the discharge), including how far it moves the cursor.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from remsguard.domain.deadlines import _gap_candidate
from remsguard.domain.engine import MonitoringEngine
from remsguard.domain.session import Mark
from remsguard.domain.session import Session as State

from .scenario import Session, at, protocols


def _reference(
    state: State, first: Mark, discharge: Mark | None, limit: timedelta
) -> tuple[Mark | None, Mark | None]:
    """(candidate, cursor after) by the definition, on a copied list of points."""
    cursor, vitals = state.gap_cursor, state.vitals
    end = len(vitals) if discharge is None else bisect_right(vitals, discharge.at, key=_at)
    points = vitals[bisect_right(vitals, cursor or first) : end]
    if cursor is None:
        points.insert(0, first)
    if not points:
        return None, cursor
    here = 0
    while True:
        reach = bisect_right(points, points[here].at + limit, here, key=_at) - 1
        if reach == here:
            break
        here = reach
    return points[here], points[here - 1] if here else cursor


def _at(mark: Mark) -> datetime:
    return mark.at


@settings(max_examples=400, deadline=None)
@given(
    minutes=st.lists(st.integers(-30, 200), max_size=40),
    cursor_index=st.one_of(st.none(), st.integers(0, 39)),
    discharge=st.one_of(st.none(), st.integers(-10, 220)),
    limit=st.integers(1, 30),
)
def test_the_gap_candidate_is_the_one_on_the_list_of_points(
    minutes: list[int], cursor_index: int | None, discharge: int | None, limit: int
) -> None:
    vitals = sorted(Mark(at(m), f"v{i:03d}") for i, m in enumerate(minutes))
    first = Mark(at(0), "dose")
    end = None if discharge is None else Mark(at(max(discharge, 0)), "dis")
    cursor = None
    if cursor_index is not None and cursor_index < len(vitals) and vitals[cursor_index] > first:
        cursor = vitals[cursor_index]
    ours = State("s1", "c1", "spravato-rems", vitals=list(vitals), gap_cursor=cursor)
    theirs = State("s1", "c1", "spravato-rems", vitals=list(vitals), gap_cursor=cursor)
    span = timedelta(minutes=limit)
    expected, moved_to = _reference(theirs, first, end, span)
    assert _gap_candidate(ours, first, end, span) == expected
    assert ours.gap_cursor == moved_to


def test_next_due_of_checks_due_at_one_instant_is_the_first_listed() -> None:
    """The dose's pre-dose check and the discharge check fall due at the same instant, stamped
    in different offsets: `next_due` gives the first listed (the pre-dose check's), as ever."""
    s = Session()
    plus_two = timezone(timedelta(hours=2))
    dose = replace(s.dose(0), occurred_at=at(0).astimezone(plus_two))
    engine = MonitoringEngine(protocols())
    engine.handle(dose)
    engine.handle(s.discharge(0))
    due = engine.next_due("s1")
    assert due == at(5)
    assert due is not None and due.utcoffset() == timedelta(hours=2)
    assert at(0).tzinfo is UTC
