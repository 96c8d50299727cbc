"""Deadline checks: rules about what should have happened by a time, decided once it is past.

Each check comes due at its deadline plus the protocol's allowed lateness, so an event that
arrives late (but within the lateness) still counts.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from operator import attrgetter
from typing import NamedTuple

from remsguard.domain.decisions import AuditKind
from remsguard.domain.findings import Finding, clock_time
from remsguard.domain.protocol import MonitoringProtocol
from remsguard.domain.session import BPReading, Mark, Session, keep_done, latest_instant


class Check(NamedTuple):
    """One deadline check, ordered by when it is due; a tuple because many are listed."""

    due: datetime
    kind: str  # pre | post | window | open | discharge | gap
    subject: Mark

    @property
    def key(self) -> str:
        return check_key(self.kind, self.subject)


def check_key(kind: str, subject: Mark) -> str:
    """How a decided check is remembered in `Session.fired`."""
    return f"check:{kind}:{subject.event_id}"


@dataclass(slots=True)
class CheckOutcome:
    findings: list[Finding] = field(default_factory=list)
    changes: list[tuple[AuditKind, datetime, str]] = field(default_factory=list)


def due_checks(session: Session, protocol: MonitoringProtocol) -> list[Check]:
    """The session's outstanding checks, each with the clock time at which it is decided.

    Listed on every dose, discharge and wake, so checks are built with `tuple.__new__` (a
    named tuple's own constructor is a Python function).
    """
    doses, discharges = session.doses, session.discharges
    if len(doses) == 1 and (not discharges or discharges[0].at >= doses[0].at):
        return _usual_checks(session, protocol, doses[0], discharges[0] if discharges else None)
    return _all_checks(session, protocol)


def _all_checks(session: Session, protocol: MonitoringProtocol) -> list[Check]:
    """`due_checks` for any session (the usual one has `_usual_checks`)."""
    doses, discharges = session.doses, session.discharges
    if not doses:
        return []
    # The discharges that end a period of monitoring: the first at or after each dose (a dose
    # after a discharge puts the patient back under monitoring, so there may be several).
    if not discharges:
        ends: list[Mark] = []
    elif discharges[0].at >= doses[-1].at:  # the usual session: one discharge ends it
        ends = [discharges[0]]
    else:
        found = {session.discharge_after(dose.at) for dose in doses}
        ends = sorted(end for end in found if end is not None)
    discharge = ends[-1] if ends and ends[-1].at >= doses[-1].at else None  # the session's end
    times, done = protocol.intervals, session.fired
    late, first = times.lateness, doses[0]
    # The keys are `check_key`'s, written inline: a listing makes five for the usual session
    # (bench.engine_scale --engine-only, paired A/B).
    checks: list[Check] = []
    if f"check:pre:{first.event_id}" not in done:
        checks.append(_new_check(Check, (first.at + late, "pre", first)))
    # "The dose" of these checks is the latest dose *at the deadline*: a dose's check stands
    # unless another dose was given by then. Deciding by event time, not by which dose has
    # arrived, keeps the outcome independent of arrival order within the lateness.
    intervals = (
        ("post", times.post_dose_until),
        ("window", times.window),
        ("open", times.not_closed_after),
    )
    last = len(doses) - 1
    for index, dose in enumerate(doses):
        following = doses[index + 1].at if index < last else None
        at, event_id = dose
        for kind, interval in intervals:
            deadline = at + interval
            if (following is None or following > deadline) and (
                f"check:{kind}:{event_id}" not in done
            ):
                checks.append(_new_check(Check, (deadline + late, kind, dose)))
    for end in ends:
        if f"check:discharge:{end.event_id}" not in done:
            checks.append(_new_check(Check, (end.at + late, "discharge", end)))
    gap = times.vitals_gap
    point = _gap_candidate(session, first, discharge, gap)
    if point is not None:  # gap checks are never done: the cursor moves past decided points
        checks.append(_new_check(Check, (point.at + gap + late, "gap", point)))
    return checks


def _usual_checks(
    session: Session, protocol: MonitoringProtocol, dose: Mark, end: Mark | None
) -> list[Check]:
    """`due_checks` for the usual session (one dose, and a discharge, if any, at or after
    it): the same checks in the same order, but which are done is read from a small integer
    kept on the session (`_done_bits`) rather than by building each check's key and looking
    it up in `fired` (whose strings have gone cold in memory at thousands of sessions):
    the engine alone 0.95x CPU at 4,000 concurrent, 0.93x at 10,000, 0.96x at 100
    (bench.engine_scale --engine-only, paired A/B, 3-4 pairs each). Keeping the listing
    itself instead was slower (1.04-1.10x): its kept objects go cold too."""
    kept = session.done
    if kept is None or kept[0] is not dose or kept[1] is not end:
        kept = (dose, end, _done_bits(session.fired, dose, end))
        keep_done(session, kept)
    bits = kept[2]
    times = protocol.intervals
    late, (at, _) = times.lateness, dose
    checks: list[Check] = []
    if not bits & 1:
        checks.append(_new_check(Check, (at + late, "pre", dose)))
    if not bits & 2:
        checks.append(_new_check(Check, (at + times.post_dose_until + late, "post", dose)))
    if not bits & 4:
        checks.append(_new_check(Check, (at + times.window + late, "window", dose)))
    if not bits & 8:
        checks.append(_new_check(Check, (at + times.not_closed_after + late, "open", dose)))
    if end is not None and not bits & 16:
        checks.append(_new_check(Check, (end.at + late, "discharge", end)))
    gap = times.vitals_gap
    point = _gap_candidate(session, dose, end, gap)
    if point is not None:
        checks.append(_new_check(Check, (point.at + gap + late, "gap", point)))
    return checks


# The checks of the usual session whose done-ness `Session.done` keeps, as bits.
_DOSE_BITS = {"pre": 1, "post": 2, "window": 4, "open": 8}
_DISCHARGE_BIT = 16


def _done_bits(fired: set[str], dose: Mark, end: Mark | None) -> int:
    bits = sum(bit for kind, bit in _DOSE_BITS.items() if check_key(kind, dose) in fired)
    if end is not None and check_key("discharge", end) in fired:
        bits |= _DISCHARGE_BIT
    return bits


def _mark_done(session: Session, check: Check) -> None:
    """Keep `Session.done` in step with `fired` when a check is decided."""
    kept = session.done
    if kept is None:
        return
    dose, end, bits = kept
    if check.subject is dose and check.kind in _DOSE_BITS:
        keep_done(session, (dose, end, bits | _DOSE_BITS[check.kind]))
    elif check.subject is end and check.kind == "discharge":
        keep_done(session, (dose, end, bits | _DISCHARGE_BIT))
    else:
        keep_done(session, None)  # worked out again from `fired` when next needed


def settled(session: Session, protocol: MonitoringProtocol) -> bool:
    """Whether the session has no check left to decide (`due_checks` lists none), asked
    without the side effect of listing: the gap cursor is left where it was."""
    cursor = session.gap_cursor
    try:
        return not due_checks(session, protocol)
    finally:
        session.gap_cursor = cursor


def run_check(session: Session, protocol: MonitoringProtocol, check: Check) -> CheckOutcome:
    """Decide one due check and mark it done."""
    if check.kind == "gap":
        session.gap_cursor = check.subject
    else:
        session.fired.add(check.key)
        _mark_done(session, check)
    return _RUNNERS[check.kind](session, protocol, check.subject)


def _pre_dose(session: Session, protocol: MonitoringProtocol, dose: Mark) -> CheckOutcome:
    missing, elevated = protocol.rule("PRE_DOSE_BP_MISSING"), protocol.rule("PRE_DOSE_BP_ELEVATED")
    lookback = missing.minutes("lookback_minutes")
    readings = session.bp_between(dose.at - lookback, dose.at)
    outcome = CheckOutcome()
    if not readings:
        if missing.enabled:
            outcome.findings.append(
                Finding.deadline(
                    "PRE_DOSE_BP_MISSING",
                    dose,
                    dose.at,
                    f"No blood pressure reading in the {lookback.seconds // 60} minutes before the "
                    f"first dose at {clock_time(dose.at)}. Record one now.",
                )
            )
        return outcome
    systolic, diastolic = elevated["systolic_above"], elevated["diastolic_above"]
    # The latest instant decides; of several readings there, any one above the guide does.
    last = next(
        (r for r in latest_instant(readings) if r.systolic > systolic or r.diastolic > diastolic),
        readings[-1],
    )
    if elevated.enabled and (last.systolic > systolic or last.diastolic > diastolic):
        outcome.findings.append(
            Finding.deadline(
                "PRE_DOSE_BP_ELEVATED",
                dose,
                dose.at,
                f"Pre-dose blood pressure {last.systolic:g}/{last.diastolic:g} mmHg was above "
                f"{elevated['systolic_above']:g}/{elevated['diastolic_above']:g} when the first "
                f"dose was given at {clock_time(dose.at)}. Document the benefit-risk decision.",
                last.event_id,
            )
        )
    return outcome


def _post_dose(session: Session, protocol: MonitoringProtocol, dose: Mark) -> CheckOutcome:
    rule = protocol.rule("POST_DOSE_BP_MISSED")
    start = dose.at + rule.minutes("from_minutes")
    end = dose.at + rule.minutes("until_minutes")
    discharge = session.discharge_after(dose.at)
    if not rule.enabled or (discharge is not None and discharge.at < start):
        return CheckOutcome()
    if discharge is not None:
        end = min(end, discharge.at)
    if session.bp_between(start, end):
        return CheckOutcome()
    message = (
        f"No blood pressure reading between {rule['from_minutes']:g} and "
        f"{rule['until_minutes']:g} minutes after the dose at {clock_time(dose.at)} "
        "(the 40-minute check). Measure it now."
    )
    deadline = dose.at + rule.minutes("until_minutes")
    return CheckOutcome([Finding.deadline("POST_DOSE_BP_MISSED", dose, deadline, message)])


def _window(session: Session, protocol: MonitoringProtocol, dose: Mark) -> CheckOutcome:
    end = dose.at + protocol.observation_window
    if session.ended_before(end, dose):
        return CheckOutcome()
    return CheckOutcome(changes=[(AuditKind.WINDOW_SATISFIED, end, dose.event_id)])


def _not_closed(session: Session, protocol: MonitoringProtocol, dose: Mark) -> CheckOutcome:
    rule = protocol.rule("SESSION_NOT_CLOSED")
    limit = dose.at + rule.minutes("after_minutes")
    discharge = session.discharge_after(dose.at)
    if not rule.enabled or (discharge is not None and discharge.at <= limit):
        return CheckOutcome()
    message = (
        f"No discharge recorded {rule['after_minutes']:g} minutes after the dose at "
        f"{clock_time(dose.at)}. Close the session or record why monitoring continues."
    )
    return CheckOutcome([Finding.deadline("SESSION_NOT_CLOSED", dose, limit, message)])


def _discharge(session: Session, protocol: MonitoringProtocol, discharge: Mark) -> CheckOutcome:
    doses = [d for d in session.doses if d.at <= discharge.at]
    outcome = CheckOutcome()
    if not doses:
        return outcome
    dose, found = doses[-1], outcome.findings
    if (
        protocol.rule("EARLY_DISCHARGE").enabled
        and discharge.at - dose.at < protocol.observation_window
    ):
        minutes = int((discharge.at - dose.at).total_seconds() // 60)
        found.append(
            Finding.deadline(
                "EARLY_DISCHARGE",
                discharge,
                discharge.at,
                f"Discharged {minutes} minutes after the dose at {clock_time(dose.at)}; "
                f"at least {protocol.observation_window.seconds // 60} minutes of observation "
                "are required.",
                dose.event_id,
            )
        )
    found.extend(_final_bp(session, protocol, discharge))
    sedated = protocol.rule("DISCHARGE_SEDATED")
    latest = session.latest_sedation_until(discharge.at)
    if sedated.enabled and latest is not None and latest.value < sedated["moaas_below"]:
        found.append(
            Finding.deadline(
                "DISCHARGE_SEDATED",
                discharge,
                discharge.at,
                f"Discharged while the latest assessment ({clock_time(latest.at)}) had MOAA/S "
                f"{latest.value:g}; the patient must be fully alert.",
                latest.event_id,
            )
        )
    return outcome


def _final_bp(session: Session, protocol: MonitoringProtocol, discharge: Mark) -> list[Finding]:
    missing = protocol.rule("DISCHARGE_WITHOUT_FINAL_BP")
    lookback = missing.minutes("lookback_minutes")
    readings = session.bp_between(discharge.at - lookback, discharge.at)
    if not readings:
        if not missing.enabled:
            return []
        message = (
            f"Discharged at {clock_time(discharge.at)} without a blood pressure reading in the "
            f"{lookback.seconds // 60} minutes before."
        )
        return [Finding.deadline("DISCHARGE_WITHOUT_FINAL_BP", discharge, discharge.at, message)]
    # The latest instant decides; of several readings there, any elevated one does.
    last = next((r for r in latest_instant(readings) if bp_elevated(session, protocol, r)), None)
    if protocol.rule("DISCHARGE_BP_ELEVATED").enabled and last is not None:
        message = (
            f"Discharged at {clock_time(discharge.at)} with blood pressure "
            f"{last.systolic:g}/{last.diastolic:g} mmHg still in the crisis or rise range."
        )
        return [
            Finding.deadline(
                "DISCHARGE_BP_ELEVATED", discharge, discharge.at, message, last.event_id
            )
        ]
    return []


def bp_elevated(session: Session, protocol: MonitoringProtocol, reading: BPReading) -> bool:
    """The reading meets the BP_CRISIS condition, or BP_RISE against the pre-dose baseline."""
    crisis, rise = protocol.rule("BP_CRISIS"), protocol.rule("BP_RISE")
    if (
        reading.systolic >= crisis["systolic_at_least"]
        or reading.diastolic >= crisis["diastolic_at_least"]
    ):
        return True
    baseline, first = session.baseline(), session.first_dose
    if baseline is None or first is None or reading.at <= first.at:
        return False
    return (
        reading.systolic >= baseline.systolic + rise["systolic_rise"]
        or reading.diastolic >= baseline.diastolic + rise["diastolic_rise"]
    )


def gap_holds(session: Session, protocol: MonitoringProtocol, point: Mark) -> bool:
    """Whether VITALS_GAP holds after `point`: its next point (or the discharge) is missing
    or more than the limit away."""
    rule = protocol.rule("VITALS_GAP")
    limit = rule.minutes("max_minutes")
    vitals, discharge = session.vitals, session.discharge
    after = bisect_right(vitals, point)
    if after < _points_end(vitals, discharge):  # the next point, up to the discharge
        gap = vitals[after].at - point.at > limit
    else:
        gap = discharge is None or discharge.at - point.at > limit
    return gap and rule.enabled


def _gap(session: Session, protocol: MonitoringProtocol, point: Mark) -> CheckOutcome:
    rule = protocol.rule("VITALS_GAP")
    limit = rule.minutes("max_minutes")
    if not gap_holds(session, protocol, point):
        return CheckOutcome()
    message = (
        f"No vitals recorded for more than {rule['max_minutes']:g} minutes after "
        f"{clock_time(point.at)}. Check the patient and the devices."
    )
    return CheckOutcome([Finding.deadline("VITALS_GAP", point, point.at + limit, message)])


def _gap_candidate(
    session: Session, first_dose: Mark, discharge: Mark | None, limit: timedelta
) -> Mark | None:
    """The first undecided point that may open a gap: its successor is missing or too far.

    The points are the first dose, then the vitals readings after it up to the discharge;
    the cursor is the last one decided. Points closer than the limit to their successor can
    never open one (a late reading only shortens gaps), so the engine wakes only for the last
    point or a real hole. Those points are decided here and now: the cursor moves past them,
    so the next look starts later. The look jumps a limit ahead at a time, since no hole fits
    in a shorter span; it works on indices into `session.vitals`, copying nothing.
    """
    cursor, vitals = session.gap_cursor, session.vitals
    start = bisect_right(vitals, cursor or first_dose)  # the first undecided reading
    end = _points_end(vitals, discharge)
    if cursor is None:  # the first dose is the first undecided point
        here = bisect_right(vitals, first_dose.at + limit, start, end, key=_AT) - 1
        if here < start:
            return first_dose  # no reading within the limit of the dose
    elif start < end:
        here = start
    else:
        return None
    while True:
        # The last point within the limit of this one: no point before it opens a gap.
        reach = bisect_right(vitals, vitals[here].at + limit, here, end, key=_AT) - 1
        if reach == here:
            break
        here = reach
    if here > start:
        session.gap_cursor = vitals[here - 1]
    elif cursor is None:
        session.gap_cursor = first_dose
    return vitals[here]


def _points_end(vitals: list[Mark], discharge: Mark | None) -> int:
    """Where the readings that count for gaps end: at the discharge, or at the last one."""
    return len(vitals) if discharge is None else bisect_right(vitals, discharge.at, key=_AT)


_AT = attrgetter("at")
_new_check = tuple.__new__

_RUNNERS = {
    "pre": _pre_dose,
    "post": _post_dose,
    "window": _window,
    "open": _not_closed,
    "discharge": _discharge,
    "gap": _gap,
}

__all__ = ["Check", "CheckOutcome", "due_checks", "gap_holds", "run_check", "settled"]
