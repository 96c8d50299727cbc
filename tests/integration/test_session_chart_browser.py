"""The staff console's session chart in Debian's Chromium: `remsguard up` -> a scripted session
-> staff click the patient card -> the chart shows every reading (read back from the page's
uPlot data, not from pixels), the protocol's bands at the protocol file's values, the dose,
the 40-minute check window, the end of the monitoring window, the assessments and the alert
-> a reading posted while the chart is open is on it within a second.
Screenshots: `artifacts/session-chart.png` (and `docs/session-chart.png` with
REMSGUARD_UPDATE_DOCS_SCREENSHOT=1).
"""

from __future__ import annotations

import os
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from remsguard.bootstrap import load_protocols

from .embedded_support import event, ndjson, start_up
from .test_console_browser import ARTIFACTS, CHROMIUM, ROOT, signed_in

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} missing: run deploy/chromium/install.sh"
)
SESSION = "s-chart"
LIVE_WITHIN_S = 1.0


def _stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def _scripted(now: datetime) -> tuple[list[bytes], dict[str, list[tuple[str, float]]]]:
    """A session dosed 95 minutes ago: vitals every 10 minutes, an SpO2 dip (SPO2_LOW), two
    assessments; and every reading by series, as the chart must show it."""

    def at(minutes: float) -> str:
        return _stamp(now + timedelta(minutes=minutes))

    lines = [
        event("session.opened", "c-o", SESSION, at(-105), {"patient_ref": "PT-2210"}),
        event(
            "dose.administered",
            "c-d",
            SESSION,
            at(-95),
            {"drug": "esketamine", "route": "intranasal", "dose_mg": 56, "lot_number": "L-77"},
        ),
    ]
    readings: dict[str, list[tuple[str, float]]] = {
        k: [] for k in ("systolic", "diastolic", "spo2", "heart_rate", "respiratory_rate", "moaas")
    }
    script = [  # minutes, systolic, diastolic, spo2, heart rate, respiratory rate
        (-100, 128, 82, 98, 72, 14),
        (-85, 134, 85, 97, 75, 15),
        (-75, 146, 90, 96, 80, 14),
        (-65, 158, 96, 95, 84, 13),
        (-55, 152, 94, 90, 86, 12),  # SpO2 below 92: SPO2_LOW
        (-45, 144, 90, 95, 82, 13),
        (-35, 138, 86, 97, 78, 14),
        (-25, 132, 84, 98, 74, 14),
        (-15, 130, 82, 98, 72, 15),
    ]
    for n, (m, sys_, dia, spo2, hr, rr) in enumerate(script):
        lines.append(
            event(
                "vitals.recorded",
                f"c-v{n}",
                SESSION,
                at(m),
                {
                    "systolic": sys_,
                    "diastolic": dia,
                    "spo2": spo2,
                    "heart_rate": hr,
                    "respiratory_rate": rr,
                },
            )
        )
        for key, value in zip(readings, (sys_, dia, spo2, hr, rr), strict=False):
            readings[key].append((at(m), value))
    for n, (m, moaas) in enumerate(((-60, 4), (-30, 5))):
        lines.append(
            event("assessment.recorded", f"c-a{n}", SESSION, at(m), {"sedation_moaas": moaas})
        )
        readings["moaas"].append((at(m), moaas))
    return lines, readings


def _page_series(page: Any) -> dict[str, list[list[Any]]]:
    """Per series: [[unix seconds, value], ...] as the page's uPlot instances hold them."""
    result: dict[str, list[list[Any]]] = page.evaluate(
        """() => {
          const out = {};
          for (const [key, u] of Object.entries(window.remsguardChart.plots)) {
            const panel = window.remsguardChart.payload.panels.find((p) => p.key === key);
            panel.series.forEach((name, i) => {
              const rows = u.data[0].map((x, j) => [x, u.data[i + 1][j]]);
              out[name] = rows.filter((r) => r[1] !== null);
            });
          }
          return out;
        }"""
    )
    return result


def test_session_chart_shows_every_reading_bands_and_live_updates(tmp_path: Path) -> None:
    pytest.importorskip("playwright.sync_api")
    up = start_up(tmp_path / "data")
    try:
        created = httpx.post(
            f"{up.base}/v1/staff",
            json={"name": "rn-sam.lee", "clinics": ["c1"]},
            headers=up.auth("admin"),
            timeout=10,
        )
        assert created.status_code == 201, created.text
        now = datetime.now(UTC).replace(microsecond=0)
        lines, readings = _scripted(now)
        assert up.post(ndjson(lines)).json()["accepted"] == len(lines)

        protocol = load_protocols([])["spravato-rems"]
        with signed_in(tmp_path, up.base, created.json()["token"]) as page:
            page.locator(f'[data-session="{SESSION}"]').click(timeout=10_000)
            page.wait_for_function(
                "() => window.remsguardChart.updates > 0 && window.remsguardChart.drawn.bp",
                timeout=10_000,
            )
            shown = _page_series(page)
            for key, rows in readings.items():
                expected = [[datetime.fromisoformat(t).timestamp(), v] for t, v in rows]
                assert shown[key] == expected, key

            drawn = page.evaluate("() => window.remsguardChart.drawn")
            bands = {(b["rule"], b["series"]): b for panel in drawn.values() for b in panel}
            rule = protocol.rule
            assert (
                bands[("BP_CRISIS", "systolic")]["value"] == rule("BP_CRISIS")["systolic_at_least"]
            )
            assert (
                bands[("BP_CRISIS", "diastolic")]["value"]
                == rule("BP_CRISIS")["diastolic_at_least"]
            )
            assert (
                bands[("PRE_DOSE_BP_ELEVATED", "systolic")]["value"]
                == rule("PRE_DOSE_BP_ELEVATED")["systolic_above"]
            )
            assert bands[("BP_RISE", "systolic")]["value"] == 128 + rule("BP_RISE")["systolic_rise"]
            assert (
                bands[("BP_RISE", "diastolic")]["value"] == 82 + rule("BP_RISE")["diastolic_rise"]
            )
            assert bands[("SPO2_LOW", "spo2")]["value"] == rule("SPO2_LOW")["below"]
            assert bands[("SPO2_CRITICAL", "spo2")]["value"] == rule("SPO2_CRITICAL")["below"]
            assert (
                bands[("RESPIRATORY_DEPRESSION", "respiratory_rate")]["value"]
                == rule("RESPIRATORY_DEPRESSION")["rate_below"]
            )
            for band in bands.values():  # drawn where the scale puts the protocol's value
                assert abs(band["y"] - band["expected_y"]) < 1.0, band

            payload = page.evaluate("() => window.remsguardChart.payload")
            marks = {m["kind"]: m for m in payload["marks"]}
            dose = now - timedelta(minutes=95)
            check = rule("POST_DOSE_BP_MISSED")
            assert marks["dose"]["at"] == _stamp(dose)
            assert marks["check_window"]["at"] == _stamp(
                dose + timedelta(minutes=check["from_minutes"])
            )
            assert marks["check_window"]["until"] == _stamp(
                dose + timedelta(minutes=check["until_minutes"])
            )
            assert marks["window_end"]["at"] == _stamp(dose + protocol.observation_window)
            spo2 = [a for a in payload["alerts"] if a["rule"] == "SPO2_LOW"]
            assert [(a["at"], a["panel"]) for a in spo2] == [
                (_stamp(now - timedelta(minutes=55)), "spo2")
            ]
            events = page.locator("#session-chart-events").inner_text()
            assert "SPO2_LOW" in events and "MOAA/S 4" in events and "Dose 56 mg" in events

            live = event(
                "vitals.recorded",
                "c-live",
                SESSION,
                _stamp(now),
                {"systolic": 127, "diastolic": 81, "spo2": 99, "heart_rate": 70},
            )
            started = time.monotonic()
            assert up.post(ndjson([live])).json()["accepted"] == 1
            page.wait_for_function(
                """(at) => {
                  const u = window.remsguardChart.plots.bp;
                  return u && u.data[0].includes(at) && u.data[1].includes(127);
                }""",
                arg=now.timestamp(),
                timeout=LIVE_WITHIN_S * 1000,
            )
            elapsed = time.monotonic() - started
            assert elapsed < LIVE_WITHIN_S, f"the live reading took {elapsed:.2f}s"
            assert "BP 127/81" in page.locator("#session-chart-latest").inner_text()

            page.set_viewport_size({"width": 1024, "height": 1500})
            page.wait_for_timeout(300)  # the resize redraw
            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / "session-chart.png"
            page.locator("#session-chart").screenshot(path=str(shot))
            if os.environ.get("REMSGUARD_UPDATE_DOCS_SCREENSHOT") == "1":
                shutil.copyfile(shot, ROOT / "docs" / "session-chart.png")
    finally:
        assert up.stop() == 0, up.log
