"""FHIR R4 into a real `remsguard up`, posted with httpx as `application/fhir+json` and read
back with the fhir.resources models: a whole session as a transaction Bundle raises what
`remsguard replay` of the same session as JSON raises; re-sending changes nothing; errors
are OperationOutcomes naming the element; bounded work; never a 5xx."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.operationoutcome import OperationOutcome

from .embedded_support import Up, ndjson, remsguard, start_up

FIXTURES = Path(__file__).parents[1] / "fixtures" / "fhir"
FHIR_JSON = "application/fhir+json"
SESSION = "0b1c4a8e-1111-4c1e-9a57-5e551011f001"  # the Encounter's urn:uuid in the Bundle
CLINIC = "CLINIC-F"
# The session of `session-bundle.json`, written by hand as JSON events: what replay is given.
JSON_EVENTS = [
    ("session.opened", -15, {"patient_ref": "PAT-F"}),
    ("vitals.recorded", -10, {"systolic": 122, "diastolic": 78}),
    ("dose.administered", 0, {"drug": "esketamine", "route": "intranasal", "dose_mg": 56}),
    ("vitals.recorded", 4, {"spo2": 88}),
    ("vitals.recorded", 8, {"systolic": 188, "diastolic": 124}),
    ("assessment.recorded", 10, {"sedation_moaas": 4}),
    ("vitals.recorded", 11, {"spo2": 97}),
    ("session.discharged", 12, {"staff_id": "nurse-f", "clinically_stable": True}),
]


def dose_time() -> dt.datetime:
    """Dosed 13 minutes ago: every time in the Bundle is in the past, no deadline falls due
    while the test runs, so live and replay decide the same."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=13)


def iso(dose: dt.datetime, minutes: float) -> str:
    return (dose + dt.timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


def session_bundle(dose: dt.datetime) -> dict[str, Any]:
    """`session-bundle.json` with its `{T+m}` placeholders filled, through the FHIR model."""
    text = (FIXTURES / "session-bundle.json").read_text()
    for minutes in range(-30, 31):
        text = text.replace(f'"{{T{minutes:+d}}}"', f'"{iso(dose, minutes)}"')
    bundle = Bundle.model_validate_json(text)  # what a client built with fhir.resources sends
    sent: dict[str, Any] = orjson.loads(bundle.model_dump_json(exclude_none=True))
    return sent


def json_lines(dose: dt.datetime, session: str = SESSION, clinic: str = CLINIC) -> list[bytes]:
    return [
        orjson.dumps({"type": kind, "event_id": f"j{n}", "session_id": session,
                      "clinic_id": clinic, "occurred_at": iso(dose, minutes), "data": data})
        for n, (kind, minutes, data) in enumerate(JSON_EVENTS)
    ]  # fmt: skip


def core(alerts: list[dict[str, Any]]) -> set[tuple[object, ...]]:
    return {(a["rule"], a["triggered_at"], a["severity"], a["message"]) for a in alerts}


def replayed(tmp_path: Path, lines: list[bytes]) -> list[dict[str, Any]]:
    scenario = tmp_path / "session.jsonl"
    scenario.write_bytes(ndjson(lines))
    until = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    done = remsguard("replay", str(scenario), "--until", until)
    assert done.returncode == 0, done.stderr
    return [orjson.loads(line) for line in done.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    process = start_up(
        tmp_path_factory.mktemp("fhir") / "data",
        env={"REMSGUARD_FHIR_MAX_ENTRIES": "40", "REMSGUARD_FHIR_MAX_BODY_BYTES": "262144"},
    )
    try:
        yield process
    finally:
        assert process.stop() == 0, process.log


def post(up: Up, path: str, body: Any, role: str = "device", **headers: str) -> Any:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    sent = {"Content-Type": FHIR_JSON, **up.auth(role), **headers}
    url = f"{up.base}/fhir/r4" + (f"/{path}" if path else "")
    return up.client.post(url, content=content, headers=sent)


def outcome(response: Any) -> OperationOutcome:
    assert response.headers["content-type"].startswith(FHIR_JSON)
    return OperationOutcome.model_validate(response.json())


def test_a_session_as_a_transaction_raises_what_replay_of_its_json_raises(
    up: Up, tmp_path: Path
) -> None:
    dose = dose_time()
    response = post(up, "Bundle", session_bundle(dose))
    assert response.status_code == 200, response.text
    answer = Bundle.model_validate(response.json())
    assert answer.type == "transaction-response"
    statuses = [entry.response.status for entry in answer.entry or []]
    # Organization and Patient are read for references and not used; the rest is recorded.
    assert statuses == ["200 OK", "200 OK"] + ["201 Created"] * 7, response.text
    served = up.alerts(session=SESSION)
    expected = replayed(tmp_path, json_lines(dose))
    assert {"SPO2_LOW", "BP_CRISIS", "BP_RISE"} <= {a["rule"] for a in expected}
    assert core(served) == core(expected)

    again = post(up, "Bundle", session_bundle(dose))  # the EHR re-sends: nothing changes
    assert again.status_code == 200
    assert [e["response"]["status"] for e in again.json()["entry"]][2:] == ["200 OK"] * 7
    assert "already received" in again.text
    assert core(up.alerts(session=SESSION)) == core(expected)
    records = up.client.get(
        f"{up.base}/v1/audit/records",
        params={"session": SESSION, "kind": "event.accepted"},
        headers=up.auth("admin"),
    ).json()["records"]
    assert len(records) == len(JSON_EVENTS)


def observation(dose: dt.datetime, session: str, **extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = orjson.loads(
        (FIXTURES / "spec" / "observation-example-heart-rate.json").read_bytes()
    )
    resource.update(
        id=f"hr-{session}",
        encounter={"reference": f"Encounter/{session}"},
        effectiveDateTime=iso(dose, 5),
        performer=[{"reference": "Organization/CLINIC-G"}],
    )
    resource.update(extra)
    return resource


def encounter(dose: dt.datetime, session: str) -> dict[str, Any]:
    return {
        "resourceType": "Encounter", "id": session, "status": "in-progress",
        "class": {"code": "AMB"}, "subject": {"reference": "Patient/PAT-G"},
        "serviceProvider": {"reference": "Organization/CLINIC-G"},
        "period": {"start": iso(dose, -20)},
    }  # fmt: skip


def test_single_resources_are_answered_with_an_operation_outcome(up: Up) -> None:
    dose = dose_time()
    created = post(up, "Encounter", encounter(dose, "S-G1"))
    assert created.status_code == 201, created.text
    assert "the session opened recorded" in outcome(created).issue[0].diagnostics
    reading = post(up, "Observation", observation(dose, "S-G1"))
    assert reading.status_code == 201, reading.text
    assert post(up, "Observation", observation(dose, "S-G1")).status_code == 200  # re-sent

    corrected = observation(dose, "S-G1", status="corrected", valueQuantity={
        "value": 140, "unit": "beats/minute", "system": "http://unitsofmeasure.org",
        "code": "/min"})  # fmt: skip
    answer = post(up, "Observation", corrected)
    assert answer.status_code == 200, answer.text
    assert {i.severity for i in outcome(answer).issue} == {"warning"}

    date_only = observation(dose, "S-G1", id="hr-date", effectiveDateTime=iso(dose, 5)[:10])
    refused = post(up, "Observation", date_only)
    assert refused.status_code == 422
    (issue,) = outcome(refused).issue
    assert (issue.severity, issue.code, issue.expression) == (
        "error", "value", ["Observation.effectiveDateTime"],
    )  # fmt: skip

    future = observation(dose, "S-G1", id="hr-future", effectiveDateTime=iso(dose, 24 * 60))
    too_soon = post(up, "Observation", future)
    assert too_soon.status_code == 422 and "occurred_in_future" in too_soon.text

    finished = encounter(dose, "S-G1") | {
        "status": "finished", "period": {"start": iso(dose, -20), "end": iso(dose, 10)},
        "participant": [{"individual": {"reference": "Practitioner/nurse-g"}}],
    }  # fmt: skip
    put = up.client.put(
        f"{up.base}/fhir/r4/Encounter/S-G1", content=orjson.dumps(finished),
        headers={"Content-Type": FHIR_JSON, **up.auth("device")},
    )  # fmt: skip
    assert put.status_code == 201, put.text  # the discharge is new, the opening a duplicate
    texts = [i.diagnostics for i in outcome(put).issue]
    assert any("already received" in t for t in texts) and any("discharge" in t for t in texts)
    mismatch = up.client.put(
        f"{up.base}/fhir/r4/Encounter/other", content=orjson.dumps(finished),
        headers={"Content-Type": FHIR_JSON, **up.auth("device")},
    )  # fmt: skip
    assert mismatch.status_code == 400


def test_a_transaction_with_one_bad_entry_records_nothing_and_a_batch_the_rest(up: Up) -> None:
    dose = dose_time()
    good = {"resource": encounter(dose, "S-T1"), "request": {"method": "POST", "url": "Encounter"}}
    bad = {"resource": observation(dose, "S-T1", effectiveDateTime=iso(dose, 5)[:10]),
           "request": {"method": "POST", "url": "Observation"}}  # fmt: skip
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [good, bad]}
    refused = post(up, "Bundle", transaction)
    assert refused.status_code == 422
    (issue,) = outcome(refused).issue
    assert issue.expression == ["Bundle.entry[1].resource.effectiveDateTime"]
    assert up.alerts(session="S-T1") == []
    assert post(up, "Encounter", encounter(dose, "S-T1")).status_code == 201  # not there before

    batch = {**transaction, "type": "batch"}
    answer = post(up, "", batch)  # POST [base] takes a Bundle too
    assert answer.status_code == 200
    assert [e["response"]["status"] for e in answer.json()["entry"]] == [
        "200 OK", "422 Unprocessable Entity",
    ]  # fmt: skip


def test_the_token_decides_the_clinics(up: Up) -> None:
    dose = dose_time()
    made = remsguard("principals", "create", "--role", "device", "--name", "ehr-other",
                     "--clinic", "CLINIC-OTHER", "--data-dir", str(up.data_dir))  # fmt: skip
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1].split()[-1]
    answer = up.client.post(
        f"{up.base}/fhir/r4/Encounter", content=orjson.dumps(encounter(dose, "S-X1")),
        headers={"Content-Type": FHIR_JSON, "Authorization": f"Bearer {token}"},
    )  # fmt: skip
    assert answer.status_code == 403, answer.text
    assert outcome(answer).issue[0].code == "forbidden"
    auditor = post(up, "Encounter", encounter(dose, "S-X1"), role="admin")
    assert auditor.status_code == 201


def test_the_door_itself_answers_in_fhir(up: Up) -> None:
    metadata = up.client.get(f"{up.base}/fhir/r4/metadata")  # open, as FHIR clients expect
    assert metadata.status_code == 200
    statement = CapabilityStatement.model_validate(metadata.json())
    assert {r.type for r in statement.rest[0].resource} == {
        "Encounter", "MedicationAdministration", "Observation",
    }  # fmt: skip
    unauthenticated = up.client.post(f"{up.base}/fhir/r4/Bundle", content=b"{}",
                                     headers={"Content-Type": FHIR_JSON})  # fmt: skip
    assert unauthenticated.status_code == 401 and outcome(unauthenticated).issue[0].code == "login"
    assert post(up, "Bundle", {}, **{"Content-Type": "text/plain"}).status_code == 415
    assert post(up, "Bundle", b"{not json").status_code == 400
    assert post(up, "Bundle", b"[" * 5000 + b"]" * 5000).status_code == 400
    assert post(up, "Observation", {"resourceType": "Encounter"}).status_code == 400
    many = {"resourceType": "Bundle", "type": "batch", "entry": [{}] * 41}
    assert post(up, "Bundle", many).status_code == 413
    assert post(up, "Bundle", b" " * 300_000).status_code == 413
    collection = {"resourceType": "Bundle", "type": "collection", "entry": []}
    assert post(up, "Bundle", collection).status_code == 422
    for hostile in ([{"resource": 1}], [{"resource": {"resourceType": "Observation",
                    "status": {"x": [1]}}, "request": {"method": "POST", "url": "Observation"}}],
                    [None, 3, "x"]):  # fmt: skip
        answer = post(up, "Bundle", {"resourceType": "Bundle", "type": "batch", "entry": hostile})
        assert answer.status_code == 200, answer.text
        Bundle.model_validate(answer.json())
