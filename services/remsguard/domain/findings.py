"""Finding: a rule that holds, before it becomes an alert; says what, when, why, in plain words."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from remsguard.domain.protocol import RuleSettings
from remsguard.domain.registry import Certification, Enrollment, dose_date
from remsguard.domain.session import BPReading, Mark, Measurement


def clock_time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%H:%M UTC")


def _mmhg(reading: BPReading) -> str:
    return f"{reading.systolic:g}/{reading.diastolic:g} mmHg"


class _Recorded(Protocol):
    """What a finding is about: one recorded event (a reading, a measurement, a mark)."""

    @property
    def at(self) -> datetime: ...

    @property
    def event_id(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Finding:
    rule: str
    key: str  # what makes this occurrence unique within the session (an event id or deadline)
    at: datetime
    message: str
    evidence: tuple[str, ...]

    @classmethod
    def bp_crisis(cls, r: BPReading, rule: RuleSettings) -> Finding:
        return cls._about(
            "BP_CRISIS",
            r,
            f"Blood pressure {_mmhg(r)} at {clock_time(r.at)} is in the hypertensive-crisis range "
            f"(≥{rule['systolic_at_least']:g}/{rule['diastolic_at_least']:g}). "
            "Assess now; chest pain, severe headache or visual change needs emergency care.",
        )

    @classmethod
    def bp_rise(cls, r: BPReading, baseline: BPReading) -> Finding:
        return cls._about(
            "BP_RISE",
            r,
            f"Blood pressure {_mmhg(r)} at {clock_time(r.at)} has risen from the pre-dose "
            f"baseline {_mmhg(baseline)}. Recheck and monitor until it declines.",
            baseline.event_id,
        )

    @classmethod
    def spo2(cls, rule: str, r: Measurement, below: float) -> Finding:
        level = "critically low" if rule == "SPO2_CRITICAL" else "low"
        return cls._about(
            rule,
            r,
            f"Oxygen saturation {r.value:g}% at {clock_time(r.at)} is {level} (below {below:g}%). "
            "Check the patient's breathing and the oximeter.",
        )

    @classmethod
    def respiratory_rate(cls, r: Measurement, below: float) -> Finding:
        return cls._about(
            "RESPIRATORY_DEPRESSION",
            r,
            f"Respiratory rate {r.value:g}/min at {clock_time(r.at)} is below {below:g}/min. "
            "Assess for respiratory depression now.",
        )

    @classmethod
    def respiratory_observed(cls, assessment: Mark) -> Finding:
        return cls._about(
            "RESPIRATORY_DEPRESSION",
            assessment,
            f"Respiratory depression observed at {clock_time(assessment.at)}. "
            "Support breathing and escalate.",
        )

    @classmethod
    def dose_after_discharge(cls, dose: Mark, discharge: Mark) -> Finding:
        return cls._about(
            "DOSE_AFTER_DISCHARGE",
            dose,
            f"A dose was given at {clock_time(dose.at)}, after the patient was discharged at "
            f"{clock_time(discharge.at)}: the patient may be unmonitored. Monitoring starts "
            "again from this dose; find the patient and record a discharge when it is over.",
            discharge.event_id,
        )

    @classmethod
    def discharge_not_stable(cls, discharge: Mark) -> Finding:
        return cls._about(
            "DISCHARGE_NOT_STABLE",
            discharge,
            f"Discharged at {clock_time(discharge.at)} while recorded as not clinically stable. "
            "Assess the patient now and document the decision.",
        )

    @classmethod
    def setting_not_certified(
        cls, dose: Mark, clinic_id: str, certification: Certification | None
    ) -> Finding:
        day = dose_date(dose.at)
        if certification is None:
            why = f"clinic {clinic_id} has no SPRAVATO REMS certification on record"
        elif day < certification.valid_from:
            why = (
                f"certification {certification.certification_id} of clinic {clinic_id} is "
                f"valid only from {certification.valid_from}"
            )
        else:
            why = (
                f"certification {certification.certification_id} of clinic {clinic_id} "
                f"lapsed on {certification.valid_to}"
            )
        advice = "SPRAVATO may only be given in a REMS-certified setting: stop dosing."
        return cls._gate("SETTING_NOT_CERTIFIED", dose, why, advice)

    @classmethod
    def patient_not_enrolled(
        cls, dose: Mark, patient_ref: str, enrollment: Enrollment | None
    ) -> Finding:
        if enrollment is None:
            why = f"patient {patient_ref} is not enrolled in the SPRAVATO REMS at this clinic"
        else:
            why = f"patient {patient_ref} was enrolled only on {enrollment.enrolled_on}"
        advice = "The patient must be enrolled in the REMS before treatment."
        return cls._gate("PATIENT_NOT_ENROLLED", dose, why, advice)

    @classmethod
    def _gate(cls, rule: str, dose: Mark, why: str, advice: str) -> Finding:
        """A REMS gate finding about one dose: what was missing on its date, what to do."""
        day = dose_date(dose.at)
        message = f"A dose was given at {clock_time(dose.at)} on {day}, but {why}. {advice}"
        return cls._about(rule, dose, message)

    @classmethod
    def deep_sedation(cls, r: Measurement) -> Finding:
        return cls._about(
            "DEEP_SEDATION",
            r,
            f"Deep sedation: MOAA/S {r.value:g} at {clock_time(r.at)}. "
            "Stay with the patient and monitor airway and breathing.",
        )

    @classmethod
    def deadline(cls, rule: str, subject: Mark, at: datetime, message: str, *more: str) -> Finding:
        """A deadline that passed: keyed by the event that set it, at the deadline's time."""
        return cls(rule, subject.event_id, at, message, (subject.event_id, *more))

    @classmethod
    def _about(cls, rule: str, subject: _Recorded, message: str, *more: str) -> Finding:
        """A finding about one recorded event: keyed by it, at its time, it first in evidence."""
        return cls(rule, subject.event_id, subject.at, message, (subject.event_id, *more))
