"""One table per rule of the default protocol `spravato-rems` (issue 3's rule table).

Every rule has a case that fires, cases at the threshold (each says which side of the boundary
the value falls on, and asserts it), and a case that must not fire. Unless a case says
otherwise the dose is at minute 0 and the clock is finally advanced to minute 600, so every
deadline has been decided. Each case asserts the alerts of its own rule only (other rules may
fire incidentally) with severity, triggered_at and evidence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

import pytest

from remsguard.domain.decisions import Severity
from remsguard.domain.events import Event
from remsguard.domain.registry import Certification, Enrollment, RemsRegistry

from .scenario import Session, at, only, protocols, run_open

SEVERITY = {
    "PRE_DOSE_BP_MISSING": Severity.CRITICAL,
    "PRE_DOSE_BP_ELEVATED": Severity.WARNING,
    "POST_DOSE_BP_MISSED": Severity.CRITICAL,
    "BP_RISE": Severity.WARNING,
    "BP_CRISIS": Severity.CRITICAL,
    "SPO2_LOW": Severity.WARNING,
    "SPO2_CRITICAL": Severity.CRITICAL,
    "RESPIRATORY_DEPRESSION": Severity.CRITICAL,
    "DEEP_SEDATION": Severity.CRITICAL,
    "EARLY_DISCHARGE": Severity.CRITICAL,
    "DISCHARGE_WITHOUT_FINAL_BP": Severity.WARNING,
    "DISCHARGE_BP_ELEVATED": Severity.CRITICAL,
    "DISCHARGE_SEDATED": Severity.CRITICAL,
    "VITALS_GAP": Severity.WARNING,
    "SESSION_NOT_CLOSED": Severity.WARNING,
    "DOSE_AFTER_DISCHARGE": Severity.CRITICAL,
    "DISCHARGE_NOT_STABLE": Severity.CRITICAL,
    "PATIENT_NOT_ENROLLED": Severity.CRITICAL,
    "SETTING_NOT_CERTIFIED": Severity.CRITICAL,
}

Build = Callable[[Session], list[Event]]


@dataclass(frozen=True)
class Case:
    rule: str
    build: Build
    # (triggered_at in minutes after the dose, evidence event ids), in order of raising
    expected: list[tuple[float, tuple[str, ...]]]
    until: float = 600
    registry: RemsRegistry | None = None  # the REMS gate is checked only with one


CASES: dict[str, Case] = {}


def case(
    name: str,
    rule: str,
    expected: list[tuple[float, tuple[str, ...]]],
    until: float = 600,
    registry: RemsRegistry | None = None,
):
    def register(build: Build) -> Build:
        CASES[name] = Case(rule, build, expected, until, registry)
        return build

    return register


def monitored(s: Session, *, bp_at_40: bool = True, until: float = 125) -> list[Event]:
    """Heart-rate-only vitals every 10 minutes after the dose: no BP, no gaps."""
    events: list[Event] = [s.hr(m) for m in range(10, int(until), 10)]
    if bp_at_40:
        events.append(s.bp(40, id="bp40"))
    return sorted(events, key=lambda e: e.occurred_at)


# -- PRE_DOSE_BP_MISSING: no BP reading in the 60 minutes before the first dose ----------------


@case("pre_missing/fires", "PRE_DOSE_BP_MISSING", [(0, ("dose",))])
def _(s: Session) -> list[Event]:
    return [s.dose(0, id="dose")]


@case("pre_missing/fires: 61 minutes before is outside", "PRE_DOSE_BP_MISSING", [(0, ("dose",))])
def _(s: Session) -> list[Event]:
    return [s.bp(-61), s.dose(0, id="dose")]


# Boundary: a reading exactly 60 minutes before the dose is inside the look-back (inclusive).
@case("pre_missing/boundary: exactly 60 minutes before counts", "PRE_DOSE_BP_MISSING", [])
def _(s: Session) -> list[Event]:
    return [s.bp(-60), s.dose(0)]


# Boundary: a reading at the dose's own timestamp counts as pre-dose.
@case("pre_missing/boundary: reading at the dose time counts", "PRE_DOSE_BP_MISSING", [])
def _(s: Session) -> list[Event]:
    return [s.bp(0), s.dose(0)]


@case("pre_missing/quiet", "PRE_DOSE_BP_MISSING", [])
def _(s: Session) -> list[Event]:
    return [s.bp(-5), s.dose(0)]


@case("pre_missing/only the first dose is checked", "PRE_DOSE_BP_MISSING", [])
def _(s: Session) -> list[Event]:
    return [s.bp(-5), s.dose(0), s.hr(10), s.dose(90)]


@case("pre_missing/a heart rate alone is not a BP reading", "PRE_DOSE_BP_MISSING", [(0, ("dose",))])
def _(s: Session) -> list[Event]:
    return [s.hr(-5), s.dose(0, id="dose")]


# -- PRE_DOSE_BP_ELEVATED: latest reading of those 60 minutes above 140/90 --------------------


@case("pre_elevated/fires", "PRE_DOSE_BP_ELEVATED", [(0, ("dose", "pre"))])
def _(s: Session) -> list[Event]:
    return [s.bp(-5, 150, 85, id="pre"), s.dose(0, id="dose")]


# Boundary: "above" is strict, so exactly 140/90 does not fire ...
@case("pre_elevated/boundary: 140/90 is not above", "PRE_DOSE_BP_ELEVATED", [])
def _(s: Session) -> list[Event]:
    return [s.bp(-5, 140, 90), s.dose(0)]


# ... and one mmHg more on either value does.
@case("pre_elevated/boundary: 141/90 fires", "PRE_DOSE_BP_ELEVATED", [(0, ("dose", "pre"))])
def _(s: Session) -> list[Event]:
    return [s.bp(-5, 141, 90, id="pre"), s.dose(0, id="dose")]


@case("pre_elevated/boundary: 140/91 fires", "PRE_DOSE_BP_ELEVATED", [(0, ("dose", "pre"))])
def _(s: Session) -> list[Event]:
    return [s.bp(-5, 140, 91, id="pre"), s.dose(0, id="dose")]


@case("pre_elevated/the latest pre-dose reading decides", "PRE_DOSE_BP_ELEVATED", [])
def _(s: Session) -> list[Event]:
    return [s.bp(-30, 160, 100), s.bp(-5, 130, 85), s.dose(0)]


# Simultaneous readings (a monitor and a manual entry): the worst decides, whatever the ids.
@case(
    "pre_elevated/simultaneous: the high one decides (low id z)",
    "PRE_DOSE_BP_ELEVATED",
    [(0, ("dose", "a"))],
)
def _(s: Session) -> list[Event]:
    return [s.bp(-5, 150, 95, id="a"), s.bp(-5, 120, 80, id="z"), s.dose(0, id="dose")]


@case(
    "pre_elevated/simultaneous: the high one decides (low id a)",
    "PRE_DOSE_BP_ELEVATED",
    [(0, ("dose", "z"))],
)
def _(s: Session) -> list[Event]:
    return [s.bp(-5, 120, 80, id="a"), s.bp(-5, 150, 95, id="z"), s.dose(0, id="dose")]


@case("pre_elevated/quiet", "PRE_DOSE_BP_ELEVATED", [])
def _(s: Session) -> list[Event]:
    return [s.bp(-5, 120, 80), s.dose(0)]


@case("pre_elevated/no reading: MISSING, not ELEVATED", "PRE_DOSE_BP_ELEVATED", [])
def _(s: Session) -> list[Event]:
    return [s.bp(-90, 170, 100), s.dose(0)]


# -- POST_DOSE_BP_MISSED: no BP reading 30-50 minutes after the (latest) dose -----------------


@case("post_missed/fires", "POST_DOSE_BP_MISSED", [(50, ("dose",))])
def _(s: Session) -> list[Event]:
    return [s.bp(-5), s.dose(0, id="dose"), s.bp(29), s.bp(51)]


# Boundary: the window is inclusive at both ends: minute 30 and minute 50 both count.
@case("post_missed/boundary: at 30 counts", "POST_DOSE_BP_MISSED", [])
def _(s: Session) -> list[Event]:
    return [s.bp(-5), s.dose(0), s.bp(30)]


@case("post_missed/boundary: at 50 counts", "POST_DOSE_BP_MISSED", [])
def _(s: Session) -> list[Event]:
    return [s.bp(-5), s.dose(0), s.bp(50)]


@case("post_missed/quiet", "POST_DOSE_BP_MISSED", [])
def _(s: Session) -> list[Event]:
    return [s.bp(-5), s.dose(0), *monitored(s)]


@case("post_missed/the latest dose's check", "POST_DOSE_BP_MISSED", [(60, ("dose2",))])
def _(s: Session) -> list[Event]:
    # BP at 40 satisfies the first dose's check, but the second dose (before that check came
    # due) moves the 40-minute check to 40-60; nothing there.
    return [s.bp(-5), s.dose(0), s.dose(10, id="dose2"), s.bp(39)]


# -- BP_RISE: after the first dose, >= baseline + 40 systolic or + 25 diastolic ---------------


@case("rise/fires", "BP_RISE", [(20, ("high", "pre"))])
def _(s: Session) -> list[Event]:
    return [s.bp(-5, 120, 80, id="pre"), s.dose(0), s.bp(20, 165, 85, id="high")]


# Boundary: "≥" is inclusive: exactly +40 systolic fires, exactly +25 diastolic fires ...
@case("rise/boundary: +40 systolic fires", "BP_RISE", [(20, ("high", "pre"))])
def _(s: Session) -> list[Event]:
    return [s.bp(-5, 120, 80, id="pre"), s.dose(0), s.bp(20, 160, 80, id="high")]


@case("rise/boundary: +25 diastolic fires", "BP_RISE", [(20, ("high", "pre"))])
def _(s: Session) -> list[Event]:
    return [s.bp(-5, 120, 80, id="pre"), s.dose(0), s.bp(20, 125, 105, id="high")]


# ... and +39/+24 does not.
@case("rise/boundary: +39/+24 is quiet", "BP_RISE", [])
def _(s: Session) -> list[Event]:
    return [s.bp(-5, 120, 80), s.dose(0), s.bp(20, 159, 104)]


@case("rise/baseline is the latest reading before the first dose", "BP_RISE", [])
def _(s: Session) -> list[Event]:
    return [s.bp(-30, 100, 60), s.bp(-5, 130, 85), s.dose(0), s.bp(20, 160, 100)]


@case("rise/no baseline, no rise", "BP_RISE", [])
def _(s: Session) -> list[Event]:
    return [s.dose(0), s.bp(20, 170, 110)]


@case("rise/not before the dose", "BP_RISE", [])
def _(s: Session) -> list[Event]:
    return [s.bp(-20, 120, 80), s.bp(-5, 170, 80), s.dose(0)]


@case("rise/quiet", "BP_RISE", [])
def _(s: Session) -> list[Event]:
    return [s.bp(-5, 120, 80), s.dose(0), s.bp(20, 150, 95)]


# -- BP_CRISIS: any BP reading >= 180 systolic or >= 120 diastolic ----------------------------


@case("crisis/fires", "BP_CRISIS", [(20, ("crisis",))])
def _(s: Session) -> list[Event]:
    return [s.bp(-5), s.dose(0), s.bp(20, 200, 110, id="crisis")]


# Boundary: "≥" is inclusive: 180 systolic or 120 diastolic alone fires, 179/119 does not.
@case("crisis/boundary: 180 systolic fires", "BP_CRISIS", [(20, ("crisis",))])
def _(s: Session) -> list[Event]:
    return [s.bp(-5), s.dose(0), s.bp(20, 180, 100, id="crisis")]


@case("crisis/boundary: 120 diastolic fires", "BP_CRISIS", [(20, ("crisis",))])
def _(s: Session) -> list[Event]:
    return [s.bp(-5), s.dose(0), s.bp(20, 150, 120, id="crisis")]


@case("crisis/boundary: 179/119 is quiet", "BP_CRISIS", [])
def _(s: Session) -> list[Event]:
    return [s.bp(-5), s.dose(0), s.bp(20, 179, 119)]


@case("crisis/any reading, also before the dose", "BP_CRISIS", [(-5, ("crisis",))])
def _(s: Session) -> list[Event]:
    return [s.bp(-5, 185, 100, id="crisis"), s.dose(0)]


@case("crisis/also in a session without a dose", "BP_CRISIS", [(-5, ("crisis",))])
def _(s: Session) -> list[Event]:
    return [s.bp(-5, 185, 100, id="crisis")]


# Simultaneous readings are one observation: a normal one at the instant of a crisis reading
# does not end the episode, whatever the ids or the arrival order.
@case(
    "crisis/simultaneous: a normal reading beside a crisis is one episode",
    "BP_CRISIS",
    [(10, ("c1",))],
)
def _(s: Session) -> list[Event]:
    return [
        s.bp(-5),
        s.dose(0),
        s.bp(10, 190, 100, id="c1"),
        s.bp(15, 120, 80, id="a"),
        s.bp(15, 185, 100, id="z"),
        s.bp(20, 190, 100, id="c3"),
    ]


@case("crisis/simultaneous: the same, arriving the other way round", "BP_CRISIS", [(10, ("c1",))])
def _(s: Session) -> list[Event]:
    return [
        s.bp(-5),
        s.dose(0),
        s.bp(10, 190, 100, id="c1"),
        s.bp(15, 185, 100, id="a"),
        s.bp(15, 120, 80, id="z"),
        s.bp(20, 190, 100, id="c3"),
    ]


@case("crisis/quiet", "BP_CRISIS", [])
def _(s: Session) -> list[Event]:
    return [s.bp(-5), s.dose(0), s.bp(20, 150, 95)]


# -- SPO2_LOW (below 92, not below 88) and SPO2_CRITICAL (below 88) ---------------------------


@case("spo2_low/fires", "SPO2_LOW", [(20, ("low",))])
def _(s: Session) -> list[Event]:
    return [s.dose(0), s.vitals(20, spo2=90, id="low")]


# Boundary: "below 92" is strict: 92 is quiet, 91.9 fires.
@case("spo2_low/boundary: 92 is quiet", "SPO2_LOW", [])
def _(s: Session) -> list[Event]:
    return [s.dose(0), s.vitals(20, spo2=92)]


@case("spo2_low/boundary: 91.9 fires", "SPO2_LOW", [(20, ("low",))])
def _(s: Session) -> list[Event]:
    return [s.dose(0), s.vitals(20, spo2=91.9, id="low")]


# Boundary: 88 is not below 88, so it is LOW (not CRITICAL).
@case("spo2_low/boundary: 88 is low", "SPO2_LOW", [(20, ("low",))])
def _(s: Session) -> list[Event]:
    return [s.dose(0), s.vitals(20, spo2=88, id="low")]


@case("spo2_low/critical is not also low", "SPO2_LOW", [])
def _(s: Session) -> list[Event]:
    return [s.dose(0), s.vitals(20, spo2=85)]


# Simultaneous SpO2 90 and 85: the instant is critical (the lowest decides), not also low.
@case("spo2_low/simultaneous: critical beside low is not low", "SPO2_LOW", [])
def _(s: Session) -> list[Event]:
    return [s.dose(0), s.vitals(20, spo2=90, id="a"), s.vitals(20, spo2=85, id="z")]


@case("spo2_low/simultaneous: the same, arriving the other way round", "SPO2_LOW", [])
def _(s: Session) -> list[Event]:
    return [s.dose(0), s.vitals(20, spo2=85, id="z"), s.vitals(20, spo2=90, id="a")]


@case("spo2_critical/simultaneous: the lowest decides", "SPO2_CRITICAL", [(20, ("z",))])
def _(s: Session) -> list[Event]:
    return [s.dose(0), s.vitals(20, spo2=90, id="a"), s.vitals(20, spo2=85, id="z")]


@case("spo2_low/quiet", "SPO2_LOW", [])
def _(s: Session) -> list[Event]:
    return [s.dose(0), s.vitals(20, spo2=97)]


@case("spo2_critical/fires", "SPO2_CRITICAL", [(20, ("crit",))])
def _(s: Session) -> list[Event]:
    return [s.dose(0), s.vitals(20, spo2=84, id="crit")]


# Boundary: "below 88" is strict: 88 is quiet (for CRITICAL), 87.9 fires.
@case("spo2_critical/boundary: 88 is quiet", "SPO2_CRITICAL", [])
def _(s: Session) -> list[Event]:
    return [s.dose(0), s.vitals(20, spo2=88)]


@case("spo2_critical/boundary: 87.9 fires", "SPO2_CRITICAL", [(20, ("crit",))])
def _(s: Session) -> list[Event]:
    return [s.dose(0), s.vitals(20, spo2=87.9, id="crit")]


@case("spo2_critical/quiet", "SPO2_CRITICAL", [])
def _(s: Session) -> list[Event]:
    return [s.dose(0), s.vitals(20, spo2=90)]


# -- RESPIRATORY_DEPRESSION: rate below 10, or an assessment flag -----------------------------


@case("resp/fires from the rate", "RESPIRATORY_DEPRESSION", [(20, ("slow",))])
def _(s: Session) -> list[Event]:
    return [s.dose(0), s.vitals(20, rr=8, id="slow")]


@case("resp/fires from an assessment", "RESPIRATORY_DEPRESSION", [(20, ("obs",))])
def _(s: Session) -> list[Event]:
    return [s.dose(0), s.assess(20, resp=True, id="obs")]


# Boundary: "below 10" is strict: 10 is quiet, 9 fires.
@case("resp/boundary: 10 is quiet", "RESPIRATORY_DEPRESSION", [])
def _(s: Session) -> list[Event]:
    return [s.dose(0), s.vitals(20, rr=10)]


@case("resp/boundary: 9 fires", "RESPIRATORY_DEPRESSION", [(20, ("slow",))])
def _(s: Session) -> list[Event]:
    return [s.dose(0), s.vitals(20, rr=9, id="slow")]


@case("resp/quiet", "RESPIRATORY_DEPRESSION", [])
def _(s: Session) -> list[Event]:
    return [s.dose(0), s.vitals(20, rr=14), s.assess(25, 5, resp=False)]


# -- DEEP_SEDATION: an assessment with MOAA/S <= 2 --------------------------------------------


@case("deep/fires", "DEEP_SEDATION", [(20, ("deep",))])
def _(s: Session) -> list[Event]:
    return [s.dose(0), s.assess(20, 1, id="deep")]


# Boundary: "≤ 2" is inclusive: 2 fires, 3 does not.
@case("deep/boundary: 2 fires", "DEEP_SEDATION", [(20, ("deep",))])
def _(s: Session) -> list[Event]:
    return [s.dose(0), s.assess(20, 2, id="deep")]


@case("deep/boundary: 3 is quiet", "DEEP_SEDATION", [])
def _(s: Session) -> list[Event]:
    return [s.dose(0), s.assess(20, 3)]


@case("deep/quiet", "DEEP_SEDATION", [])
def _(s: Session) -> list[Event]:
    return [s.dose(0), s.assess(20, 5), s.assess(30, resp=False)]


# -- EARLY_DISCHARGE: discharge less than 120 minutes after the dose --------------------------


@case("early/fires", "EARLY_DISCHARGE", [(100, ("dis", "dose"))])
def _(s: Session) -> list[Event]:
    return [s.bp(-5), s.dose(0, id="dose"), s.discharge(100, id="dis")]


# Boundary: exactly 120 minutes is not "less than 120"; 119 is.
@case("early/boundary: 120 minutes is quiet", "EARLY_DISCHARGE", [])
def _(s: Session) -> list[Event]:
    return [s.bp(-5), s.dose(0), s.discharge(120)]


@case("early/boundary: 119 minutes fires", "EARLY_DISCHARGE", [(119, ("dis", "dose"))])
def _(s: Session) -> list[Event]:
    return [s.bp(-5), s.dose(0, id="dose"), s.discharge(119, id="dis")]


@case("early/measured from the latest dose", "EARLY_DISCHARGE", [(150, ("dis", "dose2"))])
def _(s: Session) -> list[Event]:
    return [s.bp(-5), s.dose(0), s.dose(60, id="dose2"), s.discharge(150, id="dis")]


@case("early/quiet", "EARLY_DISCHARGE", [])
def _(s: Session) -> list[Event]:
    return s.compliant()


@case("early/no dose, no discharge rules", "EARLY_DISCHARGE", [])
def _(s: Session) -> list[Event]:
    return [s.bp(-5), s.discharge(10)]


# -- DISCHARGE_WITHOUT_FINAL_BP: no BP reading in the 30 minutes before discharge -------------


@case("final_bp/fires", "DISCHARGE_WITHOUT_FINAL_BP", [(125, ("dis",))])
def _(s: Session) -> list[Event]:
    return [s.bp(-5), s.dose(0), *monitored(s), s.bp(90), s.discharge(125, id="dis")]


# Boundary: a reading exactly 30 minutes before discharge is inside the look-back; 31 is not.
@case("final_bp/boundary: 30 minutes before counts", "DISCHARGE_WITHOUT_FINAL_BP", [])
def _(s: Session) -> list[Event]:
    return [s.bp(-5), s.dose(0), *monitored(s), s.bp(95), s.discharge(125)]


@case("final_bp/boundary: 31 minutes before fires", "DISCHARGE_WITHOUT_FINAL_BP", [(125, ("dis",))])
def _(s: Session) -> list[Event]:
    return [s.bp(-5), s.dose(0), *monitored(s), s.bp(94), s.discharge(125, id="dis")]


@case("final_bp/quiet", "DISCHARGE_WITHOUT_FINAL_BP", [])
def _(s: Session) -> list[Event]:
    return s.compliant()


@case("final_bp/no dose, no discharge rules", "DISCHARGE_WITHOUT_FINAL_BP", [])
def _(s: Session) -> list[Event]:
    return [s.hr(0), s.discharge(125)]


# -- DISCHARGE_BP_ELEVATED: that final reading meets BP_CRISIS or BP_RISE ---------------------


@case("discharge_bp/fires on crisis", "DISCHARGE_BP_ELEVATED", [(125, ("dis", "final"))])
def _(s: Session) -> list[Event]:
    return [
        s.bp(-5),
        s.dose(0),
        *monitored(s),
        s.bp(120, 185, 100, id="final"),
        s.discharge(125, id="dis"),
    ]


@case("discharge_bp/fires on rise", "DISCHARGE_BP_ELEVATED", [(125, ("dis", "final"))])
def _(s: Session) -> list[Event]:
    return [
        s.bp(-5, 120, 80),
        s.dose(0),
        *monitored(s),
        s.bp(120, 165, 85, id="final"),
        s.discharge(125, id="dis"),
    ]


# Boundary: the rise condition is inclusive: baseline 120/80, final 160/80 fires, 159/104 not.
@case("discharge_bp/boundary: +40 fires", "DISCHARGE_BP_ELEVATED", [(125, ("dis", "final"))])
def _(s: Session) -> list[Event]:
    return [
        s.bp(-5, 120, 80),
        s.dose(0),
        *monitored(s),
        s.bp(120, 160, 80, id="final"),
        s.discharge(125, id="dis"),
    ]


@case("discharge_bp/boundary: +39/+24 is quiet", "DISCHARGE_BP_ELEVATED", [])
def _(s: Session) -> list[Event]:
    return [s.bp(-5, 120, 80), s.dose(0), *monitored(s), s.bp(120, 159, 104), s.discharge(125)]


@case("discharge_bp/only the latest reading counts", "DISCHARGE_BP_ELEVATED", [])
def _(s: Session) -> list[Event]:
    return [
        s.bp(-5),
        s.dose(0),
        *monitored(s),
        s.bp(100, 185, 100),
        s.bp(120, 130, 85),
        s.discharge(125),
    ]


# Issue 14, gap 1: two readings at the same instant (a monitor and a manual entry); the
# elevated one decides, whatever the ids.
@case(
    "discharge_bp/simultaneous: elevated with id a, normal with id z",
    "DISCHARGE_BP_ELEVATED",
    [(125, ("dis", "a"))],
)
def _(s: Session) -> list[Event]:
    return [
        s.bp(-5),
        s.dose(0),
        *monitored(s),
        s.bp(120, 120, 80, id="z"),
        s.bp(120, 190, 100, id="a"),
        s.discharge(125, id="dis"),
    ]


@case(
    "discharge_bp/simultaneous: elevated with id z, normal with id a",
    "DISCHARGE_BP_ELEVATED",
    [(125, ("dis", "z"))],
)
def _(s: Session) -> list[Event]:
    return [
        s.bp(-5),
        s.dose(0),
        *monitored(s),
        s.bp(120, 190, 100, id="z"),
        s.bp(120, 120, 80, id="a"),
        s.discharge(125, id="dis"),
    ]


@case("discharge_bp/simultaneous: both normal is quiet", "DISCHARGE_BP_ELEVATED", [])
def _(s: Session) -> list[Event]:
    return [
        s.bp(-5),
        s.dose(0),
        *monitored(s),
        s.bp(120, 125, 80, id="z"),
        s.bp(120, 120, 80, id="a"),
        s.discharge(125),
    ]


@case("discharge_bp/quiet", "DISCHARGE_BP_ELEVATED", [])
def _(s: Session) -> list[Event]:
    return s.compliant()


# -- DISCHARGE_SEDATED: the latest assessment at discharge has MOAA/S below 5 -----------------


@case("sedated/fires", "DISCHARGE_SEDATED", [(125, ("dis", "a4"))])
def _(s: Session) -> list[Event]:
    return [
        s.bp(-5),
        s.dose(0),
        *monitored(s),
        s.assess(110, 4, id="a4"),
        s.bp(120),
        s.discharge(125, id="dis"),
    ]


# Boundary: "below 5" is strict: MOAA/S 5 is quiet, 4 fires (above).
@case("sedated/boundary: 5 is quiet", "DISCHARGE_SEDATED", [])
def _(s: Session) -> list[Event]:
    return [s.bp(-5), s.dose(0), *monitored(s), s.assess(110, 5), s.bp(120), s.discharge(125)]


@case("sedated/the latest assessment decides", "DISCHARGE_SEDATED", [])
def _(s: Session) -> list[Event]:
    return [
        s.bp(-5),
        s.dose(0),
        *monitored(s),
        s.assess(60, 3),
        s.assess(110, 5),
        s.bp(120),
        s.discharge(125),
    ]


# Issue 14, gap 1: MOAA/S 5 and 3 at the same instant: the lower decides, whatever the ids.
@case(
    "sedated/simultaneous: 3 with id z beside 5 with id a",
    "DISCHARGE_SEDATED",
    [(125, ("dis", "z"))],
)
def _(s: Session) -> list[Event]:
    return [
        s.bp(-5),
        s.dose(0),
        *monitored(s),
        s.assess(110, 5, id="a"),
        s.assess(110, 3, id="z"),
        s.bp(120),
        s.discharge(125, id="dis"),
    ]


@case(
    "sedated/simultaneous: 3 with id a beside 5 with id z",
    "DISCHARGE_SEDATED",
    [(125, ("dis", "a"))],
)
def _(s: Session) -> list[Event]:
    return [
        s.bp(-5),
        s.dose(0),
        *monitored(s),
        s.assess(110, 3, id="a"),
        s.assess(110, 5, id="z"),
        s.bp(120),
        s.discharge(125, id="dis"),
    ]


# Judgement call: no assessment at all is not "the latest assessment has MOAA/S below 5".
@case("sedated/no assessment is quiet", "DISCHARGE_SEDATED", [])
def _(s: Session) -> list[Event]:
    return [s.bp(-5), s.dose(0), *monitored(s), s.bp(120), s.discharge(125)]


# -- VITALS_GAP: between the first dose and discharge, > 15 minutes with no vitals ------------


@case("gap/fires between readings", "VITALS_GAP", [(25, ("v10",))])
def _(s: Session) -> list[Event]:
    return [s.bp(-5), s.dose(0), s.hr(10, id="v10"), s.hr(26), s.discharge(30)]


@case("gap/fires from the dose", "VITALS_GAP", [(15, ("dose",))])
def _(s: Session) -> list[Event]:
    return [s.bp(-5), s.dose(0, id="dose"), s.hr(16), s.discharge(20)]


@case("gap/fires before discharge", "VITALS_GAP", [(115, ("v100",))])
def _(s: Session) -> list[Event]:
    return [
        s.bp(-5),
        s.dose(0),
        *[s.hr(m) for m in range(10, 100, 10)],
        s.hr(100, id="v100"),
        s.discharge(116),
    ]


@case("gap/fires once for a silent, undischarged session", "VITALS_GAP", [(115, ("v100",))])
def _(s: Session) -> list[Event]:
    return [s.bp(-5), s.dose(0), *[s.hr(m) for m in range(10, 100, 10)], s.hr(100, id="v100")]


# Boundary: "more than 15": exactly 15 minutes is quiet (between readings, from the dose,
# to discharge).
@case("gap/boundary: exactly 15 minutes is quiet", "VITALS_GAP", [])
def _(s: Session) -> list[Event]:
    return [s.bp(-5), s.dose(0), s.hr(15), s.hr(30), s.discharge(45)]


@case("gap/boundary: 15 minutes and a second fires", "VITALS_GAP", [(30, ("v15",))])
def _(s: Session) -> list[Event]:
    return [s.bp(-5), s.dose(0), s.hr(15, id="v15"), s.hr(30 + 1 / 60), s.discharge(45)]


@case("gap/not before the first dose", "VITALS_GAP", [])
def _(s: Session) -> list[Event]:
    return [s.bp(-50), s.bp(-5), s.dose(0), s.hr(10), s.discharge(20)]


@case("gap/not after discharge", "VITALS_GAP", [])
def _(s: Session) -> list[Event]:
    return [s.bp(-5), s.dose(0), s.hr(10), s.discharge(20), s.hr(60)]


@case("gap/quiet", "VITALS_GAP", [])
def _(s: Session) -> list[Event]:
    return s.compliant()


# -- SESSION_NOT_CLOSED: no discharge 240 minutes after the dose ------------------------------


@case("not_closed/fires", "SESSION_NOT_CLOSED", [(240, ("dose",))])
def _(s: Session) -> list[Event]:
    return [s.bp(-5), s.dose(0, id="dose")]


# Boundary: a discharge at exactly 240 minutes is in time; at 241 it is not.
@case("not_closed/boundary: discharge at 240 is in time", "SESSION_NOT_CLOSED", [])
def _(s: Session) -> list[Event]:
    return [s.bp(-5), s.dose(0), s.discharge(240)]


@case("not_closed/boundary: discharge at 241 fires", "SESSION_NOT_CLOSED", [(240, ("dose",))])
def _(s: Session) -> list[Event]:
    return [s.bp(-5), s.dose(0, id="dose"), s.discharge(241)]


@case("not_closed/from the latest dose", "SESSION_NOT_CLOSED", [(300, ("dose2",))])
def _(s: Session) -> list[Event]:
    return [s.bp(-5), s.dose(0), s.dose(60, id="dose2"), s.discharge(301)]


@case("not_closed/quiet", "SESSION_NOT_CLOSED", [])
def _(s: Session) -> list[Event]:
    return s.compliant()


@case("not_closed/no dose, nothing to close", "SESSION_NOT_CLOSED", [])
def _(s: Session) -> list[Event]:
    return [s.bp(-5), s.hr(10)]


# -- DOSE_AFTER_DISCHARGE: a dose after a discharge (issue 14, gap 2) ------------------------


@case(
    "dose_after/fires: discharged before the dose", "DOSE_AFTER_DISCHARGE", [(0, ("dose", "dis"))]
)
def _(s: Session) -> list[Event]:
    # the reproduction: discharge at -5, dose at 0, SpO2 80 at 20, BP 200/130 at 30
    return [
        s.discharge(-5, id="dis"),
        s.dose(0, id="dose"),
        s.vitals(20, spo2=80),
        s.bp(30, 200, 130),
    ]


@case(
    "dose_after/fires: re-dosed after a discharge",
    "DOSE_AFTER_DISCHARGE",
    [(200, ("dose2", "dis"))],
)
def _(s: Session) -> list[Event]:
    return [
        *s.compliant(discharge_at=125)[:-1],
        s.discharge(125, id="dis"),
        s.dose(200, id="dose2"),
    ]


@case(
    "dose_after/fires: the discharge arrives after the dose",
    "DOSE_AFTER_DISCHARGE",
    [(0, ("dose", "dis"))],
)
def _(s: Session) -> list[Event]:
    return [s.bp(-10), s.dose(0, id="dose"), s.discharge(-5, id="dis"), s.hr(3)]


@case(
    "dose_after/only the first dose after a discharge",
    "DOSE_AFTER_DISCHARGE",
    [(20, ("d2", "dis"))],
)
def _(s: Session) -> list[Event]:
    return [s.bp(-5), s.dose(0), s.discharge(10, id="dis"), s.dose(20, id="d2"), s.dose(30)]


# Boundary: a discharge at the dose's own instant ends that dose's monitoring (it is an early
# discharge), it is not a dose after a discharge; a second later is.
@case("dose_after/boundary: discharge at the dose instant is quiet", "DOSE_AFTER_DISCHARGE", [])
def _(s: Session) -> list[Event]:
    return [s.bp(-5), s.discharge(0), s.dose(0)]


@case(
    "dose_after/boundary: a second after the discharge fires",
    "DOSE_AFTER_DISCHARGE",
    [(1 / 60, ("dose", "dis"))],
)
def _(s: Session) -> list[Event]:
    return [s.bp(-5), s.discharge(0, id="dis"), s.dose(1 / 60, id="dose")]


@case("dose_after/quiet", "DOSE_AFTER_DISCHARGE", [])
def _(s: Session) -> list[Event]:
    return s.compliant()


# -- DISCHARGE_NOT_STABLE: discharged while recorded as not clinically stable (gap 3) ---------


@case("not_stable/fires", "DISCHARGE_NOT_STABLE", [(125, ("dis",))])
def _(s: Session) -> list[Event]:
    return [*s.compliant()[:-1], s.discharge(125, stable=False, id="dis")]


@case("not_stable/fires without a dose", "DISCHARGE_NOT_STABLE", [(10, ("dis",))])
def _(s: Session) -> list[Event]:
    return [s.opened(0), s.hr(5), s.discharge(10, stable=False, id="dis")]


# Boundary: only discharges up to the session's end count: a repeated discharge after it is
# not judged (as every event after the end), one followed by a dose is.
@case(
    "not_stable/boundary: a repeated discharge after the end is quiet", "DISCHARGE_NOT_STABLE", []
)
def _(s: Session) -> list[Event]:
    return [*s.compliant(), s.discharge(130, stable=False)]


@case(
    "not_stable/boundary: a discharge followed by a dose fires",
    "DISCHARGE_NOT_STABLE",
    [(60, ("dis",))],
)
def _(s: Session) -> list[Event]:
    return [s.bp(-5), s.dose(0), s.discharge(60, stable=False, id="dis"), s.dose(70)]


@case("not_stable/quiet", "DISCHARGE_NOT_STABLE", [])
def _(s: Session) -> list[Event]:
    return s.compliant()


# -- PATIENT_NOT_ENROLLED / SETTING_NOT_CERTIFIED: the REMS gate, on each dose's date ------
# T0 is 2026-11-23 09:00 UTC; the session's patient is `p-s1` (from session.opened).


def _registry(
    *,
    enrolled: str | None = "2026-11-01",
    valid: tuple[str, str | None] | None = ("2026-01-01", None),
) -> RemsRegistry:
    certs = (
        []
        if valid is None
        else [
            Certification(
                "c1",
                "CERT-1",
                date.fromisoformat(valid[0]),
                None if valid[1] is None else date.fromisoformat(valid[1]),
            )
        ]
    )
    enrollments = (
        [] if enrolled is None else [Enrollment("c1", "p-s1", date.fromisoformat(enrolled))]
    )
    return RemsRegistry.of(certs, enrollments)


def _gated(s: Session) -> list[Event]:
    return [s.opened(-10), *s.compliant()[:1], s.dose(0, id="dose"), *s.compliant()[2:]]


@case(
    "enrolled/fires: not enrolled",
    "PATIENT_NOT_ENROLLED",
    [(0, ("dose",))],
    registry=_registry(enrolled=None),
)
def _(s: Session) -> list[Event]:
    return _gated(s)


@case(
    "enrolled/fires: enrolled after the dose date",
    "PATIENT_NOT_ENROLLED",
    [(0, ("dose",))],
    registry=_registry(enrolled="2026-11-24"),
)
def _(s: Session) -> list[Event]:
    return _gated(s)


@case(
    "enrolled/boundary: enrolled on the dose date is quiet",
    "PATIENT_NOT_ENROLLED",
    [],
    registry=_registry(enrolled="2026-11-23"),
)
def _(s: Session) -> list[Event]:
    return _gated(s)


@case("enrolled/quiet: enrolled before the dose", "PATIENT_NOT_ENROLLED", [], registry=_registry())
def _(s: Session) -> list[Event]:
    return _gated(s)


@case(
    "enrolled/dose before session.opened: judged when it arrives",
    "PATIENT_NOT_ENROLLED",
    [(0, ("dose",))],
    registry=_registry(enrolled=None),
)
def _(s: Session) -> list[Event]:
    return [*s.compliant()[:1], s.dose(0, id="dose"), s.opened(5), *s.compliant()[2:]]


@case(
    "enrolled/quiet: ketamine-iv is never checked",
    "PATIENT_NOT_ENROLLED",
    [],
    registry=_registry(enrolled=None, valid=None),
)
def _(s: Session) -> list[Event]:
    return [s.opened(-10, "ketamine-iv"), s.bp(-5), s.dose(0), s.normal(10)]


@case("enrolled/quiet: without a registry the gate is not checked", "PATIENT_NOT_ENROLLED", [])
def _(s: Session) -> list[Event]:
    return _gated(s)


@case(
    "certified/fires: no certification",
    "SETTING_NOT_CERTIFIED",
    [(0, ("dose",))],
    registry=_registry(valid=None),
)
def _(s: Session) -> list[Event]:
    return _gated(s)


@case(
    "certified/fires: lapsed before the dose date",
    "SETTING_NOT_CERTIFIED",
    [(0, ("dose",))],
    registry=_registry(valid=("2025-01-01", "2026-11-22")),
)
def _(s: Session) -> list[Event]:
    return _gated(s)


@case(
    "certified/boundary: valid to the dose date is quiet",
    "SETTING_NOT_CERTIFIED",
    [],
    registry=_registry(valid=("2025-01-01", "2026-11-23")),
)
def _(s: Session) -> list[Event]:
    return _gated(s)


@case(
    "certified/boundary: valid only from the day after fires",
    "SETTING_NOT_CERTIFIED",
    [(0, ("dose",))],
    registry=_registry(valid=("2026-11-24", None)),
)
def _(s: Session) -> list[Event]:
    return _gated(s)


@case("certified/quiet: valid", "SETTING_NOT_CERTIFIED", [], registry=_registry())
def _(s: Session) -> list[Event]:
    return _gated(s)


@case(
    "certified/quiet: ketamine-iv is never checked",
    "SETTING_NOT_CERTIFIED",
    [],
    registry=_registry(valid=None),
)
def _(s: Session) -> list[Event]:
    return [s.opened(-10, "ketamine-iv"), s.bp(-5), s.dose(0), s.normal(10)]


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule(name: str) -> None:
    c = CASES[name]
    alerts = only(run_open(c.build(Session()), until=c.until, registry=c.registry), c.rule)
    got = [(a.triggered_at, a.evidence) for a in alerts]
    assert got == [(at(minutes), evidence) for minutes, evidence in c.expected]
    for alert in alerts:
        assert alert.severity is SEVERITY[c.rule]
        assert alert.session_id == "s1"
        assert alert.clinic_id == "c1"
        assert alert.message


def test_every_rule_has_a_firing_a_boundary_and_a_quiet_case() -> None:
    assert set(SEVERITY) == set(protocols()["spravato-rems"].rules)
    for rule in SEVERITY:
        cases = [(name, c) for name, c in CASES.items() if c.rule == rule]
        assert any(c.expected for _, c in cases), rule
        assert any(not c.expected for _, c in cases), rule
        assert any("boundary" in name for name, _ in cases), rule


@pytest.mark.parametrize("rule", sorted(SEVERITY))
def test_severity_comes_from_the_protocol_file(rule: str) -> None:
    assert protocols()["spravato-rems"].rule(rule).severity is SEVERITY[rule]
