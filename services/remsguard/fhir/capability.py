"""`GET /fhir/r4/metadata`: the CapabilityStatement, saying exactly what is accepted."""

from __future__ import annotations

from typing import Any

from remsguard import __version__

__all__ = ["capability_statement"]

_PROFILES = {
    "Observation": [
        "http://hl7.org/fhir/StructureDefinition/vitalsigns",
        "http://hl7.org/fhir/StructureDefinition/bp",
        "http://hl7.org/fhir/StructureDefinition/heartrate",
        "http://hl7.org/fhir/StructureDefinition/resprate",
        "http://hl7.org/fhir/StructureDefinition/oxygensat",
    ],
}
_DOCS = {
    "Encounter": (
        "The monitoring session. status in-progress with period.start opens it; finished with "
        "period.end also discharges it (staff: the participant typed DIS, else the first; "
        "hospitalization.dischargeDisposition says whether clinically stable). The id is the "
        "session id, subject the pseudonymous patient, serviceProvider the clinic. PUT "
        "Encounter/{id} for status changes."
    ),
    "MedicationAdministration": (
        "status completed (or stopped) with esketamine or ketamine (RxNorm, NDC or text) -> a "
        "dose: effective[x] with a time of day, dosage.dose in mg, dosage.route, context the "
        "session's Encounter. Other drugs are accepted and ignored."
    ),
    "Observation": (
        "Vital signs (category vital-signs): LOINC 85354-9 or 55284-4 panels with 8480-6 and "
        "8462-4 components, 59408-5 / 2708-6 SpO2, 8867-4 heart rate, 9279-1 respiratory rate, "
        "UCUM units; sedation (MOAA/S) and dissociation by the configured codes. status final, "
        "preliminary, amended or corrected (amended/corrected replace nothing already judged); "
        "effective[x] must have a time of day; encounter names the session."
    ),
}


def capability_statement(max_entries: int, max_body_bytes: int) -> dict[str, Any]:
    resources = []
    for kind in ("Encounter", "MedicationAdministration", "Observation"):
        interactions = [{"code": "create"}]
        if kind == "Encounter":
            interactions.append({"code": "update"})
        resource: dict[str, Any] = {
            "type": kind,
            "interaction": interactions,
            "documentation": _DOCS[kind],
            "versioning": "no-version",
            "readHistory": False,
            "updateCreate": kind == "Encounter",
        }
        if kind in _PROFILES:
            resource["supportedProfile"] = _PROFILES[kind]
        resources.append(resource)
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-01-01",
        "kind": "instance",
        "software": {"name": "remsguard", "version": __version__},
        "implementation": {
            "description": "REMS monitoring compliance: FHIR R4 ingest of sessions, doses and "
            "vital signs (write only; nothing is read back over FHIR)"
        },
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [
            {
                "mode": "server",
                "documentation": (
                    f"Bundles of type transaction or batch (POST [base] or [base]/Bundle), at "
                    f"most {max_entries} entries and {max_body_bytes} bytes. Idempotent: a "
                    "resource re-sent (same id, or same content) changes nothing."
                ),
                "security": {
                    "description": "Authorization: Bearer <device or admin token>, bound to "
                    "clinics; this statement itself is open."
                },
                "resource": resources,
                "interaction": [{"code": "transaction"}, {"code": "batch"}],
            }
        ],
    }
