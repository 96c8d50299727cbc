"""Issue 13, findings 1-3 and 6 (conflicting duplicates), against a real `remsguard up`.

1. Times that overflowed date arithmetic were journaled and bricked every restart.
2. One future-dated event moved the one engine clock of every clinic, for good.
3. A device of clinic A wrote into clinic B's session.
Plus: a journaled record recovery cannot apply is quarantined, and start-up goes on.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from integration.embedded_support import Up, ndjson, remsguard, start_up

JSON = "application/json"


def _at(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _event(
    type_: str, event_id: str, session: str, at: str, data: Mapping[str, Any], clinic: str
) -> dict[str, Any]:
    return {
        "type": type_,
        "event_id": event_id,
        "session_id": session,
        "clinic_id": clinic,
        "occurred_at": at,
        "data": dict(data),
    }


def _post(up: Up, events: list[dict[str, Any]], token: str | None = None) -> list[dict[str, Any]]:
    headers = {"Content-Type": JSON, "Authorization": f"Bearer {token or up.tokens['device']}"}
    response = up.client.post(f"{up.base}/v1/events", content=orjson.dumps(events), headers=headers)
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


def _rules(up: Up, session: str) -> set[str]:
    return {str(alert["rule"]) for alert in up.alerts(session=session)}


def _missed_session(session: str, clinic: str, dose_minutes_ago: int) -> list[dict[str, Any]]:
    """Opened and dosed long enough ago that the 40-minute check and the vitals are overdue."""
    now = datetime.now(UTC)
    dose = now - timedelta(minutes=dose_minutes_ago)
    return [
        _event("session.opened", f"{session}-o", session, _at(dose - timedelta(minutes=10)),
               {"patient_ref": "p-1"}, clinic),
        _event("vitals.recorded", f"{session}-v", session, _at(dose - timedelta(minutes=5)),
               {"systolic": 117, "diastolic": 74, "spo2": 98}, clinic),
        _event("dose.administered", f"{session}-d", session, _at(dose),
               {"drug": "esketamine", "route": "intranasal", "dose_mg": 56}, clinic),
    ]  # fmt: skip


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    process = start_up(tmp_path / "data")
    try:
        yield process
    finally:
        process.stop()


def test_overflowing_times_are_rejected_before_the_journal_and_restart_works(
    up: Up, tmp_path: Path
) -> None:
    """Finding 1: year 0001, or 9999-12-31T22:00Z + a BP at 22:05 + a dose at 23:30."""
    opened = {"patient_ref": "p"}
    dose = {"drug": "esketamine", "route": "intranasal", "dose_mg": 56}
    results = _post(
        up,
        [
            _event("session.opened", "y1-o", "s-y1", "0001-01-01T00:00:00Z", opened, "c1"),
            _event("dose.administered", "y1-d", "s-y1", "0001-01-01T00:05:00Z", dose, "c1"),
            _event("session.opened", "y9-o", "s-y9", "9999-12-31T22:00:00Z", opened, "c1"),
            _event("vitals.recorded", "y9-v", "s-y9", "9999-12-31T22:05:00Z",
                   {"systolic": 120, "diastolic": 80}, "c1"),
            _event("dose.administered", "y9-d", "s-y9", "9999-12-31T23:30:00Z", dose, "c1"),
            _event("vitals.recorded", "y9-z", "s-y9", "9999-12-31T23:59:59-23:59",
                   {"spo2": 97}, "c1"),
        ],
    )  # fmt: skip
    assert [(r["outcome"], r["reason"]) for r in results] == [("rejected", "invalid_time")] * 6
    assert up.stop() == 0, up.log
    again = start_up(up.data_dir, port=up.port)  # nothing of it was journaled: starts cleanly
    assert again.stop() == 0, again.log


def test_a_future_dated_event_is_refused_and_deadlines_still_fire(up: Up) -> None:
    """Finding 2: a vitals event at 9999-12-31T23:59:59Z (or an hour ahead) is refused and
    leaves the clock alone: a session dosed 190 minutes ago still gets its alerts, across a
    restart."""
    far = [
        _event("vitals.recorded", "f1", "s-f", "9999-12-31T23:59:59Z", {"spo2": 97}, "c1"),
        _event("vitals.recorded", "f2", "s-f", _at(datetime.now(UTC) + timedelta(hours=1)),
               {"spo2": 97}, "c1"),
        _event("vitals.recorded", "f3", "s-f", _at(datetime.now(UTC) - timedelta(days=45)),
               {"spo2": 97}, "c1"),
    ]  # fmt: skip
    reasons = [r.get("reason") for r in _post(up, far)]
    assert reasons == ["invalid_time", "occurred_in_future", "too_old"]
    assert all(r["outcome"] == "accepted" for r in _post(up, _missed_session("s-late", "c1", 190)))
    assert {"VITALS_GAP", "POST_DOSE_BP_MISSED"} <= _rules(up, "s-late")

    assert up.stop() == 0, up.log
    again = start_up(up.data_dir, port=up.port)
    try:
        assert all(
            r["outcome"] == "accepted" for r in _post(again, _missed_session("s-after", "c2", 190))
        )
        assert {"VITALS_GAP", "POST_DOSE_BP_MISSED"} <= _rules(again, "s-after")
    finally:
        assert again.stop() == 0, again.log


def test_a_device_clock_running_fast_moves_no_other_clinics_deadline(up: Up) -> None:
    """Finding 2's honest variant: clinic A's device runs 4 minutes fast (accepted, within the
    5-minute skew); clinic B's 40-minute check comes due in about two minutes and must not be
    decided early. It did fire at once when event times moved the one engine clock."""
    assert all(
        r["outcome"] == "accepted" for r in _post(up, _missed_session("s-b", "clinic-b", 53))
    )
    assert "POST_DOSE_BP_MISSED" not in _rules(up, "s-b")  # due at dose + 50 + 5 minutes
    fast = _at(datetime.now(UTC) + timedelta(minutes=4))
    results = _post(up, [_event("vitals.recorded", "a1", "s-a", fast, {"spo2": 97}, "clinic-a")])
    assert results[0]["outcome"] == "accepted"
    assert "POST_DOSE_BP_MISSED" not in _rules(up, "s-b")
    # The case that must fire: the same check, really overdue.
    assert all(
        r["outcome"] == "accepted" for r in _post(up, _missed_session("s-c", "clinic-b", 60))
    )
    assert "POST_DOSE_BP_MISSED" in _rules(up, "s-c")


def _principal(up: Up, name: str, role: str, clinic: str) -> str:
    db = f"sqlite:///{up.data_dir / 'remsguard.db'}"
    done = remsguard(
        "principals", "create", "--name", name, "--role", role, "--clinic", clinic, "--db", db
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_a_device_of_one_clinic_cannot_write_into_another_clinics_session(up: Up) -> None:
    """Finding 3: a device token bound to clinic-01 posted vitals 250/150 and a discharge into
    clinic-02's session; clinic-02 got BP alerts and its form showed 250/150."""
    admin = up.tokens["admin"]
    _post(up, _missed_session("s-02", "clinic-02", 20), token=admin)
    device01 = _principal(up, "device-01", "device", "clinic-01")
    auditor01 = _principal(up, "auditor-01", "auditor", "clinic-01")
    at = _at(datetime.now(UTC) - timedelta(minutes=1))
    hostile = {"systolic": 250, "diastolic": 150}
    results = _post(
        up,
        [
            _event("vitals.recorded", "x1", "s-02", at, hostile, "clinic-01"),
            _event("session.discharged", "x2", "s-02", at,
                   {"staff_id": "n-1", "clinically_stable": True}, "clinic-01"),
            _event("vitals.recorded", "x3", "s-02", at, hostile, "clinic-02"),
        ],
        token=device01,
    )  # fmt: skip
    assert [r.get("reason") for r in results] == [
        "session_of_another_clinic",
        "session_of_another_clinic",
        "clinic_not_permitted",
    ]
    assert not {"BP_CRISIS", "BP_RISE"} & _rules(up, "s-02")
    # The device's own clinic still works (a case that must be accepted).
    ok = _post(up, _missed_session("s-01", "clinic-01", 20), token=device01)
    assert all(r["outcome"] == "accepted" for r in ok)

    form = up.client.get(f"{up.base}/v1/sessions/s-02/form", headers=up.auth("admin"))
    assert form.status_code == 200, form.text
    assert b"250" not in form.content
    # clinic-01's auditor sees nothing of clinic-02's session but its own device's refusals.
    response = up.client.get(
        f"{up.base}/v1/audit/records",
        params={"session": "s-02"},
        headers={"Authorization": f"Bearer {auditor01}"},
    )
    assert response.status_code == 200, response.text
    records = response.json()["records"]
    assert records and {(r["kind"], r["clinic_id"]) for r in records} == {
        ("event.rejected", "clinic-01")
    }


def test_same_event_id_with_other_content_is_a_conflicting_duplicate(up: Up) -> None:
    """Finding 6: the same event id with different content was answered `duplicate` (2xx) and
    silently dropped; now it is rejected, and the original stays."""
    session = _missed_session("s-dup", "c1", 20)
    assert all(r["outcome"] == "accepted" for r in _post(up, session))
    changed = dict(session[2], data={**session[2]["data"], "dose_mg": 560})
    same_instant = dict(session[2], occurred_at=session[2]["occurred_at"].replace("Z", "+00:00"))
    results = _post(up, [changed, same_instant, session[2]])
    assert [(r["outcome"], r.get("reason")) for r in results] == [
        ("rejected", "conflicting_duplicate"),
        ("duplicate", None),
        ("duplicate", None),
    ]
    # Within one request too: the first wins, the conflicting one is refused.
    fresh = _event("vitals.recorded", "n1", "s-dup", session[1]["occurred_at"], {"spo2": 96}, "c1")
    results = _post(up, [fresh, dict(fresh, data={"spo2": 80})])
    assert [r.get("reason") for r in results] == [None, "conflicting_duplicate"]
    assert "SPO2_CRITICAL" not in _rules(up, "s-dup") and "SPO2_LOW" not in _rules(up, "s-dup")
    metrics = up.client.get(f"{up.base}/metrics").text
    assert "remsguard_conflicting_duplicates_total 2.0" in metrics


def test_a_journaled_record_recovery_cannot_apply_is_quarantined(up: Up) -> None:
    """An event an earlier version journaled (year 0001, which overflowed) no longer stops the
    service starting: recovery quarantines it with its reason and goes on."""
    assert all(r["outcome"] == "accepted" for r in _post(up, _missed_session("s-q", "c1", 190)))
    assert up.stop() == 0, up.log
    dose = {"drug": "esketamine", "route": "intranasal", "dose_mg": 56}
    planted = _event("dose.administered", "bad", "s-q", "0001-01-01T00:00:00Z", dose, "c1")
    with sqlite3.connect(up.data_dir / "journal.db") as db:
        db.execute(
            "INSERT INTO events (session_id, event_id, clock_us, received_us, raw) "
            "VALUES (?, ?, ?, ?, ?)",
            ("s-q", "bad", 253_402_300_799_000_000 * 10, 0, ndjson([orjson.dumps(planted)])),
        )
    again = start_up(up.data_dir, port=up.port)
    try:
        assert {"VITALS_GAP", "POST_DOSE_BP_MISSED"} <= _rules(again, "s-q")
        metrics = again.client.get(f"{again.base}/metrics").text
        assert "remsguard_journal_quarantined_total 1.0" in metrics
    finally:
        assert again.stop() == 0, again.log
    assert "journal.event_quarantined" in again.log_path.read_text()
    with sqlite3.connect(up.data_dir / "journal.db") as db:
        (reason,) = db.execute("SELECT reason FROM quarantine").fetchone()
    assert reason == "invalid_time"
