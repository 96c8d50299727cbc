"""`MonitoringEngine.evict_finished`: finished sessions leave the engine after a retention, and
what an event naming one does afterwards (issue 19)."""

from __future__ import annotations

from datetime import timedelta

from remsguard.domain.admission import SESSION_OF_ANOTHER_CLINIC
from remsguard.domain.decisions import AuditKind, Outcome, stable_id
from remsguard.domain.engine import MonitoringEngine
from remsguard.domain.events import Event

from .scenario import Session, at, engine, timeline

DAY = timedelta(days=1)


def _run(events: list[Event], e: MonitoringEngine | None = None) -> MonitoringEngine:
    e = e or engine()
    for event in events:
        e.handle(event)
        if e.clock is None or event.occurred_at > e.clock:
            e.advance_to(event.occurred_at)
    return e


def test_a_discharged_session_leaves_once_its_end_is_older_than_the_retention() -> None:
    e = _run(Session().compliant(discharge_at=125))
    e.advance_to(at(125) + DAY)
    assert e.evict_finished(at(125) + DAY) == []  # exactly the retention: not older
    e.advance_to(at(125) + DAY + timedelta(minutes=1))
    assert e.evict_finished(at(125) + DAY + timedelta(minutes=1)) == ["s1"]
    assert "s1" not in e.sessions
    assert e.next_due("s1") is None and e.readiness("s1", at(125) + 2 * DAY) is None
    assert e.evict_finished(at(125) + 2 * DAY) == []  # once


def test_the_retention_is_the_callers() -> None:
    e = _run(Session().compliant(discharge_at=125))
    e.advance_to(at(0) + timedelta(hours=6))
    assert e.evict_finished(at(0) + timedelta(hours=6), retention=timedelta(hours=1)) == ["s1"]


def test_a_session_with_a_check_not_yet_decided_stays() -> None:
    s = Session()
    e = engine()
    for event in s.compliant(discharge_at=125):
        e.handle(event)  # the clock is never moved: no check is decided
    assert e.evict_finished(at(125) + 3 * DAY) == []
    e.advance_to(at(125) + 3 * DAY)  # decides them all
    assert e.evict_finished(at(125) + 3 * DAY) == ["s1"]


def test_a_session_never_discharged_stays_however_old() -> None:
    s = Session()
    e = _run([s.bp(-5), s.dose(0), s.normal(10)])
    decided = e.advance_to(at(0) + 20 * DAY)  # every check is decided
    assert {"SESSION_NOT_CLOSED", "VITALS_GAP"} <= {a.rule for a in decided.alerts}
    assert e.next_due("s1") is None
    assert e.evict_finished(at(0) + 20 * DAY) == []
    assert "s1" in e.sessions


def test_a_dose_after_the_discharge_puts_the_session_back_under_monitoring() -> None:
    s = Session()
    e = _run([*s.compliant(discharge_at=125), s.dose(130)])  # a dose after the discharge
    e.advance_to(at(130) + 3 * DAY)
    assert e.evict_finished(at(130) + 3 * DAY) == []  # no end any more
    e.handle(s.discharge(300))
    e.advance_to(at(300) + 3 * DAY)
    assert e.evict_finished(at(300) + 3 * DAY) == ["s1"]


def test_only_the_finished_sessions_leave() -> None:
    done, open_ = Session("done"), Session("open")
    e = _run(timeline(done.compliant(discharge_at=125), [open_.bp(1435), open_.dose(1440)]))
    now = at(1440) + timedelta(hours=2)
    e.advance_to(now)
    assert e.evict_finished(now, retention=timedelta(hours=12)) == ["done"]
    assert list(e.sessions) == ["open"]


def _evicted() -> tuple[MonitoringEngine, Session]:
    s = Session()
    e = _run(Session().compliant(discharge_at=125))
    e.advance_to(at(125) + 2 * DAY)
    assert e.evict_finished(at(125) + 2 * DAY) == ["s1"]
    return e, s


def test_a_later_event_is_recorded_and_judged_by_no_rule() -> None:
    e, s = _evicted()
    # On a fresh session each of these would raise (SPO2_CRITICAL, BP_CRISIS, a dose without
    # a pre-dose BP, ...): none may, since the session they belong to was judged and closed.
    for event in [
        s.vitals(120, 190, 125, spo2=84, rr=6, id="late-reading"),  # before the old end
        s.vitals(2 * 24 * 60 + 200, spo2=80, id="much-later"),  # after it
        s.assess(130, 1, resp=True, id="late-assessment"),
        s.dose(3000, id="another-dose"),
        s.discharge(3100, stable=False, id="another-discharge"),
        s.opened(-30, "ketamine-iv", id="late-opening"),
    ]:
        decisions = e.handle(event)
        assert decisions.outcome is Outcome.ACCEPTED
        assert decisions.alerts == [] and decisions.withdrawals == []
        (record,) = decisions.audit
        assert record.kind is AuditKind.EVENT_ACCEPTED
        assert record.record_id == stable_id(AuditKind.EVENT_ACCEPTED, "s1", event.event_id)
        assert record.subject_id == event.event_id
        assert "s1" not in e.sessions  # nothing is rebuilt
    later = at(3100) + 5 * DAY
    assert e.advance_to(later).alerts == []
    assert e.evict_finished(later) == []


def test_a_redelivered_event_has_its_first_record_id() -> None:
    s = Session()
    events = s.compliant(discharge_at=125)
    e = engine()
    first = {}
    for event in events:
        first[event.event_id] = e.handle(event).audit[0].record_id
        e.advance_to(event.occurred_at)
    e.advance_to(at(125) + 2 * DAY)
    assert e.evict_finished(at(125) + 2 * DAY) == ["s1"]
    for event in events:
        decisions = e.handle(event)
        assert [r.record_id for r in decisions.audit] == [first[event.event_id]]
        assert decisions.alerts == []


def test_an_event_of_another_clinic_is_still_refused() -> None:
    e, _ = _evicted()
    intruder = Session("s1", clinic_id="c2")
    decisions = e.handle(intruder.normal(200))
    assert decisions.outcome is Outcome.REJECTED
    assert decisions.rejection is not None
    assert decisions.rejection.reason == SESSION_OF_ANOTHER_CLINIC


def test_the_tombstone_is_forgotten_after_forget_after() -> None:
    e, _ = _evicted()
    e.evict_finished(at(125) + 30 * DAY)
    assert "s1" in e.tombstones
    e.evict_finished(at(125) + 32 * DAY)
    assert "s1" not in e.tombstones
    fresh = Session()
    e.handle(fresh.bp(45_000))  # a new session under the old id
    assert "s1" in e.sessions


def test_evicting_as_replay_goes_changes_no_alert() -> None:
    """Sessions a day apart, some with violations, evicted every simulated hour with a short
    retention: the same alerts, audit records and order as without eviction."""
    events: list[Event] = []
    for day in range(6):
        s = Session(f"s{day}")
        start = day * 24 * 60
        if day % 3 == 0:  # early discharge, no final BP, a desaturation
            events += [s.bp(start - 5), s.dose(start), s.vitals(start + 20, spo2=85)]
            events += [s.discharge(start + 60)]
        elif day % 3 == 1:  # the 40-minute check missed, never closed
            events += [s.bp(start - 5), s.dose(start), s.normal(start + 60)]
        else:
            events += s.compliant(dose_at=start, discharge_at=start + 125)
    events = timeline(events)
    plain, evicting = engine(), engine()
    plain_out, evicting_out, evicted = [], [], []
    hour = timedelta(hours=1)
    last_sweep = events[0].occurred_at
    for event in events:
        for e, out in ((plain, plain_out), (evicting, evicting_out)):
            out.append(e.handle(event))
            if e.clock is None or event.occurred_at > e.clock:
                out.append(e.advance_to(event.occurred_at))
        while event.occurred_at - last_sweep > hour:
            last_sweep += hour
            evicting_out.append(evicting.advance_to(last_sweep))
            plain_out.append(plain.advance_to(last_sweep))
            evicted += evicting.evict_finished(last_sweep, retention=timedelta(hours=6))
    end = events[-1].occurred_at + 2 * DAY
    plain_out.append(plain.advance_to(end))
    evicting_out.append(evicting.advance_to(end))
    evicted += evicting.evict_finished(end, retention=timedelta(hours=6))

    def flat(out: list) -> list:  # type: ignore[type-arg]
        return [(d.alerts, d.audit, d.withdrawals) for d in out if d.alerts or d.audit]

    assert flat(evicting_out) == flat(plain_out)
    assert {a.rule for d in plain_out for a in d.alerts} >= {"EARLY_DISCHARGE", "SPO2_CRITICAL"}
    assert sorted(evicted) == ["s0", "s2", "s3", "s5"]  # discharged ones; s1, s4 never closed
    assert sorted(evicting.sessions) == ["s1", "s4"]
