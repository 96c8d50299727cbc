"""The auditor API on SQLite and PostgreSQL: authentication, clinic scoping, queries, CSV,
timelines, the monitoring form, its deadline, the daily summary, proofs, and the audit
record every query leaves."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import orjson
import pytest

from remsguard.adapters.storage import AlertQuery, AuditQuery, verify_log
from remsguard.adapters.storage.chain import API_QUERY, FORM_SUBMITTED
from remsguard.auditing.deadlines import RULE, check_overdue_forms
from remsguard.entrypoints.audit import check_proof

from .conftest import World, at

GETS = [
    "/v1/audit/records",
    "/v1/audit/alerts",
    "/v1/audit/heads/latest",
    "/v1/audit/consistency?first=1",
    "/v1/sessions/a-s1/timeline",
    "/v1/sessions/a-s1/form",
    "/v1/compliance/summary",
]


def _all(world: World, path: str, who: str = "admin", **params: object) -> list[dict]:
    items: list[dict] = []
    cursor = None
    key = "records" if "records" in path else "alerts"
    while True:
        query = {**params, "limit": 3, **({"cursor": cursor} if cursor else {})}
        r = world.client.get(path, params=query, headers=world.auth(who))
        assert r.status_code == 200, r.text
        body = r.json()
        items += body[key]
        cursor = body["next_cursor"]
        if cursor is None:
            return items


# -- authentication and scoping -------------------------------------------------------------


@pytest.mark.parametrize("path", GETS)
def test_every_endpoint_needs_a_token(world: World, path: str) -> None:
    assert world.client.get(path).status_code == 401
    bad = world.client.get(path, headers={"Authorization": "Bearer rg_nope"})
    assert bad.status_code == 401
    assert bad.headers["www-authenticate"].startswith("Bearer")
    assert world.client.get(path, headers={"Authorization": "Basic x"}).status_code == 401
    post = world.client.post("/v1/sessions/a-s1/form/submit")
    assert post.status_code == 401


def test_openapi_is_served(world: World) -> None:
    doc = world.client.get("/openapi.json").json()
    for path in ("/v1/audit/records", "/v1/sessions/{session_id}/form", "/v1/audit/consistency"):
        assert path in doc["paths"]


def test_a_clinic_bound_principal_sees_only_its_clinic(world: World) -> None:
    records = _all(world, "/v1/audit/records", "auditor-a")
    assert records and {r["clinic_id"] for r in records} == {"clinic-a"}
    alerts = _all(world, "/v1/audit/alerts", "auditor-a")
    assert {a["clinic_id"] for a in alerts} <= {"clinic-a"}
    everyone = _all(world, "/v1/audit/alerts", "auditor")
    assert {a["clinic_id"] for a in everyone} == {"clinic-a", "clinic-b"}
    # Asking for another clinic is refused, not silently emptied.
    r = world.client.get("/v1/audit/records?clinic=clinic-b", headers=world.auth("auditor-a"))
    assert r.status_code == 403
    # Another clinic's session does not exist for this principal.
    for path in ("timeline", "form"):
        r = world.client.get(f"/v1/sessions/b-s1/{path}", headers=world.auth("auditor-a"))
        assert r.status_code == 404
    r = world.client.post("/v1/sessions/b-s1/form/submit", headers=world.auth("staff-a"))
    assert r.status_code == 404
    # patient_ref of another clinic: nothing.
    r = world.client.get("/v1/audit/records?patient_ref=patient-2", headers=world.auth("auditor-a"))
    assert r.json()["records"] == []
    # A record of another clinic has no proof for this principal.
    b_record = next(
        r for r in _all(world, "/v1/audit/records", "auditor") if r["clinic_id"] == "clinic-b"
    )
    r = world.client.get(
        f"/v1/audit/records/{b_record['record_id']}/proof", headers=world.auth("auditor-a")
    )
    assert r.status_code == 404
    summary = world.client.get(
        "/v1/compliance/summary?since=2026-11-23&until=2026-11-24",
        headers=world.auth("auditor-a"),
    ).json()
    assert {d["clinic_id"] for d in summary["days"]} == {"clinic-a"}


def test_auditors_may_not_submit_forms(world: World) -> None:
    r = world.client.post("/v1/sessions/a-s1/form/submit", headers=world.auth("auditor"))
    assert r.status_code == 403


@pytest.mark.parametrize(
    "path",
    [
        "/v1/audit/records?since=2026-11-23T09:00:00",  # no offset
        "/v1/audit/records?until=yesterday",
        "/v1/audit/records?limit=0",
        "/v1/audit/records?limit=1001",
        "/v1/audit/records?limit=ten",
        "/v1/audit/records?cursor=not-a-cursor",
        "/v1/audit/alerts?cursor=eyJ4IjoxfQ",
        "/v1/audit/alerts?format=xml",
        "/v1/audit/alerts?clinic=",
        "/v1/audit/consistency?first=0",
        "/v1/audit/consistency?first=abc",
        "/v1/compliance/summary?since=2026-13-01",
        "/v1/compliance/summary?since=2026-11-24&until=2026-11-23",
        "/v1/compliance/summary?since=2020-01-01&until=2026-01-01",
        "/v1/sessions/a-s1/form?format=pdf",
    ],
)
def test_malformed_parameters_are_4xx(world: World, path: str) -> None:
    r = world.client.get(path, headers=world.auth("admin"))
    assert r.status_code in (400, 422), (r.status_code, r.text)


def test_a_cursor_of_the_other_order_is_refused(world: World) -> None:
    page = world.client.get("/v1/audit/alerts?limit=1", headers=world.auth("admin")).json()
    r = world.client.get(
        f"/v1/audit/records?cursor={page['next_cursor']}", headers=world.auth("admin")
    )
    assert r.status_code == 400


# -- queries --------------------------------------------------------------------------------


def test_records_paginate_in_a_stable_order_with_filters(world: World) -> None:
    records = _all(world, "/v1/audit/records", session="a-s1")
    assert records and {r["session_id"] for r in records} == {"a-s1"}
    keys = [(r["event_time"], r["log_index"]) for r in records]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    one_page = world.client.get(
        "/v1/audit/records", params={"session": "a-s1", "limit": 1000}, headers=world.auth("admin")
    ).json()["records"]
    assert [r["record_id"] for r in one_page] == [r["record_id"] for r in records]

    alerts = _all(world, "/v1/audit/alerts", rule="BP_CRISIS")
    assert alerts and {a["rule"] for a in alerts} == {"BP_CRISIS"}
    crit = _all(world, "/v1/audit/alerts", severity="critical", clinic="clinic-b")
    assert crit and all(a["severity"] == "critical" and a["clinic_id"] == "clinic-b" for a in crit)
    by_patient = _all(world, "/v1/audit/alerts", patient_ref="patient-2")
    assert by_patient and {a["session_id"] for a in by_patient} == {"b-s1"}
    raised = _all(world, "/v1/audit/records", kind="alert.raised", rule="BP_CRISIS")
    assert len(raised) == len(alerts)
    window = _all(
        world,
        "/v1/audit/records",
        session="a-s1",
        since=at(0).isoformat(),
        until=at(60).isoformat(),
    )
    assert window and all(
        at(0).isoformat() <= r["event_time"].replace("Z", "+00:00") < at(60).isoformat()
        for r in window
    )


def test_csv_export_of_any_query(world: World) -> None:
    json_rows = _all(world, "/v1/audit/records", session="b-s1")
    r = world.client.get(
        "/v1/audit/records",
        params={"session": "b-s1", "limit": 1000},
        headers={**world.auth("admin"), "Accept": "text/csv"},
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["record_id"] for row in rows] == [j["record_id"] for j in json_rows]
    assert orjson.loads(rows[0]["detail"]) == json_rows[0]["detail"]
    r = world.client.get("/v1/audit/alerts?format=csv&limit=1", headers=world.auth("admin"))
    assert r.headers["content-type"].startswith("text/csv") and r.headers["x-next-cursor"]
    assert len(list(csv.DictReader(io.StringIO(r.text)))) == 1


def test_every_query_is_an_audit_record(world: World) -> None:
    before = world.log.audit_records(AuditQuery(kind=API_QUERY, limit=1000)).items
    world.client.get(
        "/v1/audit/alerts?clinic=clinic-b&rule=BP_CRISIS", headers=world.auth("auditor")
    )
    after = world.log.audit_records(AuditQuery(kind=API_QUERY, limit=1000)).items
    assert len(after) == len(before) + 1
    new = orjson.loads(after[-1].detail)
    assert new["principal"] == "auditor" and new["endpoint"] == "/v1/audit/alerts"
    assert new["filters"]["clinic"] == "clinic-b" and new["filters"]["rule"] == "BP_CRISIS"
    assert new["rows"] >= 1
    assert after[-1].occurred_at is not None
    assert verify_log(world.log.engine).ok


# -- sessions -------------------------------------------------------------------------------


def test_timeline_merges_events_decisions_and_alerts_in_event_time(world: World) -> None:
    r = world.client.get("/v1/sessions/b-s1/timeline", headers=world.auth("staff-b"))
    assert r.status_code == 200
    body = r.json()
    entries = body["entries"]
    times = [e["at"] for e in entries]
    assert times == sorted(times)
    kinds = {e["kind"] for e in entries}
    assert {"event.accepted", "session.opened", "alert.raised", "alert"} <= kinds
    accepted = [e for e in entries if e["kind"] == "event.accepted"]
    assert len(accepted) == 5 and all(e["event"] is not None for e in accepted)
    assert accepted[3]["event"]["data"] == {"systolic": 185.0, "diastolic": 110.0}
    alerts = {e["alert"]["rule"] for e in entries if e["source"] == "alert"}
    assert {"BP_CRISIS", "EARLY_DISCHARGE"} <= alerts
    csv_text = world.client.get(
        "/v1/sessions/b-s1/timeline?format=csv", headers=world.auth("staff-b")
    ).text
    assert len(list(csv.DictReader(io.StringIO(csv_text)))) == len(entries)
    assert (
        world.client.get("/v1/sessions/nope/timeline", headers=world.auth("admin")).status_code
        == 404
    )


def test_the_form_is_filled_from_events_and_never_invents(world: World) -> None:
    form = world.client.get("/v1/sessions/a-s1/form", headers=world.auth("auditor-a")).json()
    f = {k: v["value"] for k, v in form["fields"].items()}
    assert form["complete"] and form["missing_fields"] == []
    assert f["treatment_date"] == "2026-11-23"
    assert (f["drug"], f["dose_mg"], f["lot_number"]) == ("esketamine", 56.0, "LOT-7")
    assert f["concomitant_medications"] == ["benzodiazepine"]
    assert f["total_monitoring_minutes"] == 125.0
    assert f["bp_before_administration"]["systolic"] == 128
    assert f["bp_at_40_minutes"]["at"].startswith("2026-11-23T09:40")
    assert f["bp_before_completion"]["at"].startswith("2026-11-23T11:00")
    assert f["vitals_in_range_before_administration"] is True
    assert f["vitals_in_range_before_completion"] is True
    assert f["sedation_occurred"] is True  # MOAA/S 4 at 40 minutes
    assert f["dissociation_occurred"] is True
    assert f["respiratory_depression_occurred"] is False
    assert form["patient_ref"] == "patient-1"

    crisis = world.client.get("/v1/sessions/b-s1/form", headers=world.auth("admin")).json()
    fields = crisis["fields"]
    assert fields["lot_number"]["missing"] and "lot" in fields["lot_number"]["reason"]
    assert fields["vitals_in_range_before_administration"]["value"] is False  # 150/95
    assert fields["vitals_in_range_before_completion"]["value"] is False  # 185/110
    assert fields["bp_at_40_minutes"]["value"]["systolic"] == 185
    for name in ("sedation_occurred", "dissociation_occurred", "respiratory_depression_occurred"):
        assert fields[name]["missing"] and fields[name]["value"] is None
    assert set(crisis["missing_fields"]) == {
        "lot_number",
        "sedation_occurred",
        "dissociation_occurred",
        "respiratory_depression_occurred",
    }

    running = world.client.get("/v1/sessions/a-s2/form", headers=world.auth("admin")).json()
    assert running["fields"]["total_monitoring_minutes"]["missing"]
    assert running["fields"]["bp_before_completion"]["missing"]
    assert running["submission"]["due_at"] is None

    r = world.client.get("/v1/sessions/b-s1/form?format=csv", headers=world.auth("admin"))
    rows = {row["field"]: row for row in csv.DictReader(io.StringIO(r.text))}
    assert rows["lot_number"]["missing"] == "yes" and rows["lot_number"]["value"] == ""
    assert rows["drug"]["value"] == "ketamine"


def test_form_deadline_submit_and_overdue_once(world: World) -> None:
    log = world.log
    a_due = log.get_form("a-s1").due_at  # type: ignore[union-attr]
    assert a_due is not None
    # Within the deadline: nothing overdue.
    assert check_overdue_forms(log, at(60 * 24)) == []
    # a-s1 is submitted on time; b-s1 is not.
    world.clock.now = at(60 * 24 * 3)
    r = world.client.post(
        "/v1/sessions/a-s1/form/submit", json={"signed": "nurse-1"}, headers=world.auth("staff-a")
    )
    assert r.status_code == 200 and r.json()["submitted"] and not r.json()["already_submitted"]
    again = world.client.post("/v1/sessions/a-s1/form/submit", headers=world.auth("admin"))
    assert again.json()["already_submitted"]
    assert world.client.post(
        "/v1/sessions/a-s2/form/submit", headers=world.auth("staff-a")
    ).status_code in (200, 404)
    submitted = log.audit_records(AuditQuery(kind=FORM_SUBMITTED, session_id="a-s1")).items
    assert len(submitted) == 1

    late = at(125) + timedelta(days=8)
    raised = check_overdue_forms(log, late)
    assert [(a.session_id, a.rule, a.severity.value) for a in raised] == [("b-s1", RULE, "warning")]
    assert check_overdue_forms(log, late + timedelta(days=30)) == []  # once
    alerts = log.alerts(AlertQuery(rule=RULE)).items
    assert [a.session_id for a in alerts] == ["b-s1"]
    records = log.audit_records(AuditQuery(kind="alert.raised", rule=RULE)).items
    assert len(records) == 1
    world.clock.now = late
    form = world.client.get("/v1/sessions/b-s1/form", headers=world.auth("admin")).json()
    assert form["submission"]["overdue"] and form["submission"]["overdue_alert_id"]
    summary = world.client.get(
        "/v1/compliance/summary?since=2026-11-23&until=2026-11-24", headers=world.auth("admin")
    ).json()["days"]
    b = next(d for d in summary if d["clinic_id"] == "clinic-b")
    assert b["forms_overdue"] == 1 and b["violations_by_rule"][RULE] == 1
    assert verify_log(log.engine).ok


def test_compliance_summary_per_clinic_and_day(world: World) -> None:
    r = world.client.get(
        "/v1/compliance/summary?since=2026-11-23&until=2026-11-24", headers=world.auth("admin")
    )
    days = {d["clinic_id"]: d for d in r.json()["days"]}
    assert days["clinic-a"]["sessions"] == 2 and days["clinic-b"]["sessions"] == 1
    b = days["clinic-b"]
    assert b["sessions_with_violations"] == 1 and b["fully_compliant_share"] == 0.0
    assert b["violations_by_rule"]["BP_CRISIS"] == 1
    text = world.client.get(
        "/v1/compliance/summary?since=2026-11-23&until=2026-11-24&format=csv",
        headers=world.auth("admin"),
    ).text
    assert {row["clinic_id"] for row in csv.DictReader(io.StringIO(text))} == {
        "clinic-a",
        "clinic-b",
    }


# -- proofs ---------------------------------------------------------------------------------


def test_inclusion_proof_checks_offline_and_consistency(world: World) -> None:
    record = _all(world, "/v1/audit/records", session="a-s1")[0]
    r = world.client.get(
        f"/v1/audit/records/{record['record_id']}/proof", headers=world.auth("auditor-a")
    )
    assert r.status_code == 200
    proof = r.json()
    assert check_proof(proof, world.signer.public_key) is None
    first = proof["tree_size"]
    world.log.sign_head(world.signer)  # the API's queries have grown the log since
    c = world.client.get(f"/v1/audit/consistency?first={first}", headers=world.auth("auditor"))
    assert c.status_code == 200
    body = c.json()
    from remsguard.domain import merkle

    assert merkle.verify_consistency(
        first,
        body["new"]["tree_size"],
        bytes.fromhex(body["old"]["root_hash"]),
        bytes.fromhex(body["new"]["root_hash"]),
        [bytes.fromhex(p) for p in body["path"]],
    )
    assert (
        world.client.get(
            "/v1/audit/consistency?first=999999999", headers=world.auth("auditor")
        ).status_code
        == 404
    )
    assert (
        world.client.get("/v1/audit/records/unknown/proof", headers=world.auth("admin")).status_code
        == 404
    )
