"""The engine with many sessions at once (issue 19): each session is decided as if alone.

Sessions shaped as the `bench.engine_scale` workload (staggered so that many are active at
once, each starting on a second of its own so that the clock moves with almost every event,
some with violations) are replayed together, and each again on an engine of its own; the
alerts and audit records of every session must be the same (ids included). The deadline
queue is shared by all sessions, so this holds it to deciding each session's checks at the
same clock as when the session is alone.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta

from remsguard.domain.deadlines import settled
from remsguard.domain.decisions import Decisions
from remsguard.domain.events import Event

from .scenario import Session, at, engine


def _events(sessions: int, concurrent: int) -> list[Event]:
    """`sessions` of 147 minutes, one starting every 147/`concurrent` minutes, in time order."""
    events: list[Event] = []
    step = 147 / concurrent
    for i in range(sessions):
        s, t = Session(f"s{i:04d}", clinic_id=f"c{i % 3}"), i * step + (i % 60) / 60
        dose, end = t + 20, t + 147 - (60 if i % 13 == 0 else 0)  # some leave early
        events += [s.opened(t), s.bp(t + 10), s.dose(dose)]
        minute = 5
        while dose + minute < end:
            if i % 11 == 0 and 30 <= minute <= 50:  # the 40-minute check missed
                events.append(s.vitals(dose + minute, spo2=97))
            elif minute % 10 == 0:
                events.append(s.vitals(dose + minute, 125, 80, spo2=97, rr=14))
            else:
                spo2 = 85 if i % 7 == 0 and minute == 45 else 97
                events.append(s.vitals(dose + minute, spo2=spo2))
            minute += 5
        events += [s.assess(end - 3, 5), s.discharge(end)]
    return sorted(events, key=lambda e: (e.occurred_at, e.event_id))


def _replay(events: list[Event]) -> dict[str, list[tuple[str, str]]]:
    """Per session, every alert and audit record (as `repr`s) in the order decided."""
    e = engine()
    out: dict[str, list[tuple[str, str]]] = defaultdict(list)

    def keep(decisions: Decisions) -> None:
        for alert in decisions.alerts:
            out[alert.session_id].append(("alert", repr(alert)))
        for record in decisions.audit:
            out[str(record.session_id)].append(("audit", repr(record)))

    for event in events:
        keep(e.handle(event))
        if e.clock is None or event.occurred_at > e.clock:
            keep(e.advance_to(event.occurred_at))
    keep(e.advance_to(events[-1].occurred_at + timedelta(days=1)))
    return out


def test_each_session_is_decided_as_if_it_were_alone() -> None:
    events = _events(sessions=240, concurrent=120)
    together = _replay(events)
    by_session: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        by_session[event.session_id].append(event)
    assert len(by_session) == 240
    for session_id, own in by_session.items():
        # The same decisions; their order among the session's own events follows the clock,
        # which the other sessions' events move in between.
        assert sorted(_replay(own)[session_id]) == sorted(together[session_id]), session_id
    alerts = sum(kind == "alert" for rows in together.values() for kind, _ in rows)
    assert alerts > 40  # early discharges, missed checks, desaturations


def test_settled_leaves_the_gap_cursor_where_it_was() -> None:
    s = Session()
    e = engine()
    for event in [s.bp(-5), s.dose(0), s.normal(10), s.normal(20), s.normal(30)]:
        e.handle(event)
    state = e.sessions["s1"]
    cursor = state.gap_cursor
    assert not settled(state, e.protocol_of(state))
    assert state.gap_cursor == cursor
    for event in [s.assess(120, 5), s.normal(124), s.discharge(125)]:
        e.handle(event)
    e.advance_to(at(0) + timedelta(days=1))
    assert settled(state, e.protocol_of(state))
    assert e.next_due("s1") is None
