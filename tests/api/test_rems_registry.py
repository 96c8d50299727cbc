"""The REMS registry over the API and the CLI, on SQLite and PostgreSQL: admin writes,
staff and auditors read, clinic-scoped, every change a chained record, `audit verify` green."""

from __future__ import annotations

import orjson
from sqlalchemy import text
from typer.testing import CliRunner

from remsguard.adapters.storage import AuditQuery, verify_log
from remsguard.adapters.storage.registry import RegistryStore
from remsguard.domain.decisions import AuditKind
from remsguard.entrypoints.cli import app

from .conftest import World

runner = CliRunner()
CERT = {"certification_id": "CERT-A", "valid_from": "2026-01-01", "valid_to": "2027-12-31"}


def _records(world: World, kind: AuditKind) -> list:  # type: ignore[type-arg]
    page = world.log.audit_records(AuditQuery(kind=kind.value, limit=100))
    return list(page.items)


def test_admin_records_staff_and_auditors_read_and_every_change_is_chained(world: World) -> None:
    client = world.client
    url = "/v1/clinics/clinic-a/certification"
    assert client.put(url, json=CERT, headers=world.auth("staff-a")).status_code == 403
    assert client.get(url, headers=world.auth("auditor-a")).status_code == 404  # none yet
    put = client.put(url, json=CERT, headers=world.auth("admin"))
    assert put.status_code == 200, put.text
    assert put.json()["changed"] is True
    again = client.put(url, json=CERT, headers=world.auth("admin"))
    assert again.json()["changed"] is False  # the same values: nothing recorded
    got = client.get(url, headers=world.auth("staff-a")).json()
    assert got == {"clinic_id": "clinic-a", **CERT}
    assert client.get(url, headers=world.auth("staff-b")).status_code == 404  # other clinic

    enroll = "/v1/clinics/clinic-a/enrollments/patient-1"
    body = {"enrolled_on": "2026-11-01"}
    assert client.put(enroll, json=body, headers=world.auth("auditor")).status_code == 403
    assert client.put(enroll, json=body, headers=world.auth("admin")).json()["changed"] is True
    listed = client.get("/v1/clinics/clinic-a/enrollments", headers=world.auth("auditor-a"))
    assert listed.json()["enrollments"] == [
        {"clinic_id": "clinic-a", "patient_ref": "patient-1", "enrolled_on": "2026-11-01"}
    ]
    bad = client.put(url, json={**CERT, "valid_to": "2025-01-01"}, headers=world.auth("admin"))
    assert bad.status_code == 422

    [cert_record] = _records(world, AuditKind.REMS_CERTIFICATION_RECORDED)
    assert cert_record.clinic_id == "clinic-a"
    assert orjson.loads(cert_record.detail)["by"] == "admin"
    assert len(_records(world, AuditKind.REMS_ENROLLMENT_RECORDED)) == 1
    assert verify_log(world.log.engine).ok


def test_the_form_shows_the_certification_and_enrollment_it_relied_on(world: World) -> None:
    # Runs after the first test: clinic-a certified (CERT-A), patient-1 enrolled 2026-11-01.
    form = world.client.get("/v1/sessions/a-s1/form", headers=world.auth("auditor-a"))
    assert form.status_code == 200, form.text
    rems = form.json()["rems"]
    assert rems["required"] is True and rems["dose_date"] == "2026-11-23"
    assert rems["certification"]["certification_id"] == "CERT-A"
    assert rems["certification"]["covers_dose_date"] is True
    assert rems["enrollment"] == {
        "patient_ref": "patient-1",
        "enrolled_on": "2026-11-01",
        "covers_dose_date": True,
    }
    other = world.client.get("/v1/sessions/b-s1/form", headers=world.auth("admin")).json()
    assert other["rems"]["enrollment"] == "missing"


def test_cli_records_and_lists_and_verify_holds_the_rows_to_the_records(world: World) -> None:
    db = ["--db", world.url]
    done = runner.invoke(
        app, ["registry", "certify", "--clinic", "clinic-b", "--id", "CERT-B", "--from",
              "2026-02-01", *db],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    done = runner.invoke(
        app, ["registry", "enroll", "--clinic", "clinic-b", "--patient", "patient-9", "--on",
              "2026-03-01", *db],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    bad = runner.invoke(app, ["registry", "enroll", "--clinic", "clinic-b", "--patient", "p",
                              "--on", "March", *db])  # fmt: skip
    assert bad.exit_code == 2
    listed = runner.invoke(app, ["registry", "list", "--clinic", "clinic-b", *db])
    lines = [orjson.loads(x) for x in listed.stdout.splitlines() if x.startswith("{")]
    assert {
        "clinic_id": "clinic-b",
        "patient_ref": "patient-9",
        "enrolled_on": "2026-03-01",
    } in lines
    registry = RegistryStore(world.log).load()
    assert registry.certification_of("clinic-b").certification_id == "CERT-B"  # type: ignore[union-attr]
    assert runner.invoke(app, ["audit", "verify", *db]).exit_code == 0
    assert verify_log(world.log.engine).ok

    # Edited around the log: verify names the row.
    with world.log.engine.begin() as conn:
        conn.execute(text("UPDATE rems_enrollments SET enrolled_on = '2025-01-01' "
                          "WHERE patient_ref = 'patient-9'"))  # fmt: skip
    report = verify_log(world.log.engine)
    assert not report.ok and "rems_enrollments" in (report.problem or "")
    with world.log.engine.begin() as conn:
        conn.execute(text("UPDATE rems_enrollments SET enrolled_on = '2026-03-01' "
                          "WHERE patient_ref = 'patient-9'"))  # fmt: skip
    with world.log.engine.begin() as conn:
        conn.execute(text("DELETE FROM rems_certifications WHERE clinic_id = 'clinic-b'"))
    report = verify_log(world.log.engine)
    assert not report.ok and "deleted" in (report.problem or "")


def test_a_reader_bound_to_another_clinic_is_told_the_clinic_does_not_exist(world: World) -> None:
    for path in ("certification", "enrollments"):
        r = world.client.get(f"/v1/clinics/clinic-a/{path}", headers=world.auth("staff-b"))
        assert r.status_code == 404
        assert r.json() == {"error": "not_found", "message": "no clinic 'clinic-a'"}
    assert world.client.get("/v1/clinics/clinic-a/enrollments").status_code == 401
