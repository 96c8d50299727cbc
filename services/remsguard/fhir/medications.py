"""`MedicationAdministration` -> `dose.administered`. Pure.

Esketamine or ketamine by code (RxNorm, NDC: `codes.toml`) or by the words of its text, from
`medicationCodeableConcept` or the referenced `Medication` (contained, or an entry of the same
Bundle, which may also give `batch.lotNumber`); other drugs are accepted and ignored. `status`
completed (or stopped: part of the dose was given) is a dose; the others are not. Time
`effectiveDateTime` or `effectivePeriod.start`; amount `dosage.dose` in mg (UCUM mg, ug, g);
route `dosage.route`, or the drug's default (esketamine: intranasal). The session is `context`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from fhir.resources.R4B.medicationadministration import MedicationAdministration

from remsguard.contract.events import wire_event
from remsguard.fhir.codes import FhirCodes, Token
from remsguard.fhir.context import (
    BundleIndex,
    Reader,
    Refused,
    Source,
    clinic_of,
    concept_text,
    event_id,
    identity,
    instant,
    quantity,
    reference_id,
    status_of,
    tokens,
)
from remsguard.fhir.outcome import error, information
from remsguard.fhir.translated import Translated

__all__ = ["medication_administration"]

_GIVEN: Final = frozenset({"completed", "stopped"})
_KNOWN_STATUS: Final = _GIVEN | {
    "in-progress",
    "not-done",
    "on-hold",
    "entered-in-error",
    "unknown",
}
_WHERE: Final = "MedicationAdministration"


def medication_administration(
    model: MedicationAdministration,
    raw: Mapping[str, Any],
    source: Source,
    reader: Reader,
    bundle: BundleIndex,
) -> Translated:
    out = Translated(_WHERE)
    status = status_of(model.status, _KNOWN_STATUS, _WHERE)
    if status not in _GIVEN:
        out.issues.append(
            information(f"status {status}: not a dose given, nothing recorded", f"{_WHERE}.status")
        )
        return out
    codes = reader.codes
    found, text, lot = _medication(model, raw, bundle)
    drug = codes.drug(found, text)
    if drug is None:
        out.issues.append(
            information("not esketamine or ketamine: nothing recorded", f"{_WHERE}.medication[x]")
        )
        return out
    at = _effective(model)
    dosage = model.dosage
    if dosage is None or dosage.dose is None:
        raise Refused(
            error(
                "required",
                "the amount given (dosage.dose, in mg) is required",
                f"{_WHERE}.dosage.dose",
            )
        )
    amount = quantity(dosage.dose, codes.field_units["dose_mg"], codes, f"{_WHERE}.dosage.dose")
    route = _route(dosage.route, drug, codes)
    data: dict[str, object] = {"drug": drug, "route": route, "dose_mg": amount}
    if lot:
        data["lot_number"] = lot
    reference = model.context.reference if model.context is not None else None
    session = reference_id(reference, "Encounter", bundle) if reference else None
    if session is None:
        raise Refused(
            error("required", "context must reference the session's Encounter", f"{_WHERE}.context")
        )
    organizations = [
        (p.actor.reference or "", f"{_WHERE}.performer[{n}].actor")
        for n, p in enumerate(model.performer or [])
    ]
    clinic = clinic_of(organizations, session, reader, bundle, f"{_WHERE}.performer")
    who = identity(_WHERE, raw)
    identifier = event_id(clinic, _WHERE, who, "dose")
    out.events.append(wire_event("dose.administered", identifier, session, clinic, at, data))
    if status == "stopped":
        out.issues.append(
            information("status stopped: recorded as the amount given", f"{_WHERE}.status")
        )
    return out


def _medication(
    model: MedicationAdministration, raw: Mapping[str, Any], bundle: BundleIndex
) -> tuple[list[Token], str, str | None]:
    """The drug's codings, its words, and a lot number, wherever the resource keeps them."""
    if model.medicationCodeableConcept is not None:
        concept = model.medicationCodeableConcept
        return tokens(concept), concept_text(concept), None
    reference = model.medicationReference
    if reference is None:
        raise Refused(error("required", "medication[x] is required", f"{_WHERE}.medication[x]"))
    target = _referenced_medication(reference.reference or "", raw, bundle)
    words = reference.display or ""
    if target is None:
        return [], words, None
    code = _object(target.get("code"))
    listed = code.get("coding")
    codings = [c for c in listed if isinstance(c, dict)] if isinstance(listed, list) else []
    found = [Token(str(c.get("system") or ""), str(c.get("code") or "")) for c in codings]
    texts = [str(code.get("text") or ""), words]
    texts += [str(c.get("display") or "") for c in codings]
    batch = target.get("batch")
    lot = batch.get("lotNumber") if isinstance(batch, dict) else None
    return found, " ".join(texts), lot if isinstance(lot, str) and lot else None


def _object(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _referenced_medication(
    reference: str, raw: Mapping[str, Any], bundle: BundleIndex
) -> dict[str, Any] | None:
    if reference.startswith("#"):
        for contained in raw.get("contained") or []:
            if isinstance(contained, dict) and contained.get("id") == reference[1:]:
                return contained
        return None
    target = bundle.resources.get(reference)
    if target is None:  # "Medication/x" of another entry whose fullUrl ends so
        for full_url, resource in bundle.resources.items():
            if full_url.endswith("/" + reference) or full_url == reference:
                target = resource
                break
    if target is None or target.get("resourceType") != "Medication":
        return None
    return target


def _effective(model: MedicationAdministration) -> datetime:
    if model.effectiveDateTime is not None:
        return instant(model.effectiveDateTime, f"{_WHERE}.effectiveDateTime")
    if model.effectivePeriod is not None:
        return instant(model.effectivePeriod.start, f"{_WHERE}.effectivePeriod.start")
    raise Refused(error("required", "effective[x] is required", f"{_WHERE}.effective[x]"))


def _route(concept: Any, drug: str, codes: FhirCodes) -> str:
    route = codes.route(tokens(concept), (concept.text or "") if concept is not None else "")
    if route is None and concept is None:
        route = codes.default_routes.get(drug)
    if route is None:
        shown = concept_text(concept) or "(none)"
        raise Refused(
            error(
                "value" if concept is not None else "required",
                f"route {shown!r} is not known",
                f"{_WHERE}.dosage.route",
            )
        )
    return route
