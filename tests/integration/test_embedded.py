"""Embedded mode end to end: `remsguard up` as a real process, HTTP on 127.0.0.1.

- A simulated clinic day posted over HTTP raises exactly the alerts `remsguard replay` raises
  on the same file (alert ids and full alert JSON).
- Bad input at the HTTP edge gets a clear 4xx, never a 5xx.
- SIGTERM stops cleanly; a restart serves the same alerts, nothing twice.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from .embedded_support import (
    NDJSON,
    Up,
    batches,
    core_alert,
    event,
    ndjson,
    remsguard,
    start_up,
)

pytestmark = pytest.mark.timeout(300)


def _simulated_day(path: Path, start: datetime, seed: int) -> list[bytes]:
    done = remsguard(
        "simulate",
        "--seed",
        str(seed),
        "--start",
        start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "--clinics",
        "3",
        "--chairs",
        "3",
        "--sessions-per-chair",
        "4",
        "--early-discharge-rate",
        "0.15",
        "--missed-check-rate",
        "0.15",
        "--missing-pre-dose-bp-rate",
        "0.1",
        "--bp-crisis-rate",
        "0.15",
        "--desaturation-rate",
        "0.15",
        "--dropout-rate",
        "0.15",
        "--duplicate-rate",
        "0.05",
        "--malformed-rate",
        "0.02",
        "--out",
        str(path),
        "--manifest",
        str(path.with_suffix(".manifest.json")),
    )
    assert done.returncode == 0, done.stderr
    return path.read_bytes().splitlines()


def _replay(path: Path, until: datetime | None = None) -> list[dict[str, object]]:
    args = ["replay", str(path)]
    if until is not None:
        args += ["--until", until.strftime("%Y-%m-%dT%H:%M:%S.%fZ")]
    done = remsguard(*args)
    assert done.returncode == 0, done.stderr
    return [orjson.loads(line) for line in done.stdout.splitlines() if line.strip()]


def _by_id(alerts: list[dict[str, object]]) -> dict[object, dict[str, object]]:
    found = {alert["alert_id"]: alert for alert in alerts}
    assert len(found) == len(alerts), "an alert id appears twice"
    return found


def test_posted_scenario_raises_the_alerts_replay_raises(tmp_path: Path) -> None:
    """Events of two days ago: the wall clock decides every deadline, as replay with
    `--until now` does."""
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(days=2)
    scenario = tmp_path / "day.jsonl"
    lines = _simulated_day(scenario, start, seed=12)

    up = start_up(tmp_path / "data")
    try:
        counts = {"accepted": 0, "duplicates": 0, "rejected": 0}
        # Past events arrive long after their time: with several requests, the live clock would
        # decide deadlines between them (rightly: that is what "late" means live), so the
        # whole day goes in one request, and replay decides at --until now.
        for batch in batches(lines, len(lines)):
            response = up.post(ndjson(batch))
            assert response.status_code == 200, response.text
            body = response.json()
            assert len(body["results"]) == len([line for line in batch if line.strip()])
            for key in counts:
                counts[key] += body[key]
        assert counts["accepted"] > 1000
        assert counts["duplicates"] > 0 and counts["rejected"] > 0
        served = up.alerts()
        until = datetime.now(UTC)
    finally:
        assert up.stop() == 0, up.log

    expected = _replay(scenario, until)
    assert len(expected) > 10
    served_core = _by_id([core_alert(a) for a in served])
    assert set(served_core) == set(_by_id(expected))
    assert served_core == _by_id(expected)
    assert all(alert["status"] == "open" for alert in served)


def test_restart_serves_the_same_alerts_and_keeps_the_tokens(tmp_path: Path) -> None:
    data = tmp_path / "data"
    up = start_up(data)
    tokens_file = data / "first-run-tokens.txt"
    assert stat.S_IMODE(os.stat(tokens_file).st_mode) == 0o600
    assert sorted(up.tokens) == ["admin", "device"]
    tokens = tokens_file.read_bytes()
    t0 = datetime.now(UTC) - timedelta(hours=3)

    def at(minutes: float) -> str:
        return (t0 + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")

    lines = [
        event("session.opened", "o1", "s1", at(-10), {"patient_ref": "p1"}),
        event(
            "dose.administered",
            "d1",
            "s1",
            at(0),
            {"drug": "esketamine", "route": "intranasal", "dose_mg": 56},
        ),
        event("vitals.recorded", "v1", "s1", at(5), {"systolic": 190, "diastolic": 100}),
    ]
    try:
        assert up.post(ndjson(lines)).json()["accepted"] == 3
        first = up.alerts()
        assert {"PRE_DOSE_BP_MISSING", "BP_CRISIS", "POST_DOSE_BP_MISSED"} <= {
            a["rule"] for a in first
        }
    finally:
        assert up.stop() == 0, up.log

    again = start_up(data)
    try:
        assert again.alerts() == first
        assert again.post(ndjson(lines)).json()["duplicates"] == 3
        assert again.alerts() == first
    finally:
        assert again.stop() == 0, again.log
    assert tokens_file.read_bytes() == tokens
    verified = remsguard("audit", "verify", "--db", f"sqlite:///{data / 'remsguard.db'}")
    assert verified.returncode == 0, verified.stdout + verified.stderr


@pytest.fixture(scope="module")
def small_limit_up(tmp_path_factory: pytest.TempPathFactory) -> object:
    data = tmp_path_factory.mktemp("edge") / "data"
    # HTTP_DOCS: the device-token test walks every operation of /openapi.json (off by default)
    env = {"REMSGUARD_INGEST_MAX_BODY_BYTES": str(64 * 1024), "REMSGUARD_HTTP_DOCS": "true"}
    up = start_up(data, env=env)
    yield up
    assert up.stop() == 0, up.log


DAY = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()  # within the horizon
VALID = event("session.opened", "e-ok", "s-edge", f"{DAY}T09:00:00Z", {"patient_ref": "p"})


@pytest.mark.parametrize(
    ("name", "headers", "body", "status", "code"),
    [
        ("no token", {"Authorization": ""}, VALID, 401, "unauthenticated"),
        ("wrong token", {"Authorization": "Bearer nope"}, VALID, 401, "unauthenticated"),
        ("not bearer", {"Authorization": "Basic YTpi"}, VALID, 401, "unauthenticated"),
        ("empty bearer", {"Authorization": "Bearer"}, VALID, 401, "unauthenticated"),
        ("text/plain", {"Content-Type": "text/plain"}, VALID, 415, "unsupported_media_type"),
        ("no content type", {"Content-Type": ""}, VALID, 415, "unsupported_media_type"),
        ("form", {"Content-Type": "application/x-www-form-urlencoded"}, b"a=1", 415, None),
        ("invalid JSON", {"Content-Type": "application/json"}, b'[{"a": ', 400, "invalid_json"),
        ("not UTF-8", {"Content-Type": "application/json"}, b"[\xff\xfe]", 400, "invalid_json"),
        ("JSON scalar", {"Content-Type": "application/json"}, b"42", 400, "not_an_array"),
        ("empty body", {"Content-Type": NDJSON}, b"", 400, "empty_body"),
        ("blank body", {"Content-Type": "application/json"}, b"  \n", 400, "empty_body"),
        ("oversized", {"Content-Type": NDJSON}, VALID + b"\n" * (65 * 1024), 413, None),
        (
            "oversized array",
            {"Content-Type": "application/json"},
            b"[" + b",".join([VALID] * 1000) + b"]",
            413,
            "body_too_large",
        ),
    ],
)
def test_bad_requests_get_a_clear_4xx(
    small_limit_up: Up,
    name: str,
    headers: dict[str, str],
    body: bytes,
    status: int,
    code: str | None,
) -> None:
    up = small_limit_up
    sent = {"Content-Type": NDJSON, **up.auth("device"), **headers}
    sent = {key: value for key, value in sent.items() if value}  # "": leave the header out
    response = up.client.post(f"{up.base}/v1/events", content=body, headers=sent)
    assert response.status_code == status, (name, response.text)
    if code is not None:
        assert response.json()["error"] == code
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert up.client.get(f"{up.base}/healthz").status_code == 200


def test_bad_events_are_rejected_one_by_one(small_limit_up: Up) -> None:
    up = small_limit_up
    body = orjson.dumps(
        [
            orjson.loads(
                event("session.opened", "a1", "s-arr", f"{DAY}T09:00:00Z", {"patient_ref": "p"})
            ),
            orjson.loads(
                event("session.opened", "a1", "s-arr", f"{DAY}T09:00:00Z", {"patient_ref": "p"})
            ),
            17,
            {"type": "vitals.recorded", "event_id": "a2"},
            {"type": "nope", "event_id": "a3", "session_id": "s-arr", "clinic_id": "c1"},
            orjson.loads(event("vitals.recorded", "a4", "s-arr", f"{DAY}T09:01:00", {"spo2": 97})),
        ]
    )
    response = up.post(body, "application/json; charset=utf-8")
    assert response.status_code == 200, response.text
    result = response.json()
    assert [r["outcome"] for r in result["results"]] == [
        "accepted",
        "duplicate",
        "rejected",
        "rejected",
        "rejected",
        "rejected",
    ]
    assert [r.get("reason") for r in result["results"][2:]] == [
        "not_an_object",
        "missing_field",
        "unknown_type",
        "invalid_time",
    ]
    assert (result["accepted"], result["duplicates"], result["rejected"]) == (1, 1, 4)

    huge = event("vitals.recorded", "big", "s-arr", f"{DAY}T09:02:00Z", {"spo2": 97})
    huge = huge[:-1] + b',"pad":"' + b"x" * 70_000 + b'"}'
    lines = [b"not json", huge[: 60 * 1024], b"", b"  "]
    response = up.post(ndjson(lines))
    assert response.status_code == 200, response.text
    assert [(r["line"], r["reason"]) for r in response.json()["results"]] == [
        (1, "invalid_json"),
        (2, "invalid_json"),
    ]


def test_roles_and_query_parameters(small_limit_up: Up) -> None:
    up = small_limit_up
    url = f"{up.base}/v1/alerts"
    get = up.client.get
    assert get(url).status_code == 401
    assert get(url, headers=up.auth("device")).status_code == 403
    assert get(url, headers=up.auth("admin")).status_code == 200
    admin = up.auth("admin")
    for params, status in [
        ({"limit": 10_000}, 200),
        ({"limit": 10_001}, 422),
        ({"limit": 0}, 422),
        ({"limit": "x"}, 422),
        ({"since": "yesterday"}, 422),
        ({"since": "2026-11-23T09:00:00"}, 400),
        ({"since": "2026-11-23T09:00:00Z"}, 200),
        ({"cursor": "not-a-cursor"}, 400),
        ({"cursor": "W10"}, 400),
        ({"session": "s1", "clinic": "c1", "rule": "BP_CRISIS"}, 200),
        ({"session": ""}, 422),
    ]:
        response = get(url, params=params, headers=admin)
        assert response.status_code == status, (params, response.text)
    # an admin may post events too; the metrics and health endpoints need no token
    assert up.post(VALID, role="admin").status_code == 200
    assert get(f"{up.base}/metrics").status_code == 200
    assert "remsguard_events_consumed_total" in get(f"{up.base}/metrics").text


def test_a_device_token_may_only_post_events(small_limit_up: Up) -> None:
    """Every endpoint of the OpenAPI document but the ingest doors (`POST /v1/events` and the
    FHIR writes) refuses a device token; `/healthz` and FHIR's `metadata` are open."""
    up = small_limit_up
    spec = up.client.get(f"{up.base}/openapi.json").json()
    device = up.auth("device")
    checked = doors = 0
    for path, operations in spec["paths"].items():
        url = up.base + path.replace("{", "").replace("}", "")  # any value for path params
        for method in operations:
            if path in ("/healthz", "/fhir/r4/metadata"):  # open
                continue
            response = up.client.request(method.upper(), url, headers=device)
            if (method, path) == ("post", "/v1/events") or (
                path.startswith("/fhir/r4") and method in ("post", "put")
            ):
                assert response.status_code != 403, (method, path, response.text)
                doors += 1
                continue
            assert response.status_code == 403, (method, path, response.text)
            checked += 1
    assert checked >= 15 and doors >= 5
    assert up.post(VALID, role="device").status_code == 200


def test_up_simulate_feeds_its_own_ingest(tmp_path: Path) -> None:
    """`remsguard up --simulate`: the simulator posts with its own device token; alerts come."""
    up = start_up(tmp_path / "data", args=["--simulate", "--speed", "600"])
    try:
        deadline = time.monotonic() + 90
        alerts: list[dict[str, object]] = []
        while not alerts:
            assert time.monotonic() < deadline, f"no alert from the simulator:\n{up.log}"
            time.sleep(0.5)
            alerts = up.alerts()
        metrics = up.client.get(f"{up.base}/metrics").text
        assert 'remsguard_events_consumed_total{topic="http",type="dose.administered"}' in metrics
        # The process runs on the simulation's clock: its events are not from the future.
        assert 'reason="occurred_in_future"' not in metrics
    finally:
        assert up.stop() == 0, up.log
    assert "this process runs on the simulation's clock" in up.log_path.read_text()


def _wait_until(what: str, check: Callable[[], bool], up: Up, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{up.log}"
        time.sleep(0.2)


def test_form_deadline_and_session_summaries(tmp_path: Path) -> None:
    """Embedded mode runs the form deadline and keeps session summaries: a session discharged
    more than 7 days ago (event time) without a submitted form gets MONITORING_FORM_OVERDUE
    exactly once (also across a restart); one discharged 2 days ago and one still open get
    none; the compliance summary and patient_ref filters see the sessions."""
    now = datetime.now(UTC).replace(microsecond=0)
    overdue_day = now - timedelta(days=9)
    recent_day = now - timedelta(days=2)

    def session(sid: str, patient: str, t0: datetime, discharged: bool) -> list[bytes]:
        def at(minutes: float) -> str:
            return (t0 + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")

        lines = [
            event("session.opened", f"{sid}-o", sid, at(-10), {"patient_ref": patient}),
            event("vitals.recorded", f"{sid}-v0", sid, at(-5), {"systolic": 120, "diastolic": 80}),
            event(
                "dose.administered",
                f"{sid}-d",
                sid,
                at(0),
                {"drug": "esketamine", "route": "intranasal", "dose_mg": 56},
            ),
            event("vitals.recorded", f"{sid}-v40", sid, at(40), {"systolic": 130, "diastolic": 85}),
        ]
        if discharged:
            lines.append(
                event(
                    "session.discharged",
                    f"{sid}-x",
                    sid,
                    at(130),
                    {"staff_id": "rn-1", "clinically_stable": True},
                )
            )
        return lines

    lines = [
        *session("old", "pt-old", overdue_day, discharged=True),
        *session("recent", "pt-recent", recent_day, discharged=True),
        *session("open", "pt-open", overdue_day, discharged=False),
    ]
    data = tmp_path / "data"
    env = {"REMSGUARD_FORM_CHECK_SECONDS": "0.3"}
    up = start_up(data, env=env)
    admin = up.auth("admin")

    def overdue() -> list[dict[str, object]]:
        return overdue_alerts(up)

    def summary_days() -> list[dict[str, object]]:
        response = up.client.get(
            f"{up.base}/v1/compliance/summary",
            params={"since": (overdue_day - timedelta(days=1)).date().isoformat()},
            headers=admin,
        )
        assert response.status_code == 200, response.text
        days: list[dict[str, object]] = response.json()["days"]
        return days

    try:
        assert up.post(ndjson(lines)).json()["accepted"] == len(lines)
        _wait_until("MONITORING_FORM_OVERDUE", lambda: bool(overdue()), up)
        time.sleep(1.5)  # several more checks: still one alert
        (alert,) = overdue()
        assert alert["session_id"] == "old" and alert["severity"] == "warning"
        assert alert["clinic_id"] == "c1" and alert["protocol"] == "spravato-rems"

        # The summary: each session on the day it opened; the old one's form is overdue.
        _wait_until("two clinic-days in the summary", lambda: len(summary_days()) == 2, up)
        by_day = {d["day"]: d for d in summary_days()}
        old_day = by_day[(overdue_day - timedelta(minutes=10)).date().isoformat()]
        assert old_day["clinic_id"] == "c1" and old_day["sessions"] == 2
        assert old_day["forms_overdue"] == 1
        violations = old_day["violations_by_rule"]
        assert isinstance(violations, dict) and violations["MONITORING_FORM_OVERDUE"] == 1
        recent = by_day[(recent_day - timedelta(minutes=10)).date().isoformat()]
        assert recent["sessions"] == 1 and recent["forms_overdue"] == 0

        # patient_ref filters (from the summaries) on audit records and alerts.
        def by_patient(path: str, key: str, patient: str) -> list[dict[str, object]]:
            response = up.client.get(
                f"{up.base}{path}", params={"patient_ref": patient, "limit": 1000}, headers=admin
            )
            assert response.status_code == 200, response.text
            items: list[dict[str, object]] = response.json()[key]
            return items

        records = by_patient("/v1/audit/records", "records", "pt-old")
        assert records and {r["session_id"] for r in records} == {"old"}
        assert {a["session_id"] for a in by_patient("/v1/audit/alerts", "alerts", "pt-old")} == {
            "old"
        }
        assert "MONITORING_FORM_OVERDUE" in {
            a["rule"] for a in by_patient("/v1/audit/alerts", "alerts", "pt-old")
        }
        assert {r["session_id"] for r in by_patient("/v1/audit/records", "records", "pt-open")} == {
            "open"
        }
        assert by_patient("/v1/audit/records", "records", "pt-nobody") == []
        form = up.client.get(f"{up.base}/v1/sessions/recent/form", headers=admin)
        assert form.status_code == 200, form.text
    finally:
        assert up.stop() == 0, up.log

    again = start_up(data, env=env)
    try:
        time.sleep(1.5)
        assert [a["session_id"] for a in overdue_alerts(again)] == ["old"]
    finally:
        assert again.stop() == 0, again.log


def overdue_alerts(up: Up) -> list[dict[str, object]]:
    return [a for a in up.alerts() if a["rule"] == "MONITORING_FORM_OVERDUE"]
