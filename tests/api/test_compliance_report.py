"""`GET /v1/reports/compliance` over a simulated month (`remsguard simulate` -> `replay --db`, on
SQLite and PostgreSQL), with forms submitted (some late) and critical alerts acknowledged after
varied delays: its numbers equal the auditor API's own answers (`/v1/compliance/summary` summed
over the month, `/v1/audit/alerts` for acknowledgement times and open items), and the HTML
and PDF carry them with server-side charts. `docs/compliance-report.png` is page 1 of the PDF
(with REMSGUARD_UPDATE_DOCS_SCREENSHOT=1 and poppler's pdftoppm)."""

from __future__ import annotations

import io
import math
import os
import statistics
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from remsguard.adapters.storage import ComplianceLog, PrincipalRole
from remsguard.adapters.storage.models import utc
from remsguard.auditing.report import clinic_alerts
from remsguard.config import Settings
from remsguard.entrypoints.api import ApiContainer
from remsguard.entrypoints.http import create_app
from remsguard.entrypoints.http.security import CONTENT_SECURITY_POLICY

from .test_form_pdf import ROOT, _png

MONTH = "2026-11"
SINCE, UNTIL = "2026-11-01", "2026-12-01"
NOW = datetime(2026, 12, 20, tzinfo=UTC)
CLINICS = ("clinic-01", "clinic-02")


@pytest.fixture(scope="module")
def month_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("month") / "month.jsonl"
    run = subprocess.run(
        [sys.executable, "-m", "remsguard", "simulate", "--out", str(out), "--seed", "11",
         "--start", "2026-11-02T08:00:00Z", "--days", "29", "--clinics", "2", "--chairs", "2",
         "--sessions-per-chair", "2", "--manifest", str(out.with_suffix(".manifest.json"))],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return out


def _work_the_month(log: ComplianceLog) -> None:
    """Staff submit most forms (every fifth one after its 7 days, every seventh never) and
    acknowledge critical alerts after 1 to 40 minutes (every sixth never)."""
    for n, summary in enumerate(
        log.summaries.opened_between(since=datetime(2026, 11, 1, tzinfo=UTC))
    ):
        form = log.get_form(summary.session_id)
        if form is None or form.due_at is None or n % 7 == 0:
            continue
        due = utc(form.due_at)
        at = due + timedelta(days=1) if n % 5 == 0 else due - timedelta(days=6, hours=n % 24)
        log.forms.submit(summary.session_id, "rn-pat", None, at)
    for clinic in CLINICS:
        start, end = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
        for n, alert in enumerate(clinic_alerts(log, clinic, start, end)):
            if alert.severity != "critical" or n % 6 == 5:
                continue
            waited = timedelta(minutes=1 + (n * 7) % 40, seconds=n % 50)
            log.alert_store.acknowledge(alert.alert_id, "rn-pat", utc(alert.triggered_at) + waited)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def month(
    request: pytest.FixtureRequest,
    month_file: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[TestClient, dict[str, str], ComplianceLog]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('report') / 'log.db'}"
    else:
        make: Callable[[], str] = request.getfixturevalue("pg_database")
        url = make()
    replay = subprocess.run(
        [sys.executable, "-m", "remsguard", "replay", str(month_file), "--until",
         "2026-12-20T00:00:00Z", "--db", url],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert replay.returncode == 0, replay.stderr[-2000:]
    log = ComplianceLog.open(url)
    _work_the_month(log)
    tokens = {}
    for name, role, clinics in (
        ("auditor", PrincipalRole.AUDITOR, ()),
        ("staff-1", PrincipalRole.STAFF, ("clinic-01",)),
    ):
        _, tokens[name] = log.create_principal(name, role, clinics)
    container = ApiContainer.open(
        Settings(database_url=url), clock=lambda: NOW, compliance=log, check_deadlines=False
    )
    with TestClient(create_app(container)) as client:
        yield client, tokens, log


def _get(client: TestClient, token: str, path: str, **params: Any) -> Any:
    r = client.get(path, params=params, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    return r


def _all_alerts(client: TestClient, token: str, **params: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        extra = {"cursor": cursor} if cursor else {}
        page = _get(client, token, "/v1/audit/alerts", limit=1000, **params, **extra).json()
        out += page["alerts"]
        cursor = page["next_cursor"]
        if cursor is None:
            return out


def _minutes(a: dict[str, Any]) -> float:
    waited = datetime.fromisoformat(a["acknowledged_at"].replace("Z", "+00:00")) - (
        datetime.fromisoformat(a["triggered_at"].replace("Z", "+00:00"))
    )
    return round(waited / timedelta(minutes=1), 2)


@pytest.mark.parametrize("clinic", CLINICS)
def test_report_numbers_equal_the_auditor_apis_own(month: Any, clinic: str) -> None:
    client, tokens, log = month
    auditor = tokens["auditor"]
    report = _get(
        client, auditor, "/v1/reports/compliance", clinic=clinic, month=MONTH, format="json"
    ).json()
    days = _get(
        client, auditor, "/v1/compliance/summary", clinic=clinic, since=SINCE, until=UNTIL
    ).json()["days"]
    sessions = sum(d["sessions"] for d in days)
    violating = sum(d["sessions_with_violations"] for d in days)
    by_rule: Counter[str] = Counter()
    for d in days:
        by_rule.update(d["violations_by_rule"])
    assert sessions > 80 and report["sessions"] == sessions
    assert report["sessions_with_violations"] == violating
    assert report["fully_compliant_share"] == round((sessions - violating) / sessions, 4)
    assert report["violations_by_rule"] == dict(by_rule) and by_rule
    assert sum(w["sessions"] for w in report["weeks"]) == sessions
    for rule, n in by_rule.items():
        assert sum(w["violations_by_rule"].get(rule, 0) for w in report["weeks"]) == n
    assert report["forms"]["submitted"] == sum(d["forms_submitted"] for d in days)
    assert report["forms"]["overdue"] == sum(d["forms_overdue"] for d in days)

    window = {"since": f"{SINCE}T00:00:00Z", "until": f"{UNTIL}T00:00:00Z"}
    critical = [
        a
        for a in _all_alerts(client, auditor, clinic=clinic, severity="critical", **window)
        if a["status"] != "withdrawn"
    ]
    waited = sorted(_minutes(a) for a in critical if a["acknowledged_at"])
    ack = report["critical_acknowledgement"]
    assert ack["critical_alerts"] == len(critical) and waited
    assert ack["acknowledged"] == len(waited)
    assert ack["median_minutes"] == pytest.approx(statistics.median(waited), abs=0.01)
    assert ack["p90_minutes"] == waited[math.ceil(0.9 * len(waited)) - 1]

    forms = [log.get_form(s.session_id) for s in log.summaries.opened_between(clinic_id=clinic)]
    due = [f for f in forms if f is not None]
    on_time = [f for f in due if f.submitted_at and utc(f.submitted_at) <= utc(f.due_at)]
    assert report["forms"]["due"] == len(due)
    assert report["forms"]["submitted_within_7_days"] == len(on_time) > 0
    assert report["forms"]["submitted"] > len(on_time)  # the late ones

    unresolved = [
        a
        for status in ("open", "acknowledged")
        for a in _all_alerts(client, auditor, clinic=clinic, status=status, **window)
    ]
    overdue_forms = [f for f in due if f.submitted_at is None and f.due_at and utc(f.due_at) < NOW]
    assert report["open_items_total"] == len(unresolved) + len(overdue_forms)

    check = report["forty_minute_check"]
    dosed = [
        s for s in log.summaries.opened_between(clinic_id=clinic) if s.first_dose_at is not None
    ]
    assert check["sessions_dosed"] == len(dosed)
    missed = by_rule.get("POST_DOSE_BP_MISSED", 0)
    in_window = check["in_window"]
    assert in_window <= len(dosed) - missed  # a session in its window raised no miss


def test_report_as_html_and_pdf_with_server_side_charts(month: Any) -> None:
    client, tokens, _ = month
    token = tokens["staff-1"]
    numbers = _get(
        client, token, "/v1/reports/compliance", clinic="clinic-01", month=MONTH, format="json"
    ).json()
    page = _get(client, token, "/v1/reports/compliance", clinic="clinic-01", month=MONTH)
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    body = page.text
    assert body.count('<img src="data:image/png;base64,') == 4
    assert "<style" not in body and "<script" not in body
    assert f"<td>{numbers['sessions']}</td>" in body
    for rule in numbers["violations_by_rule"]:
        assert rule in body
    css = client.get("/v1/reports/report.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")

    r = client.get(
        "/v1/reports/compliance",
        params={"clinic": "clinic-01", "month": MONTH},
        headers={"Authorization": f"Bearer {token}", "Accept": "application/pdf"},
    )
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    from pdfminer.high_level import extract_text

    text = " ".join(extract_text(io.BytesIO(r.content)).split())
    assert f"Sessions monitored {numbers['sessions']}" in text
    ack = numbers["critical_acknowledgement"]
    assert f"{ack['median_minutes']:g} min / {ack['p90_minutes']:g} min" in text
    forms = numbers["forms"]
    assert f"Forms submitted within 7 days {forms['submitted_within_7_days']} of" in text
    assert f"Open items to fix ({numbers['open_items_total']})" in text
    if os.environ.get("REMSGUARD_UPDATE_DOCS_SCREENSHOT") == "1":
        _png(r.content, ROOT / "docs" / "compliance-report.png")


def test_report_is_clinic_scoped_and_checks_its_month(month: Any) -> None:
    client, tokens, _ = month
    staff = {"Authorization": f"Bearer {tokens['staff-1']}"}
    path = "/v1/reports/compliance"
    other = client.get(path, params={"clinic": "clinic-02", "month": MONTH}, headers=staff)
    assert other.status_code == 403
    assert client.get(path, params={"clinic": "clinic-01", "month": MONTH}).status_code == 401
    for bad in ("2026-13", "26-11-1", "2026/11", "1999-12"):
        r = client.get(path, params={"clinic": "clinic-01", "month": bad}, headers=staff)
        assert r.status_code in (400, 422), (bad, r.text)
