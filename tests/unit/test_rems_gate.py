"""The REMS gate in the engine: messages, late openings, and registry changes mid-stream."""

from __future__ import annotations

from datetime import date

from remsguard.domain.registry import Certification, Enrollment, RemsRegistry

from .scenario import Replay, Session, at, engine, only

CERT = Certification("c1", "CERT-1", date(2026, 1, 1), date(2026, 11, 22))
ENROLLED_LATE = Enrollment("c1", "p-s1", date(2026, 11, 24))
VALID = Certification("c1", "CERT-1", date(2026, 1, 1))


def test_messages_name_what_was_missing() -> None:
    s = Session()
    registry = RemsRegistry.of([CERT], [ENROLLED_LATE])
    replay = Replay(engine(registry=registry)).feed([s.opened(-10), s.dose(0, id="dose")])
    [setting] = only(replay.alerts, "SETTING_NOT_CERTIFIED")
    [patient] = only(replay.alerts, "PATIENT_NOT_ENROLLED")
    assert "CERT-1" in setting.message and "lapsed on 2026-11-22" in setting.message
    assert "enrolled only on 2026-11-24" in patient.message
    assert setting.evidence == patient.evidence == ("dose",)
    nothing = Replay(engine(registry=RemsRegistry())).feed([s.opened(-10), s.dose(0)]).alerts
    assert "no SPRAVATO REMS certification" in only(nothing, "SETTING_NOT_CERTIFIED")[0].message
    assert "is not enrolled" in only(nothing, "PATIENT_NOT_ENROLLED")[0].message


def test_a_dose_before_a_ketamine_iv_opening_is_never_judged() -> None:
    s = Session()
    replay = Replay(engine(registry=RemsRegistry())).feed(
        [s.dose(0), s.opened(5, "ketamine-iv"), s.dose(30)]
    )
    assert not [a for a in replay.alerts if a.rule.endswith(("ENROLLED", "CERTIFIED"))]


def test_each_dose_is_judged_once_and_a_late_enrollment_leaves_the_alert_standing() -> None:
    s = Session()
    replay = Replay(engine(registry=RemsRegistry.of([VALID])))
    replay.feed([s.opened(-10), s.dose(0, id="d1")])
    assert [a.evidence for a in only(replay.alerts, "PATIENT_NOT_ENROLLED")] == [("d1",)]
    # The enrollment is recorded afterwards, backdated: the alert raised stands (staff
    # resolve it); the next dose is judged by the registry now in place.
    replay.engine.registry = replay.engine.registry.with_enrollment(  # type: ignore[union-attr]
        Enrollment("c1", "p-s1", date(2026, 11, 1))
    )
    replay.feed([s.dose(20, id="d2"), s.opened(21, id="again")])
    assert [a.evidence for a in only(replay.alerts, "PATIENT_NOT_ENROLLED")] == [("d1",)]
    assert not replay.withdrawals
    assert at(0) == only(replay.alerts, "PATIENT_NOT_ENROLLED")[0].triggered_at
