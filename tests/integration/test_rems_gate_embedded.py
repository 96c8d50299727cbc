"""The REMS gate end to end in embedded mode: register through the API, post sessions, see
(or not) PATIENT_NOT_ENROLLED / SETTING_NOT_CERTIFIED; a change applies from the next event."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from .embedded_support import Up, event, ndjson, start_up

GATE = ("PATIENT_NOT_ENROLLED", "SETTING_NOT_CERTIFIED")


def _stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def _session(session: str, patient: str, dose_at: datetime, clinic: str = "c1") -> bytes:
    before = dose_at - timedelta(minutes=2)
    return ndjson(
        [
            event("session.opened", f"{session}-o", session, _stamp(before),
                  {"patient_ref": patient, "protocol": "spravato-rems"}, clinic),
            event("vitals.recorded", f"{session}-v", session, _stamp(before),
                  {"systolic": 120, "diastolic": 80}, clinic),
            event("dose.administered", f"{session}-d", session, _stamp(dose_at),
                  {"drug": "esketamine", "route": "intranasal", "dose_mg": 56}, clinic),
        ]
    )  # fmt: skip


def _gate_alerts(up: Up, session: str, want: int, timeout: float = 20) -> list[tuple[str, str]]:
    deadline = time.monotonic() + timeout
    while True:
        found = [
            (a["rule"], a["evidence"][0])
            for a in up.alerts()
            if a["rule"] in GATE and a["session_id"] == session
        ]
        if len(found) >= want or time.monotonic() > deadline:
            return sorted(found)
        time.sleep(0.2)


def test_register_then_dose_sees_only_what_is_missing(tmp_path: Path) -> None:
    up = start_up(tmp_path / "data", env={"REMSGUARD_REMS_GATE": "true"})
    try:
        assert '"embedded.rems_gate"' in up.log and '"on": true' in up.log
        admin = up.auth("admin")
        today = datetime.now(UTC).replace(microsecond=0)
        put = up.client.put(
            f"{up.base}/v1/clinics/c1/certification",
            json={"certification_id": "CERT-1", "valid_from": "2026-01-01"},
            headers=admin,
        )
        assert put.status_code == 200, put.text
        enrolled = up.client.put(
            f"{up.base}/v1/clinics/c1/enrollments/pt-ok",
            json={"enrolled_on": (today - timedelta(days=10)).date().isoformat()},
            headers=admin,
        )
        assert enrolled.status_code == 200, enrolled.text

        assert up.post(_session("s-ok", "pt-ok", today)).status_code == 200
        assert up.post(_session("s-new", "pt-new", today)).status_code == 200
        assert up.post(_session("s-c2", "pt-ok", today, clinic="c2")).status_code == 200
        assert _gate_alerts(up, "s-new", 1) == [("PATIENT_NOT_ENROLLED", "s-new-d")]
        assert _gate_alerts(up, "s-c2", 2) == [
            ("PATIENT_NOT_ENROLLED", "s-c2-d"),  # enrolled at c1, not at c2
            ("SETTING_NOT_CERTIFIED", "s-c2-d"),
        ]
        assert _gate_alerts(up, "s-ok", 1, timeout=2) == []

        # Enrolled now (backdated): the alert raised stands; the next dose is judged anew.
        up.client.put(
            f"{up.base}/v1/clinics/c1/enrollments/pt-new",
            json={"enrolled_on": (today - timedelta(days=1)).date().isoformat()},
            headers=admin,
        ).raise_for_status()
        assert up.post(_session("s-new2", "pt-new", today)).status_code == 200
        assert _gate_alerts(up, "s-new2", 1, timeout=3) == []
        assert _gate_alerts(up, "s-new", 1) == [("PATIENT_NOT_ENROLLED", "s-new-d")]
    finally:
        up.stop()


def test_gate_off_checks_nothing(tmp_path: Path) -> None:
    up = start_up(tmp_path / "data", env={"REMSGUARD_REMS_GATE": "false"})
    try:
        today = datetime.now(UTC).replace(microsecond=0)
        assert up.post(_session("s1", "pt-x", today)).status_code == 200
        assert _gate_alerts(up, "s1", 1, timeout=3) == []
    finally:
        up.stop()


def test_up_simulate_registers_its_clinics_and_patients_first(tmp_path: Path) -> None:
    """With the gate on, the simulated days raise gate alerts only where the manifest says."""
    up = start_up(
        tmp_path / "data",
        args=["--simulate", "--speed", "600"],
        env={"REMSGUARD_REMS_GATE": "true"},
    )
    try:
        deadline = time.monotonic() + 90
        alerts: list[dict[str, object]] = []
        while len(alerts) < 5:
            assert time.monotonic() < deadline, f"too few alerts from the simulator:\n{up.log}"
            time.sleep(0.5)
            alerts = up.alerts()
        cert = up.client.get(
            f"{up.base}/v1/clinics/clinic-01/certification", headers=up.auth("admin")
        )
        assert cert.status_code == 200, cert.text
        manifest = orjson.loads((tmp_path / "data" / "simulation-manifest.json").read_bytes())
        left_out = {
            s["session_id"]
            for s in manifest["sessions"]
            if any(v["kind"] == "not_enrolled" for v in s["violations"])
        }
        gate = [a for a in alerts if a["rule"] in GATE]
        assert {a["session_id"] for a in gate} <= left_out
        assert all(a["rule"] == "PATIENT_NOT_ENROLLED" for a in gate)
    finally:
        up.stop()
