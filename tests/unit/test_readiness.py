"""Discharge readiness: earliest discharge time, blocking reasons in plain words, next check due."""

from __future__ import annotations

from datetime import timedelta

from .scenario import Replay, Session, at


def readiness(events, now: float, open_critical: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    replay = Replay().feed(events)
    return replay.engine.readiness("s1", at(now), open_critical)


def test_a_compliant_patient_is_ready_once_the_window_has_elapsed() -> None:
    s = Session()
    events = [s.bp(-10), s.dose(0), s.bp(40), s.bp(115), s.assess(110, 5)]
    result = readiness(events, now=121)
    assert result is not None
    assert result.ready is True
    assert result.reasons == ()
    assert result.earliest_discharge_at == at(120)


def test_before_the_window_ends_the_minutes_left_are_given() -> None:
    s = Session()
    events = [s.bp(-10), s.dose(0), s.bp(40), s.bp(95), s.assess(90, 5)]
    result = readiness(events, now=100)
    assert result is not None and result.ready is False
    assert result.reasons == ("Observation window not elapsed: 21 min left",)


def test_missing_final_bp_elevated_bp_and_sedation_each_block() -> None:
    s = Session()
    no_bp = readiness([s.bp(-10), s.dose(0), s.bp(40), s.assess(110, 5)], now=130)
    assert no_bp is not None
    assert no_bp.reasons == ("No blood pressure reading in the last 30 min",)

    s = Session()
    high = readiness([s.bp(-10), s.dose(0), s.bp(40), s.bp(125, 182, 100), s.assess(110, 5)], 130)
    assert high is not None
    assert high.reasons == ("Blood pressure 182/100 still elevated",)

    s = Session()
    rise = readiness([s.bp(-10, 120, 80), s.dose(0), s.bp(125, 161, 90), s.assess(110, 5)], 130)
    assert rise is not None and rise.reasons == ("Blood pressure 161/90 still elevated",)

    s = Session()
    sedated = readiness([s.bp(-10), s.dose(0), s.bp(125), s.assess(110, 4)], now=130)
    assert sedated is not None
    assert sedated.reasons == ("Sedation not resolved: latest MOAA/S 4",)

    s = Session()
    unassessed = readiness([s.bp(-10), s.dose(0), s.bp(125)], now=130)
    assert unassessed is not None
    assert unassessed.reasons == ("No sedation assessment since the dose",)


def test_open_critical_alerts_block() -> None:
    s = Session()
    events = [s.bp(-10), s.dose(0), s.bp(40), s.bp(125), s.assess(110, 5)]
    result = readiness(events, now=130, open_critical=("BP_CRISIS", "BP_CRISIS"))
    assert result is not None
    assert result.reasons == ("Open critical alerts: BP_CRISIS",)


def test_the_latest_dose_sets_the_earliest_discharge() -> None:
    s = Session()
    result = readiness([s.bp(-10), s.dose(0), s.dose(30), s.assess(140, 5), s.bp(145)], now=140)
    assert result is not None
    assert result.earliest_discharge_at == at(150)
    assert result.reasons[0] == "Observation window not elapsed: 11 min left"


def test_next_checks_name_the_40_minute_bp_until_it_is_taken() -> None:
    s = Session()
    before = readiness([s.bp(-10), s.dose(0)], now=20)
    assert before is not None
    assert [(c.label, c.due_at) for c in before.next_checks] == [
        ("40-minute BP", at(30)),
        ("End of observation window", at(0) + timedelta(minutes=120)),
    ]
    s = Session()
    after = readiness([s.bp(-10), s.dose(0), s.bp(41)], now=45)
    assert after is not None
    assert [c.label for c in after.next_checks] == ["End of observation window"]


def test_a_session_without_a_dose_has_nothing_to_wait_for_and_unknown_is_none() -> None:
    s = Session()
    result = readiness([s.opened(0), s.bp(5)], now=10)
    assert result is not None and result.ready and result.earliest_discharge_at is None
    assert Replay().engine.readiness("nope", at(0)) is None
