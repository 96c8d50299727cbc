"""The simulator's REMS registry: written beside its output, it keeps its clinic days
compliant under `replay --registry`; `not_enrolled` sessions raise PATIENT_NOT_ENROLLED."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
from typer.testing import CliRunner

from remsguard.entrypoints.cli import app

runner = CliRunner()


def test_replay_with_the_simulated_registry_raises_exactly_the_manifest(tmp_path: Path) -> None:
    events, manifest, registry = (tmp_path / n for n in ("e.jsonl", "m.json", "r.jsonl"))
    made = runner.invoke(
        app,
        ["simulate", "--out", str(events), "--manifest", str(manifest), "--registry",
         str(registry), "--seed", "7", "--clinics", "3", "--esketamine-share", "0.8",
         "--not-enrolled-rate", "0.3", "--malformed-rate", "0"],
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    plan = orjson.loads(manifest.read_bytes())
    assert plan["counts"]["violations"]["not_enrolled"] > 0
    until = plan["until"]
    gated = runner.invoke(
        app, ["replay", str(events), "--until", until, "--registry", str(registry)]
    )
    assert gated.exit_code == 0, gated.output
    alerts = [orjson.loads(x) for x in gated.stdout.splitlines() if x.startswith("{")]
    raised = Counter((a["session_id"], a["rule"], a["triggered_at"]) for a in alerts)
    wanted = Counter(
        (s["session_id"], e["rule"], e["triggered_at"])
        for s in plan["sessions"]
        for v in s["violations"]
        for e in v["expected_alerts"]
    )
    assert raised == wanted
    assert any(rule == "PATIENT_NOT_ENROLLED" for _, rule, _ in raised)

    ungated = runner.invoke(app, ["replay", str(events), "--until", until])
    assert "REMS enrollment and certification not checked" in ungated.stderr
    assert "PATIENT_NOT_ENROLLED" not in ungated.stdout
