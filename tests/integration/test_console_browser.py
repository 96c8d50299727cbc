"""The staff console end to end in a real headless Chromium (Debian's `chromium`, driven by
Playwright through its executable path): `remsguard up` -> a staff member signs in -> events
that raise a critical alert are posted -> the alert is on the console within 2 seconds ->
Acknowledge -> the compliance log's audit records hold the acknowledgement with that staff
member's id. Screenshots: `artifacts/console.png` (and `docs/console.png` for the README).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from remsguard.adapters.storage import AuditQuery, ComplianceLog

from .embedded_support import event, ndjson, start_up

CHROMIUM = Path(os.environ.get("REMSGUARD_CHROMIUM", "/usr/bin/chromium"))
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} missing: run deploy/chromium/install.sh"
)


@contextmanager
def signed_in(tmp_path: Path, base: str, token: str) -> Iterator[Any]:
    """A Playwright page of the console at `base`, signed in with `token` and following the
    live stream, in headless Chromium at a landscape tablet's size."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=ARGS,
            viewport={"width": 1024, "height": 768},
        )
        try:
            page = context.new_page()
            page.goto(f"{base}/console")
            page.fill("#token", token)
            page.click("#sign-in button[type=submit]")
            page.wait_for_selector("#console:not([hidden])", timeout=10_000)
            page.wait_for_selector("#live:not(.off)", timeout=10_000)
            yield page
        finally:
            context.close()


def _stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_alert_reaches_console_and_acknowledgement_is_audited(tmp_path: Path) -> None:
    pytest.importorskip("playwright.sync_api")
    data = tmp_path / "data"
    up = start_up(data)
    try:
        created = httpx.post(
            f"{up.base}/v1/staff",
            json={"name": "rn-jane.doe", "clinics": ["c1"]},
            headers=up.auth("admin"),
            timeout=10,
        )
        assert created.status_code == 201, created.text
        staff = created.json()

        now = datetime.now(UTC)

        def at(minutes: float) -> str:
            return _stamp(now + timedelta(minutes=minutes))

        dose = {"drug": "esketamine", "route": "intranasal", "dose_mg": 56}
        calm = [  # a second patient, monitored and quiet, for the board
            event("session.opened", "q-o", "s-quiet", at(-75), {"patient_ref": "PT-1187"}),
            event(
                "vitals.recorded", "q-v0", "s-quiet", at(-70), {"systolic": 128, "diastolic": 80}
            ),
            event("dose.administered", "q-d", "s-quiet", at(-65), dose),
            event(
                "vitals.recorded",
                "q-v1",
                "s-quiet",
                at(-25),
                {"systolic": 141, "diastolic": 86, "spo2": 97},
            ),
            event("assessment.recorded", "q-a", "s-quiet", at(-20), {"sedation_moaas": 5}),
        ]
        assert up.post(ndjson(calm)).json()["accepted"] == len(calm)
        before = [
            event("session.opened", "o1", "s-crit", at(-30), {"patient_ref": "PT-0042"}),
            event("vitals.recorded", "v0", "s-crit", at(-26), {"systolic": 132, "diastolic": 84}),
            event("dose.administered", "d1", "s-crit", at(-22), dose),
        ]
        assert up.post(ndjson(before)).json()["accepted"] == len(before)

        with signed_in(tmp_path, up.base, staff["token"]) as page:
            page.wait_for_selector('[data-session="s-quiet"]', timeout=10_000)

            crisis = event(
                "vitals.recorded",
                "v1",
                "s-crit",
                at(-0.5),
                {"systolic": 192, "diastolic": 104, "spo2": 96},
            )
            started = time.monotonic()
            response = up.post(ndjson([crisis]))
            assert response.json()["accepted"] == 1, response.text
            alert = page.locator("li.alert.critical", has_text="BP_CRISIS")
            alert.wait_for(state="visible", timeout=2_000)
            elapsed = time.monotonic() - started
            assert elapsed < 2.0, f"alert took {elapsed:.2f}s to reach the console"
            assert "PT-0042" in alert.inner_text()
            page.wait_for_selector('[data-session="s-crit"].alerting', timeout=5_000)
            page.locator('[data-session="s-crit"]', has_text="BP 192/104").wait_for(
                timeout=5_000
            )  # the board's next snapshot carries the reading behind the alert

            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / "console.png"
            page.screenshot(path=str(shot), full_page=True)

            alert.locator("button.ack").click()
            page.wait_for_selector('li.alert.critical[data-status="acknowledged"]', timeout=5_000)
            assert "acknowledged by rn-jane.doe" in alert.inner_text()
            page.screenshot(path=str(ARTIFACTS / "console-acknowledged.png"), full_page=True)
            if os.environ.get("REMSGUARD_UPDATE_DOCS_SCREENSHOT") == "1":
                shutil.copyfile(shot, ROOT / "docs" / "console.png")

        stored = [a for a in up.alerts(rule="BP_CRISIS") if a["session_id"] == "s-crit"]
        assert [(a["status"], a["acknowledged_by"]) for a in stored] == [
            ("acknowledged", staff["principal_id"])
        ]
    finally:
        assert up.stop() == 0, up.log

    with ComplianceLog.open(f"sqlite:///{data / 'remsguard.db'}") as log:
        page_ = log.audit_records(AuditQuery(kind="alert.acknowledged", limit=10))
        # The crisis card carries BP_RISE of the same reading: one click acknowledged both.
        [record] = [r for r in page_.items if r.subject_id == stored[0]["alert_id"]]
        [carried] = [r for r in page_.items if r is not record]
        assert orjson.loads(carried.detail)["with"] == record.subject_id
        detail = orjson.loads(record.detail)
        assert record.subject_id == stored[0]["alert_id"]
        assert detail["by"] == staff["principal_id"]
        assert detail["by_name"] == "rn-jane.doe"
        assert record.clinic_id == "c1" and record.session_id == "s-crit"
