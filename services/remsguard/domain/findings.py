"""Finding: a rule that holds, before it becomes an alert; says what, when, why, in plain words."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from remsguard.domain.protocol import RuleSettings
from remsguard.domain.registry import Certification, Enrollment, dose_date
from remsguard.domain.session import BPReading, Mark, Measurement


def clock_time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%H:%M UTC")


def _mmhg(reading: BPReading) -> str:
    return f"{reading.systolic:g}/{reading.diastolic:g} mmHg"


@dataclass(frozen=True, slots=True)
class Finding:
    rule: str
    key: str  # what makes this occurrence unique within the session (an event id or deadline)
    at: datetime
    message: str
    evidence: tuple[str, ...]

    @classmethod
    def bp_crisis(cls, r: BPReading, rule: RuleSettings) -> Finding:
        return cls(
            "BP_CRISIS",
            r.event_id,
            r.at,
            f"Blood pressure {_mmhg(r)} at {clock_time(r.at)} is in the hypertensive-crisis range "
            f"(≥{rule['systolic_at_least']:g}/{rule['diastolic_at_least']:g}). "
            "Assess now; chest pain, severe headache or visual change needs emergency care.",
            (r.event_id,),
        )

    @classmethod
    def bp_rise(cls, r: BPReading, baseline: BPReading) -> Finding:
        return cls(
            "BP_RISE",
            r.event_id,
            r.at,
            f"Blood pressure {_mmhg(r)} at {clock_time(r.at)} has risen from the pre-dose "
            f"baseline {_mmhg(baseline)}. Recheck and monitor until it declines.",
            (r.event_id, baseline.event_id),
        )

    @classmethod
    def spo2(cls, rule: str, r: Measurement, below: float) -> Finding:
        level = "critically low" if rule == "SPO2_CRITICAL" else "low"
        return cls(
            rule,
            r.event_id,
            r.at,
            f"Oxygen saturation {r.value:g}% at {clock_time(r.at)} is {level} (below {below:g}%). "
            "Check the patient's breathing and the oximeter.",
            (r.event_id,),
        )

    @classmethod
    def respiratory_rate(cls, r: Measurement, below: float) -> Finding:
        return cls(
            "RESPIRATORY_DEPRESSION",
            r.event_id,
            r.at,
            f"Respiratory rate {r.value:g}/min at {clock_time(r.at)} is below {below:g}/min. "
            "Assess for respiratory depression now.",
            (r.event_id,),
        )

    @classmethod
    def respiratory_observed(cls, assessment: Mark) -> Finding:
        return cls(
            "RESPIRATORY_DEPRESSION",
            assessment.event_id,
            assessment.at,
            f"Respiratory depression observed at {clock_time(assessment.at)}. "
            "Support breathing and escalate.",
            (assessment.event_id,),
        )

    @classmethod
    def dose_after_discharge(cls, dose: Mark, discharge: Mark) -> Finding:
        return cls(
            "DOSE_AFTER_DISCHARGE",
            dose.event_id,
            dose.at,
            f"A dose was given at {clock_time(dose.at)}, after the patient was discharged at "
            f"{clock_time(discharge.at)}: the patient may be unmonitored. Monitoring starts "
            "again from this dose; find the patient and record a discharge when it is over.",
            (dose.event_id, discharge.event_id),
        )

    @classmethod
    def discharge_not_stable(cls, discharge: Mark) -> Finding:
        return cls(
            "DISCHARGE_NOT_STABLE",
            discharge.event_id,
            discharge.at,
            f"Discharged at {clock_time(discharge.at)} while recorded as not clinically stable. "
            "Assess the patient now and document the decision.",
            (discharge.event_id,),
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
        return cls(rule, dose.event_id, dose.at, message, (dose.event_id,))

    @classmethod
    def deep_sedation(cls, r: Measurement) -> Finding:
        return cls(
            "DEEP_SEDATION",
            r.event_id,
            r.at,
            f"Deep sedation: MOAA/S {r.value:g} at {clock_time(r.at)}. "
            "Stay with the patient and monitor airway and breathing.",
            (r.event_id,),
        )

    @classmethod
    def deadline(cls, rule: str, subject: Mark, at: datetime, message: str, *more: str) -> Finding:
        return cls(rule, subject.event_id, at, message, (subject.event_id, *more))
