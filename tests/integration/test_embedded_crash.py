"""Crash safety of embedded mode: `kill -9` mid-stream, then restart.

- Every event acknowledged with a 2xx is in the journal on disk.
- No alert is lost (each one served before the kill is served after, unchanged) and none is
  duplicated; the compliance log's hash chains still verify.
- A deadline that came due while the process was down (a 40-minute check) fires once after
  the restart, and a second restart changes nothing.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest

from .embedded_support import batches, core_alert, event, ndjson, remsguard, start_up

pytestmark = pytest.mark.timeout(300)

DUE_IN_S = 8.0  # the 40-minute check of session "due" is decided this long after posting
ACKS_BEFORE_KILL = 8
SPRAVATO_DECIDED_AFTER = timedelta(minutes=50 + 5)  # until_minutes + allowed lateness


def _stamp(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _due_session(dose: datetime) -> list[bytes]:
    return [
        event("session.opened", "due-open", "due", _stamp(dose - timedelta(minutes=10)), {
            "patient_ref": "p-due"
        }),
        event("vitals.recorded", "due-bp0", "due", _stamp(dose - timedelta(minutes=5)), {
            "systolic": 122, "diastolic": 78
        }),
        event("dose.administered", "due-dose", "due", _stamp(dose), {
            "drug": "esketamine", "route": "intranasal", "dose_mg": 56
        }),
    ]  # fmt: skip


def _load(tmp_path: Path) -> list[bytes]:
    """A simulated clinic day that started five hours ago, in arrival order."""
    start = (datetime.now(UTC) - timedelta(hours=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = tmp_path / "load.jsonl"
    done = remsguard(
        "simulate", "--seed", "5", "--start", start, "--clinics", "3", "--chairs", "3",
        "--sessions-per-chair", "3", "--duplicate-rate", "0.05", "--malformed-rate", "0.01",
        "--out", str(out), "--manifest", str(tmp_path / "load.manifest.json"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [line for line in out.read_bytes().splitlines() if line.strip()]


def _ids(line: bytes) -> tuple[str, str] | None:
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return (doc["session_id"], doc["event_id"]) if isinstance(doc, dict) else None


def _journaled(data: Path) -> set[tuple[str, str]]:
    db = sqlite3.connect(data / "journal.db")
    try:
        return set(db.execute("SELECT session_id, event_id FROM events"))
    finally:
        db.close()


def _by_id(alerts: list[dict[str, object]]) -> dict[object, dict[str, object]]:
    found = {alert["alert_id"]: core_alert(alert) for alert in alerts}
    assert len(found) == len(alerts), "an alert id is served twice"
    return found


def test_kill_9_mid_stream_loses_nothing_and_late_deadlines_fire(tmp_path: Path) -> None:
    data = tmp_path / "data"
    load = _load(tmp_path)
    up = start_up(data)
    acked: list[tuple[list[bytes], dict[str, object]]] = []
    stop = threading.Event()

    def post_load() -> None:
        client = httpx.Client(timeout=10.0)
        headers = {"Content-Type": "application/x-ndjson", **up.auth("device")}
        try:
            for batch in batches(load, 40):
                if stop.is_set():
                    return
                try:
                    response = client.post(
                        f"{up.base}/v1/events", content=ndjson(batch), headers=headers
                    )
                except httpx.TransportError:
                    return  # killed
                assert response.status_code == 200, response.text
                acked.append((batch, response.json()))
        finally:
            client.close()

    try:
        dose = datetime.now(UTC) - SPRAVATO_DECIDED_AFTER + timedelta(seconds=DUE_IN_S)
        due_at = dose + SPRAVATO_DECIDED_AFTER
        assert up.post(ndjson(_due_session(dose))).json()["accepted"] == 3
        poster = threading.Thread(target=post_load, daemon=True)
        poster.start()
        deadline = time.monotonic() + 30
        while len(acked) < ACKS_BEFORE_KILL and poster.is_alive():
            assert time.monotonic() < deadline, "the load was not acknowledged in time"
            time.sleep(0.01)
        before = up.alerts()
        assert datetime.now(UTC) < due_at, "too slow: the deadline passed before the kill"
    finally:
        up.kill()  # SIGKILL: no shutdown code runs
        stop.set()
    poster.join(timeout=30)
    assert not poster.is_alive()
    assert len(acked) >= ACKS_BEFORE_KILL
    assert not any(a["rule"] == "POST_DOSE_BP_MISSED" and a["session_id"] == "due" for a in before)

    journaled = _journaled(data)
    acknowledged = 0
    for batch, body in acked:
        results = body["results"]
        assert isinstance(results, list) and len(results) == len(batch)
        for line, result in zip(batch, results, strict=True):
            if result["outcome"] in ("accepted", "duplicate"):
                ids = _ids(line)
                assert ids in journaled, f"acknowledged but not journaled: {ids}"
                acknowledged += 1
    assert acknowledged > 200

    time.sleep(max(0.0, (due_at - datetime.now(UTC)).total_seconds()) + 1.0)
    again = start_up(data)
    try:
        after = again.alerts()
        served_before, served_after = _by_id(before), _by_id(after)
        assert set(served_before) <= set(served_after), "an alert was lost"
        assert {k: served_after[k] for k in served_before} == served_before
        late = [a for a in after if a["session_id"] == "due" and a["rule"] == "POST_DOSE_BP_MISSED"]
        assert len(late) == 1
        assert late[0]["triggered_at"] > _stamp(dose)[:19]
        # the rebuilt engine knows every acknowledged event: re-sending them changes nothing
        for batch, _ in acked:
            response = again.post(ndjson(batch))
            assert response.status_code == 200
            assert response.json()["accepted"] == 0
        assert again.alerts() == after
    finally:
        assert again.stop() == 0, again.log

    third = start_up(data)
    try:
        assert third.alerts() == after
    finally:
        assert third.stop() == 0, third.log
    verified = remsguard("audit", "verify", "--db", f"sqlite:///{data / 'remsguard.db'}")
    assert verified.returncode == 0, verified.stdout + verified.stderr
