"""The FHIR specification's vital-signs examples and US Core shaped resources
(`tests/fixtures/fhir/README.md` says where each comes from): as published, the date-only
ones are refused; with a session and a time of day added, each maps to its reading."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from fhir.resources.R4B.operationoutcome import OperationOutcome

from remsguard.fhir.codes import FhirCodes
from remsguard.fhir.context import Reader, Source
from remsguard.fhir.outcome import operation_outcome
from remsguard.fhir.translate import translate

FIXTURES = Path(__file__).parents[1] / "fixtures" / "fhir"
READER = Reader(FhirCodes.load(), default_clinic="clinic-1")
SPEC = {
    "observation-example-bloodpressure.json": {"systolic": 107.0, "diastolic": 60.0},
    "observation-example-bloodpressure-stu3.json": {"systolic": 107.0, "diastolic": 60.0},
    "observation-example-heart-rate.json": {"heart_rate": 44.0},
    "observation-example-respiratory-rate.json": {"respiratory_rate": 26.0},
    "observation-example-satO2.json": {"spo2": 95.0},
}
US_CORE = {
    "us-core-blood-pressure.json": {"systolic": 182.0, "diastolic": 121.0},
    "us-core-heart-rate.json": {"heart_rate": 88.0},
    "us-core-respiratory-rate.json": {"respiratory_rate": 9.0},
    "us-core-pulse-oximetry.json": {"spo2": 89.0},  # its flow and FiO2 components unused
}


def load(*parts: str) -> dict[str, Any]:
    loaded: dict[str, Any] = orjson.loads((FIXTURES.joinpath(*parts)).read_bytes())
    return loaded


def with_session(resource: dict[str, Any], at: str = "2026-03-02T10:40:00+01:00") -> dict[str, Any]:
    """The example as a clinic's EHR would send it to us: in an encounter, with a time."""
    resource = {**resource, "encounter": {"reference": "Encounter/session-1"}}
    if len(resource["effectiveDateTime"]) == 10:
        resource["effectiveDateTime"] = f"{resource['effectiveDateTime']}T{at[11:]}"
    return resource


@pytest.mark.parametrize(("name", "data"), SPEC.items())
def test_spec_examples_map_once_they_have_a_session_and_a_time(
    name: str, data: dict[str, float]
) -> None:
    translated = translate(with_session(load("spec", name)), Source(), READER)
    assert not translated.failed, translated.issues
    (event,) = translated.events
    assert event["type"] == "vitals.recorded" and event["data"] == data
    assert event["session_id"] == "session-1"


@pytest.mark.parametrize("name", [n for n in SPEC if n != "observation-example-satO2.json"])
def test_the_date_only_spec_examples_are_refused_with_an_issue(name: str) -> None:
    resource = {**load("spec", name), "encounter": {"reference": "Encounter/session-1"}}
    translated = translate(resource, Source(), READER)
    assert not translated.events
    (issue,) = translated.issues
    assert (issue.severity, issue.code, issue.expression) == (
        "error", "value", "Observation.effectiveDateTime",
    )  # fmt: skip
    assert "no time of day" in issue.diagnostics
    OperationOutcome.model_validate(operation_outcome(translated.issues))  # valid FHIR


@pytest.mark.parametrize(("name", "data"), US_CORE.items())
def test_us_core_shaped_vital_signs_map(name: str, data: dict[str, float]) -> None:
    translated = translate(load("uscore", name), Source(), READER)
    assert not translated.failed, translated.issues
    (event,) = translated.events
    assert event["data"] == data
    assert (event["session_id"], event["clinic_id"]) == ("uscore-encounter", "clinic-us")
