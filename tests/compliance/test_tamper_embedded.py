"""Finding 5 of issue 13, end to end: a real `remsguard up` data directory, tampered as someone
with file access would, then `remsguard audit verify --data-dir` (which finds the database and
the public key written beside the tokens) and the served form."""

from __future__ import annotations

import shutil
import sqlite3
import stat
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from integration.embedded_support import Up, event, ndjson, remsguard, start_up

SID = "t-s1"


def _session(t0: datetime) -> list[bytes]:
    def at(minutes: float) -> str:
        return (t0 + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")

    return [
        event("session.opened", "t-open", SID, at(-10), {"patient_ref": "pt-9"}),
        event("vitals.recorded", "t-bp0", SID, at(-5), {"systolic": 117, "diastolic": 74}),
        event(
            "dose.administered",
            "t-dose",
            SID,
            at(0),
            {"drug": "esketamine", "route": "intranasal", "dose_mg": 56},
        ),
        event("vitals.recorded", "t-bp1", SID, at(35), {"systolic": 185, "diastolic": 112}),
        event(
            "session.discharged",
            "t-out",
            SID,
            at(130),
            {"staff_id": "rn-1", "clinically_stable": True},
        ),
    ]


def _wait(what: str, check: Callable[[], bool], up: Up, timeout: float = 20.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{up.log}"
        time.sleep(0.2)


def _verify(data: Path) -> tuple[int, str]:
    done = remsguard("audit", "verify", "--data-dir", str(data))
    return done.returncode, done.stdout + done.stderr


def _sql(path: Path, *statements: str) -> None:
    with closing(sqlite3.connect(path)) as db:
        for name in ("no_update", "no_delete"):
            db.execute(f"DROP TRIGGER IF EXISTS audit_tree_heads_{name}")
            db.execute(f"DROP TRIGGER IF EXISTS audit_records_{name}")
        for statement in statements:
            db.execute(statement)
        db.commit()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory after one run: a session with a BP crisis, an acknowledged alert, a
    submitted form; stopped cleanly (its last head signed at shutdown)."""
    data = tmp_path_factory.mktemp("embedded") / "data"
    up = start_up(data)
    admin = up.auth("admin")
    try:
        assert "public key" in up.log, up.log
        t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
        assert up.post(ndjson(_session(t0))).json()["accepted"] == 5
        crisis = next(a for a in up.alerts() if a["rule"] == "BP_CRISIS")
        acked = up.client.post(
            f"{up.base}/v1/alerts/{crisis['alert_id']}/acknowledge", headers=admin
        )
        assert acked.status_code == 200, acked.text

        def submitted() -> bool:
            r = up.client.post(f"{up.base}/v1/sessions/{SID}/form/submit", headers=admin)
            return r.status_code == 200

        _wait("the form row", submitted, up)
        form = up.client.get(f"{up.base}/v1/sessions/{SID}/form", headers=admin).json()
        assert form["fields"]["dose_mg"]["value"] == 56
        assert form["submission"]["submitted_by"] == "admin"
    finally:
        assert up.stop() == 0, up.log
    private = data / "tree-head-key.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert (data / "tree-head-key.pub.pem").read_bytes().startswith(b"-----BEGIN PUBLIC KEY")
    code, out = _verify(data)
    assert code == 0 and "signatures checked" in out, out
    return data


@pytest.fixture
def data(pristine: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(pristine, copy)
    return copy


DOSE_560 = (
    "UPDATE session_events SET payload = replace(payload, '\"dose_mg\":56', '\"dose_mg\":560') "
    "WHERE event_id = 't-dose'"
)
TAMPERS = {
    "event content: dose 56 -> 560": DOSE_560,
    "event content: pre-dose BP 117/74 -> 199/99": (
        "UPDATE session_events SET payload = replace(replace(payload, '\"systolic\":117', "
        "'\"systolic\":199'), '\"diastolic\":74', '\"diastolic\":99') WHERE event_id = 't-bp0'"
    ),
    "every alert row deleted": "DELETE FROM alerts",
    "alerts resolved by intruder": (
        "UPDATE alerts SET status = 'resolved', resolved_by = 'intruder', "
        "resolved_at = '2026-01-01 00:00:00.000000'"
    ),
    "form submission undone": "UPDATE monitoring_forms SET submitted_at = NULL",
    "every signed head deleted": "DELETE FROM audit_tree_heads",
}


@pytest.mark.parametrize("statement", TAMPERS.values(), ids=TAMPERS.keys())
def test_verify_catches_the_tamper(data: Path, statement: str) -> None:
    _sql(data / "remsguard.db", statement)
    code, out = _verify(data)
    assert code == 1 and "FAILED" in out, out


def test_the_served_form_ignores_edited_events_and_the_journal(data: Path) -> None:
    _sql(data / "remsguard.db", DOSE_560)
    with closing(sqlite3.connect(data / "journal.db")) as journal:
        journal.execute("UPDATE events SET raw = replace(raw, '\"dose_mg\":56', '\"dose_mg\":560')")
        journal.commit()
    up = start_up(data)
    try:
        form = up.client.get(f"{up.base}/v1/sessions/{SID}/form", headers=up.auth("admin"))
        body = form.json()
        assert body["unvouched_events"] == ["t-dose"], body
        assert body["fields"]["dose_mg"]["missing"] is True  # never 560
        assert "560" not in form.text
        timeline = up.client.get(
            f"{up.base}/v1/sessions/{SID}/timeline", headers=up.auth("admin")
        ).json()
        shown = {e["event"]["event_id"]: e["event"] for e in timeline["entries"] if e["event"]}
        assert "t-dose" not in shown and shown["t-bp0"]["data"]["systolic"] == 117
    finally:
        assert up.stop() == 0, up.log
