"""Each FHIR mapping: one resource that maps, and one that must not (pure translation)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from remsguard.contract.decode import decode_event
from remsguard.domain.decisions import Rejection
from remsguard.fhir.codes import CodeError, FhirCodes
from remsguard.fhir.context import Reader, Source
from remsguard.fhir.translate import translate
from remsguard.fhir.translated import Translated

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
VITAL_SIGNS = [
    {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                "code": "vital-signs",
            }
        ]
    }
]
AT = "2026-03-02T10:40:00+00:00"
READER = Reader(FhirCodes.load(), default_clinic="clinic-1")


def quantity(value: float, code: str) -> dict[str, Any]:
    return {"value": value, "unit": code, "system": UCUM, "code": code}


def vital(code: str, value: float, unit: str, **extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": f"obs-{code}",
        "status": "final",
        "category": VITAL_SIGNS,
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": "Patient/p1"},
        "encounter": {"reference": "Encounter/s1"},
        "effectiveDateTime": AT,
        "valueQuantity": quantity(value, unit),
    }
    resource.update(extra)
    return resource


def blood_pressure(
    panel: str = "85354-9", systolic: float = 150, diastolic: float = 95
) -> dict[str, Any]:
    resource = vital(panel, 0, "mm[Hg]")
    del resource["valueQuantity"]
    resource["component"] = [
        {
            "code": {"coding": [{"system": LOINC, "code": code}]},
            "valueQuantity": quantity(v, "mm[Hg]"),
        }
        for code, v in (("8480-6", systolic), ("8462-4", diastolic))
    ]
    return resource


def one_event(translated: Translated) -> dict[str, Any]:
    assert not translated.failed, translated.issues
    (event,) = translated.events
    decoded = decode_event(__import__("orjson").dumps(event))
    assert not isinstance(decoded, Rejection), decoded  # every event meets the contract
    return event


def refused(translated: Translated) -> list[tuple[str, str | None]]:
    assert translated.failed and not translated.events
    return [(i.code, i.expression) for i in translated.issues if i.severity == "error"]


def ignored(translated: Translated) -> str:
    assert not translated.failed and not translated.events
    (issue,) = translated.issues
    assert issue.severity == "information"
    return issue.diagnostics


@pytest.mark.parametrize("panel", ["85354-9", "55284-4"])
def test_a_blood_pressure_panel_maps_to_systolic_and_diastolic(panel: str) -> None:
    event = one_event(translate(blood_pressure(panel), Source(), READER))
    assert event["type"] == "vitals.recorded" and event["data"] == {
        "systolic": 150.0,
        "diastolic": 95.0,
    }
    assert (event["session_id"], event["clinic_id"], event["occurred_at"]) == ("s1", "clinic-1", AT)


def test_a_panel_without_its_diastolic_must_not_map() -> None:
    resource = blood_pressure()
    resource["component"].pop()
    assert refused(translate(resource, Source(), READER)) == [("required", "Observation.component")]


def test_a_systolic_alone_must_not_map() -> None:
    assert refused(translate(vital("8480-6", 150, "mm[Hg]"), Source(), READER)) == [
        ("not-supported", "Observation.code")
    ]


@pytest.mark.parametrize(
    ("code", "value", "unit", "field"),
    [
        ("59408-5", 91, "%", "spo2"),
        ("2708-6", 91, "%", "spo2"),
        ("8867-4", 72, "/min", "heart_rate"),
        ("8867-4", 72, "{beats}/min", "heart_rate"),
        ("9279-1", 14, "/min", "respiratory_rate"),
    ],
)
def test_each_vital_sign_code_maps(code: str, value: float, unit: str, field: str) -> None:
    event = one_event(translate(vital(code, value, unit), Source(), READER))
    assert event["data"] == {field: float(value)}


def test_kpa_is_converted_to_mmhg() -> None:
    resource = blood_pressure(systolic=20, diastolic=12)
    for component in resource["component"]:
        component["valueQuantity"]["code"] = "kPa"
    assert one_event(translate(resource, Source(), READER))["data"] == {
        "systolic": 150.012, "diastolic": 90.007,
    }  # fmt: skip


def test_a_unit_that_is_not_the_fields_must_not_map() -> None:
    issues = refused(translate(vital("59408-5", 0.91, "1"), Source(), READER))
    assert issues == [("value", "Observation.valueQuantity.code")]


def test_a_vital_sign_code_outside_the_vital_signs_category_must_not_map() -> None:
    resource = vital("2708-6", 91, "%")  # arterial blood gas in a laboratory panel
    resource["category"] = [{"coding": [{"code": "laboratory"}]}]
    assert "vital-signs" in ignored(translate(resource, Source(), READER))


def test_a_code_we_do_not_monitor_must_not_map() -> None:
    assert "not monitored" in ignored(translate(vital("8310-5", 37, "Cel"), Source(), READER))


@pytest.mark.parametrize("status", ["entered-in-error", "cancelled", "registered"])
def test_observations_that_are_not_readings_must_not_map(status: str) -> None:
    resource = vital("59408-5", 85, "%", status=status)
    assert status in ignored(translate(resource, Source(), READER))


@pytest.mark.parametrize("status", ["amended", "corrected"])
def test_amended_and_corrected_map_with_a_warning(status: str) -> None:
    translated = translate(vital("59408-5", 85, "%", status=status), Source(), READER)
    assert one_event(translated)["data"] == {"spo2": 85.0}
    assert translated.amendment
    assert [(i.severity, i.expression) for i in translated.issues] == [
        ("warning", "Observation.status")
    ]


@pytest.mark.parametrize(
    "effective",
    [
        {"effectiveDateTime": "2026-03-02"},
        {"effectiveDateTime": "2026-03"},
        {"effectivePeriod": {"start": "2026-03-02"}},
    ],
)
def test_a_date_without_a_time_of_day_is_refused(effective: dict[str, Any]) -> None:
    resource = vital("8867-4", 70, "/min")
    del resource["effectiveDateTime"]
    resource.update(effective)
    ((code, expression),) = refused(translate(resource, Source(), READER))
    assert code == "value" and expression is not None and "effective" in expression


def test_an_observation_without_its_encounter_must_not_map() -> None:
    resource = vital("8867-4", 70, "/min")
    del resource["encounter"]
    assert refused(translate(resource, Source(), READER)) == [("required", "Observation.encounter")]


def test_the_fhir_model_refuses_unknown_elements_with_their_path() -> None:
    resource = vital("8867-4", 70, "/min", valueQuantity={"value": 70, "colour": "red"})
    translated = translate(resource, Source("urn:uuid:x", "Bundle.entry[2].resource"), READER)
    assert translated.malformed
    assert refused(translated) == [("structure", "Bundle.entry[2].resource.valueQuantity.colour")]


def assessment(code: str, **value: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "urn:remsguard:assessment", "code": code}]},
        "encounter": {"reference": "Encounter/s1"},
        "effectiveDateTime": AT,
        **value,
    }


def test_moaas_and_dissociation_map_to_assessments() -> None:
    moaas = one_event(translate(assessment("moaas", valueInteger=3), Source(), READER))
    assert moaas["type"] == "assessment.recorded" and moaas["data"] == {"sedation_moaas": 3}
    yes = {"coding": [{"system": "http://snomed.info/sct", "code": "373066001"}]}
    dissociated = one_event(
        translate(assessment("dissociation", valueCodeableConcept=yes), Source(), READER)
    )
    assert dissociated["data"] == {"dissociation": True}


def test_a_moaas_that_is_not_an_integer_must_not_map() -> None:
    issues = refused(translate(assessment("moaas", valueString="drowsy"), Source(), READER))
    assert issues == [("required", "Observation.valueInteger")]


def test_a_clinic_file_adds_local_assessment_codes(tmp_path: Path) -> None:
    local = tmp_path / "local.toml"
    local.write_text('[assessments]\n"http://clinic.example/codes|SED" = "sedation_moaas"\n')
    reader = Reader(FhirCodes.load([local]), default_clinic="clinic-1")
    resource = assessment("SED", valueInteger=2)
    resource["code"]["coding"][0]["system"] = "http://clinic.example/codes"
    assert one_event(translate(resource, Source(), reader))["data"] == {"sedation_moaas": 2}
    bad = tmp_path / "bad.toml"
    bad.write_text('[assessments]\n"x|y" = "mood"\n')
    with pytest.raises(CodeError, match=r"assessments\.x\|y"):
        FhirCodes.load([bad])


def administration(medication: dict[str, Any], **extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "MedicationAdministration",
        "id": "ma-1",
        "status": "completed",
        **medication,
        "subject": {"reference": "Patient/p1"},
        "context": {"reference": "Encounter/s1"},
        "effectiveDateTime": AT,
        "dosage": {"dose": quantity(56, "mg")},
    }
    resource.update(extra)
    return resource


RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


def test_esketamine_by_rxnorm_maps_to_a_nasal_dose() -> None:
    drug = {"medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "2201625"}]}}
    event = one_event(translate(administration(drug), Source(), READER))
    assert event["type"] == "dose.administered"
    assert event["data"] == {"drug": "esketamine", "route": "intranasal", "dose_mg": 56.0}


def test_ketamine_by_text_with_an_iv_route_and_a_contained_lot() -> None:
    resource = administration(
        {"medicationReference": {"reference": "#med"}},
        contained=[{"resourceType": "Medication", "id": "med", "code": {"text": "Ketamine HCl"},
                    "batch": {"lotNumber": "LOT-4"}}],
        dosage={"route": {"coding": [{"system": "http://snomed.info/sct", "code": "47625008"}]},
                "dose": quantity(35000, "ug")},
    )  # fmt: skip
    assert one_event(translate(resource, Source(), READER))["data"] == {
        "drug": "ketamine", "route": "iv", "dose_mg": 35.0, "lot_number": "LOT-4",
    }  # fmt: skip


def test_ketamine_without_a_route_must_not_map() -> None:
    drug = {"medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "6130"}]}}
    assert refused(translate(administration(drug), Source(), READER)) == [
        ("required", "MedicationAdministration.dosage.route")
    ]


def test_another_drug_must_not_map() -> None:
    drug = {
        "medicationCodeableConcept": {
            "coding": [{"system": RXNORM, "code": "2598"}],
            "text": "clonazepam",
        }
    }
    assert "not esketamine" in ignored(translate(administration(drug), Source(), READER))


def test_a_dose_not_given_must_not_map() -> None:
    drug = {"medicationCodeableConcept": {"text": "esketamine"}}
    resource = administration(drug, status="not-done")
    assert "not-done" in ignored(translate(resource, Source(), READER))


def encounter(status: str, **extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Encounter",
        "id": "s1",
        "status": status,
        "class": {"code": "AMB"},
        "subject": {"reference": "Patient/p1"},
        "serviceProvider": {"reference": "Organization/clinic-9"},
        "period": {"start": "2026-03-02T10:00:00Z"},
    }
    resource.update(extra)
    return resource


def test_an_encounter_in_progress_opens_the_session() -> None:
    event = one_event(translate(encounter("in-progress"), Source(), READER))
    assert event["type"] == "session.opened"
    assert (event["session_id"], event["clinic_id"]) == ("s1", "clinic-9")
    assert event["data"] == {"patient_ref": "p1"}


def test_a_finished_encounter_opens_and_discharges() -> None:
    finished = encounter(
        "finished",
        period={"start": "2026-03-02T10:00:00Z", "end": "2026-03-02T12:10:00Z"},
        participant=[{"individual": {"reference": "Practitioner/nurse-1"}}],
        hospitalization={"dischargeDisposition": {"coding": [{"code": "hosp"}]}},
    )
    translated = translate(finished, Source(), READER)
    assert [e["type"] for e in translated.events] == ["session.opened", "session.discharged"]
    assert translated.events[1]["data"] == {"staff_id": "nurse-1", "clinically_stable": False}
    # the opening is the same event as the in-progress version's: a duplicate, not a second
    opened = translate(encounter("in-progress"), Source(), READER).events[0]
    assert translated.events[0] == opened


def test_a_finished_encounter_without_its_discharging_staff_must_not_map() -> None:
    finished = encounter("finished", period={"start": AT, "end": "2026-03-02T12:10:00Z"})
    assert refused(translate(finished, Source(), READER)) == [("required", "Encounter.participant")]


@pytest.mark.parametrize("status", ["planned", "cancelled", "entered-in-error"])
def test_encounters_not_under_way_must_not_map(status: str) -> None:
    assert status in ignored(translate(encounter(status), Source(), READER))


def test_the_organization_map_names_the_clinic_and_refuses_others() -> None:
    reader = Reader(READER.codes, {"Organization/clinic-9": "CLINIC-NINE"})
    assert (
        one_event(translate(encounter("in-progress"), Source(), reader))["clinic_id"]
        == "CLINIC-NINE"
    )
    other = encounter("in-progress", serviceProvider={"reference": "Organization/elsewhere"})
    assert refused(translate(other, Source(), reader)) == [
        ("business-rule", "Encounter.serviceProvider")
    ]


def test_without_an_organization_or_a_one_clinic_token_there_is_no_clinic() -> None:
    resource = vital("8867-4", 70, "/min")
    assert refused(translate(resource, Source(), Reader(READER.codes))) == [
        ("required", "Observation.performer")
    ]


def test_event_ids_follow_the_resource_id_or_its_content() -> None:
    first = one_event(translate(vital("8867-4", 70, "/min"), Source(), READER))
    again = one_event(translate(copy.deepcopy(vital("8867-4", 70, "/min")), Source(), READER))
    assert first["event_id"] == again["event_id"]
    anonymous = vital("8867-4", 70, "/min")
    del anonymous["id"]
    a = one_event(translate(anonymous, Source(), READER))["event_id"]
    anonymous["valueQuantity"]["value"] = 71
    assert one_event(translate(anonymous, Source(), READER))["event_id"] != a
    other_clinic = Reader(READER.codes, default_clinic="clinic-2")
    assert (
        one_event(translate(vital("8867-4", 70, "/min"), Source(), other_clinic))["event_id"]
        != first["event_id"]
    )


@pytest.mark.parametrize(
    "hostile",
    [
        {"resourceType": "Observation", "status": ["final"]},
        {"resourceType": "Observation", "valueQuantity": {"value": "1e999"}},
        {"resourceType": "Encounter", "period": {"start": "9999-99-99T99:99:99Z"}},
        {"resourceType": "MedicationAdministration", "dosage": []},
        {"resourceType": "Patient"},
        {"resourceType": 7},
        {},
    ],
)
def test_hostile_resources_are_issues_never_exceptions(hostile: dict[str, Any]) -> None:
    translated = translate(hostile, Source(), READER)
    assert translated.failed and not translated.events
