"""`Observation` -> `vitals.recorded` or `assessment.recorded`. Pure.

- Vital signs: an Observation with a vital-signs category and a code of the table (the LOINC
  blood-pressure panels 85354-9 and 55284-4 with systolic and diastolic components; SpO2
  59408-5 / 2708-6, heart rate 8867-4, respiratory rate 9279-1), values in UCUM units.
- Assessments: codes of `assessments.toml` (MOAA/S, dissociation, respiratory depression).
- `status` final, preliminary, amended or corrected is a reading (amended/corrected with a
  warning: it replaces nothing already judged); registered, cancelled, entered-in-error and
  unknown are not.
- The session is `Observation.encounter`; the time `effectiveDateTime`, `effectivePeriod.start`
  or `effectiveInstant`, with a time of day.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

from fhir.resources.R4B.observation import Observation

from remsguard.contract.events import wire_event
from remsguard.fhir.codes import FhirCodes
from remsguard.fhir.context import (
    BundleIndex,
    Reader,
    Refused,
    Source,
    clinic_of,
    event_id,
    identity,
    instant,
    quantity,
    reference_id,
    status_of,
    tokens,
)
from remsguard.fhir.outcome import error, information, warning
from remsguard.fhir.translated import Translated

__all__ = ["observation"]

READINGS: Final = frozenset({"final", "preliminary", "amended", "corrected"})
AMENDMENTS: Final = frozenset({"amended", "corrected"})
_KNOWN_STATUS: Final = READINGS | {"registered", "cancelled", "entered-in-error", "unknown"}
_BP_PARTS: Final = ("systolic", "diastolic")


def observation(
    model: Observation, raw: Mapping[str, Any], source: Source, reader: Reader, bundle: BundleIndex
) -> Translated:
    out = Translated("Observation")
    status = status_of(model.status, _KNOWN_STATUS, "Observation")
    if status not in READINGS:
        out.issues.append(
            information(f"status {status}: not a reading, nothing recorded", "Observation.status")
        )
        return out
    codes = reader.codes
    code_tokens = tokens(model.code)
    vital = codes.lookup(codes.observations, code_tokens)
    assessment = None if vital is not None else codes.lookup(codes.assessments, code_tokens)
    if vital is None and assessment is None:
        out.issues.append(
            information("code not monitored by remsguard: nothing recorded", "Observation.code")
        )
        return out
    if vital is not None and not _is_vital_sign(model, codes):
        out.issues.append(
            information("not in the vital-signs category: nothing recorded", "Observation.category")
        )
        return out
    if not _has_value(model) and not model.component and model.dataAbsentReason is not None:
        out.issues.append(
            information(
                "no value (dataAbsentReason): nothing recorded", "Observation.dataAbsentReason"
            )
        )
        return out
    data: dict[str, object]
    if vital is not None:
        data = _vitals(model, vital, codes)
        kind = "vitals.recorded"
    else:
        assert assessment is not None
        data = {assessment: _assessment(model, assessment, codes)}
        kind = "assessment.recorded"
    at = _effective(model)
    session = _session(model, bundle)
    organizations = [
        (p.reference or "", f"Observation.performer[{n}]")
        for n, p in enumerate(model.performer or [])
    ]
    clinic = clinic_of(organizations, session, reader, bundle, "Observation.performer")
    device = model.device.reference if model.device is not None else None
    who = identity("Observation", raw)
    out.events.append(
        wire_event(
            kind, event_id(clinic, "Observation", who, "reading"), session, clinic, at, data, device
        )
    )
    if status in AMENDMENTS:
        out.amendment = True
        out.issues.append(
            warning(
                "business-rule",
                f"status {status}: a reading already judged under this id is not replaced; "
                "it stays as first received",
                "Observation.status",
            )
        )
    return out


def _has_value(model: Observation) -> bool:
    values = (
        model.valueQuantity,
        model.valueInteger,
        model.valueBoolean,
        model.valueCodeableConcept,
    )
    return any(value is not None for value in values)


def _is_vital_sign(model: Observation, codes: FhirCodes) -> bool:
    return any(
        codes.lookup(codes.vital_sign_categories, tokens(category))
        for category in model.category or []
    )


def _vitals(model: Observation, vital: str, codes: FhirCodes) -> dict[str, object]:
    units = codes.field_units
    if vital in _BP_PARTS:
        raise Refused(
            error(
                "not-supported",
                f"a {vital} pressure alone is not a reading: send the blood-pressure panel "
                "(LOINC 85354-9) with systolic and diastolic components",
                "Observation.code",
            )
        )
    if vital != "blood_pressure":
        value = model.valueQuantity
        if value is None:
            raise Refused(
                error(
                    "required",
                    "valueQuantity is required for a vital sign",
                    "Observation.valueQuantity",
                )
            )
        return {vital: quantity(value, units[vital], codes, "Observation.valueQuantity")}
    found: dict[str, float] = {}
    for n, component in enumerate(model.component or []):
        part = codes.lookup(codes.observations, tokens(component.code))
        if part not in _BP_PARTS or part in found or component.valueQuantity is None:
            continue
        where = f"Observation.component[{n}].valueQuantity"
        found[part] = quantity(component.valueQuantity, units[part], codes, where)
    if set(found) != set(_BP_PARTS):
        missing = " and ".join(p for p in _BP_PARTS if p not in found)
        raise Refused(
            error(
                "required",
                f"blood-pressure panel without a {missing} value",
                "Observation.component",
            )
        )
    return dict(found)


def _assessment(model: Observation, field: str, codes: FhirCodes) -> int | bool:
    if field == "sedation_moaas":
        number = model.valueInteger
        if number is None and model.valueQuantity is not None:
            value = model.valueQuantity.value
            if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral():
                number = int(value)
        if number is None or isinstance(number, bool):
            raise Refused(
                error(
                    "required",
                    "a MOAA/S score is an integer (valueInteger)",
                    "Observation.valueInteger",
                )
            )
        return int(number)
    if model.valueBoolean is not None:
        return bool(model.valueBoolean)
    answer = codes.lookup(codes.answers, tokens(model.valueCodeableConcept))
    if answer is None:
        raise Refused(
            error(
                "required",
                f"{field} is yes or no (valueBoolean, or a yes/no valueCodeableConcept)",
                "Observation.value[x]",
            )
        )
    return answer


def _effective(model: Observation) -> Any:
    if model.effectiveDateTime is not None:
        return instant(model.effectiveDateTime, "Observation.effectiveDateTime")
    if model.effectivePeriod is not None:
        return instant(model.effectivePeriod.start, "Observation.effectivePeriod.start")
    if model.effectiveInstant is not None:
        return instant(model.effectiveInstant, "Observation.effectiveInstant")
    raise Refused(
        error("required", "no effective[x]: when was it measured?", "Observation.effective[x]")
    )


def _session(model: Observation, bundle: BundleIndex) -> str:
    reference = model.encounter.reference if model.encounter is not None else None
    session = reference_id(reference, "Encounter", bundle) if reference else None
    if session is None:
        raise Refused(
            error(
                "required",
                "Observation.encounter must reference the session's Encounter",
                "Observation.encounter",
            )
        )
    return session
