"""What feeds the auditor API outside the seeded fixture: `replay --db` and the audit sink
store the events the forms are filled from, embedded mode's journal serves them, the form
deadline task follows the log, `remsguard principals create` issues tokens, and
`remsguard api` serves the app over a database URL."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from remsguard.adapters.storage import AlertQuery, AuditQuery, ComplianceLog, verify_log
from remsguard.adapters.storage.events import event_to_json
from remsguard.auditing.deadlines import RULE, FormDeadlineTask
from remsguard.config import Settings
from remsguard.contract.outbound import alert_to_json, audit_record_to_json
from remsguard.domain.decisions import AuditKind
from remsguard.entrypoints.api import ApiContainer
from remsguard.entrypoints.cli import app
from remsguard.entrypoints.http import create_app
from remsguard.handlers.audit_sink import decode_batch, store

from .conftest import Clock, at, compliant_session, crisis_session, seed

runner = CliRunner()


@pytest.fixture
def events_file(tmp_path: Path) -> Path:
    path = tmp_path / "events.jsonl"
    lines = [event_to_json(e) for e in compliant_session() + crisis_session()]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _form(url: str, session: str) -> dict:
    log = ComplianceLog.open(url)
    _, token = log.create_principal(f"t-{session}", "admin")  # type: ignore[arg-type]
    container = ApiContainer.open(
        Settings(database_url=url), clock=Clock(), compliance=log, check_deadlines=False
    )
    with TestClient(create_app(container)) as client:
        r = client.get(f"/v1/sessions/{session}/form", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        return r.json()


def test_replay_db_stores_the_events_the_form_is_filled_from(
    events_file: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'replay.db'}"
    result = runner.invoke(app, ["replay", str(events_file), "--db", url])
    assert result.exit_code == 0, result.output
    form = _form(url, "a-s1")
    assert form["complete"], form["missing_fields"]
    assert form["fields"]["lot_number"]["value"] == "LOT-7"


def test_the_audit_sink_stores_input_events(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sink.db'}"
    scratch = ComplianceLog.open(f"sqlite:///{tmp_path / 'scratch.db'}")
    alerts = seed(scratch, crisis_session(), until=at(600))
    records = scratch.audit_records(AuditQuery(limit=1000)).items
    scratch.close()
    from remsguard.adapters.storage.chain import record_of_row

    messages = [("event", event_to_json(e), f"in@{i}") for i, e in enumerate(crisis_session())]
    messages += [("event", b'{"not": "an event"}', "in@x")]  # the processor dead-letters it
    kinds = {kind.value for kind in AuditKind}  # what travels on the audit topic
    messages += [
        ("audit", audit_record_to_json(record_of_row(r)), "audit@0")
        for r in records
        if r.kind in kinds  # not the log's own service records (event.stored, api.query)
    ]
    messages += [("alert", alert_to_json(a), "alerts@0") for a in alerts]
    batch = decode_batch(messages)
    assert not batch.malformed and len(batch.events) == len(crisis_session())
    with ComplianceLog.open(url) as log:
        store(log, batch)
        store(log, decode_batch(messages))  # re-delivery: nothing twice
        assert len(log.session_events("b-s1")) == len(crisis_session())
        summary = log.session_summary("b-s1")
        assert summary is not None and summary.patient_ref == "patient-2"  # from the event
    form = _form(url, "b-s1")
    assert form["fields"]["drug"]["value"] == "ketamine"


def test_the_form_never_reads_the_embedded_journal(tmp_path: Path) -> None:
    """Issue 13, finding 5: the journal is not covered by the hash chain, so the form must not
    be built from it; events only the journal holds leave the form incomplete."""
    from remsguard.embedded.journal import EventJournal, JournaledEvent

    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = ComplianceLog.open(url)
    seed(log, compliant_session(), until=at(600))
    with log.engine.begin() as conn:  # as embedded mode: records, no stored events
        conn.exec_driver_sql("DELETE FROM session_events")
    journal = EventJournal(tmp_path / "journal.db")
    journal.append(
        [
            JournaledEvent(e.session_id, e.event_id, None, event_to_json(e), 0)
            for e in compliant_session()
        ]
    )
    _, token = log.create_principal("admin", "admin")  # type: ignore[arg-type]
    container = ApiContainer.open(
        Settings(database_url=url), clock=Clock(), compliance=log, check_deadlines=False
    )
    container.journal = journal  # type: ignore[attr-defined]
    with TestClient(create_app(container)) as client:
        form = client.get(
            "/v1/sessions/a-s1/form", headers={"Authorization": f"Bearer {token}"}
        ).json()
    journal.close()
    assert not form["complete"]
    assert form["fields"]["drug"]["value"] is None


def test_the_deadline_task_follows_the_log_and_raises_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = ComplianceLog.open(url)
    seed(log, crisis_session(), until=at(600))
    with log.engine.begin() as conn:  # a writer that stores records only
        conn.exec_driver_sql("DELETE FROM session_summaries")
        conn.exec_driver_sql("DELETE FROM monitoring_forms")
    clock = Clock(at(60 * 24))
    task = FormDeadlineTask(log, clock, 60, follow=True)
    assert task.run_once() == []
    assert log.get_form("b-s1") is not None and log.session_summary("b-s1") is not None
    clock.now = at(60) + timedelta(days=7, seconds=1)
    assert [a.rule for a in task.run_once()] == [RULE]
    clock.now += timedelta(days=3)
    assert task.run_once() == []
    assert len(log.alerts(AlertQuery(rule=RULE)).items) == 1
    assert verify_log(log.engine).ok
    log.close()


def test_the_deadline_task_sets_the_forms_overdue_gauge(tmp_path: Path) -> None:
    from remsguard.adapters.metrics import new_registry
    from remsguard.adapters.telemetry import Telemetry

    log = ComplianceLog.open(f"sqlite:///{tmp_path / 'log.db'}")
    seed(log, crisis_session(), until=at(600))
    telemetry = Telemetry(new_registry())
    raised: list[list[str]] = []
    clock = Clock(at(60 * 24))
    task = FormDeadlineTask(
        log,
        clock,
        60,
        telemetry=telemetry,
        on_raised=lambda alerts: raised.append([a.rule for a in alerts]),
    )

    def gauge() -> float | None:
        labels = {"clinic": "clinic-b"}
        return telemetry.registry.get_sample_value("remsguard_forms_overdue", labels)

    def raised_total() -> float | None:
        labels = {"clinic": "clinic-b", "rule": RULE, "severity": "warning"}
        return telemetry.registry.get_sample_value("remsguard_alerts_raised_total", labels)

    task.run_once()
    assert gauge() == 0 and raised == [] and raised_total() is None  # in time: shown at 0
    clock.now = at(60) + timedelta(days=7, seconds=1)
    task.run_once()
    assert gauge() == 1 and raised == [[RULE]] and raised_total() == 1
    log.forms.submit("b-s1", "rn-1")
    task.run_once()
    assert gauge() == 0 and raised == [[RULE]]
    log.close()


def test_principals_create_prints_the_token_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    args = ["principals", "create", "--role", "auditor", "--name", "ann", "--db", url]
    result = runner.invoke(app, [*args, "--clinic", "clinic-a", "--clinic", "clinic-b"])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().splitlines()[-1]
    with ComplianceLog.open(url) as log:
        found = log.principal_for_token(token)
        assert found is not None and found.role == "auditor"
        assert found.clinics == '["clinic-a","clinic-b"]'
        assert token not in found.token_hash
    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "exists" in again.output
    bad = runner.invoke(app, ["principals", "create", "--role", "root", "--name", "x"])
    assert bad.exit_code == 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_remsguard_api_serves_the_app_over_a_database_url(
    tmp_path: Path, events_file: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'api.db'}"
    assert runner.invoke(app, ["replay", str(events_file), "--db", url]).exit_code == 0
    made = runner.invoke(
        app, ["principals", "create", "--role", "admin", "--name", "a", "--db", url]
    )
    token = made.stdout.strip().splitlines()[-1]
    port = _free_port()
    env = {
        **os.environ,
        "REMSGUARD_DATABASE_URL": url,
        "REMSGUARD_API_PORT": str(port),
        "REMSGUARD_HTTP_DOCS": "true",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "remsguard", "api"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "remsguard api did not start"
            time.sleep(0.1)
        assert httpx.get(f"{base}/openapi.json").status_code == 200
        assert httpx.get(f"{base}/v1/audit/records").status_code == 401
        r = httpx.get(
            f"{base}/v1/sessions/b-s1/timeline", headers={"Authorization": f"Bearer {token}"}
        )
        assert r.status_code == 200 and r.json()["clinic_id"] == "clinic-b"
        assert httpx.post(f"{base}/v1/events", content=b"[]").status_code in (401, 404)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
