"""Differential comparison of two engines over the same generated corpus (issue 14).

Generates clinic days with `remsguard simulate` (varied seeds, violation and reorder rates),
replays each file with the engine under test (this checkout) and with a base checkout (its
`services` folder, e.g. a `git worktree add /tmp/engine-base <commit>`), clock run a day past
the last event, and compares every alert (by id) and audit record (by record id). Prints the
differences counted per kind: alerts only in one side by rule, changed alerts by rule and
field, audit records only in one side by kind (and rule), changed records by kind.

    python -m bench.engine_differential --base /tmp/engine-base/services --runs 40

The corpus and outputs go to a temporary folder (`--keep DIR` keeps them); nothing is
written to the repository.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import orjson

_RATES = (0.0, 0.03, 0.08, 0.15)  # six rates: at most one violation per session
_REORDER = (0.0, 0.03, 0.2, 0.5)
_VIOLATIONS = (
    "--early-discharge-rate",
    "--missed-check-rate",
    "--missing-pre-dose-bp-rate",
    "--bp-crisis-rate",
    "--desaturation-rate",
    "--dropout-rate",
)


def harness(file: Path) -> None:
    """Replay `file` with whichever `remsguard` is importable; alerts and audit as JSON lines."""
    from remsguard.bootstrap import build_engine
    from remsguard.contract.outbound import alert_to_json, audit_record_to_json
    from remsguard.handlers.replay import ReplayEvents, replay

    lines = file.read_bytes().splitlines()
    latest = None
    for line in lines:
        try:
            at = datetime.fromisoformat(orjson.loads(line)["occurred_at"].replace("Z", "+00:00"))
        except Exception:
            continue
        latest = at if latest is None or at > latest else latest
    until = None if latest is None else latest + timedelta(days=1)
    out = sys.stdout.buffer
    engine = build_engine("spravato-rems", None)
    replay(
        ReplayEvents(lines, until),
        engine,
        lambda alert: out.write(b'{"t":"alert","v":' + alert_to_json(alert) + b"}\n"),
        lambda _line, _rejection: None,
        lambda record: out.write(b'{"t":"audit","v":' + audit_record_to_json(record) + b"}\n"),
    )
    out.flush()


def _run(services: Path | None, file: Path) -> tuple[dict[str, dict], dict[str, dict]]:
    env = dict(os.environ)
    if services is not None:
        env["PYTHONPATH"] = str(services)
    done = subprocess.run(
        [sys.executable, "-m", "bench.engine_differential", "--harness", str(file)],
        env=env,
        capture_output=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    alerts: dict[str, dict] = {}
    audit: dict[str, dict] = {}
    for line in done.stdout.splitlines():
        item = orjson.loads(line)
        value = item["v"]
        if item["t"] == "alert":
            alerts[value["alert_id"]] = value
        else:
            audit[value["record_id"]] = value
    return alerts, audit


def _generate(folder: Path, run: int) -> Path:
    file = folder / f"corpus-{run}.jsonl"
    rate = _RATES[run % len(_RATES)]
    args = [
        sys.executable,
        "-m",
        "remsguard",
        "simulate",
        "--out",
        str(file),
        "--seed",
        str(1000 + run),
        "--manifest",
        str(folder / f"manifest-{run}.json"),
        "--clinics",
        str(2 + run % 2),
        "--days",
        str(1 + run % 3),
        "--reorder-rate",
        str(_REORDER[(run // len(_RATES)) % len(_REORDER)]),
    ]
    for flag in _VIOLATIONS:
        args += [flag, str(rate)]
    subprocess.run(args, check=True, capture_output=True)
    if run % 2:
        _perturb(file, run)
    return file


def _perturb(file: Path, run: int) -> None:
    """What the simulator does not make, for every other corpus: discharges recorded as not
    stable (5%), a second BP reading at the instant of a session's last one, elevated and with
    an id that sorts first (10% of sessions), a discharge stamped before the dose (3%), and
    arrival orders beyond one stream per type: `session.opened` moved 15 lines later, or
    lines shuffled within windows of 6 (so also beyond the lateness)."""
    rng = random.Random(run)
    lines = file.read_bytes().splitlines()
    parsed: list[dict | None] = []
    for line in lines:
        try:
            item = orjson.loads(line)
            parsed.append(item if isinstance(item, dict) and "session_id" in item else None)
        except orjson.JSONDecodeError:
            parsed.append(None)
    doses: dict[str, str] = {}
    last_bp: dict[str, int] = {}
    for index, item in enumerate(parsed):
        if item is None:
            continue
        if item.get("type") == "dose.administered":
            doses.setdefault(item["session_id"], item["occurred_at"])
        if item.get("type") == "vitals.recorded" and "systolic" in item.get("data", {}):
            last_bp[item["session_id"]] = index
    out: list[bytes] = []
    for index, item in enumerate(parsed):
        if item is None:
            out.append(lines[index])
            continue
        session = item["session_id"]
        if item.get("type") == "session.discharged":
            if rng.random() < 0.05:
                item["data"]["clinically_stable"] = False
            if rng.random() < 0.03 and session in doses:
                dose = datetime.fromisoformat(doses[session].replace("Z", "+00:00"))
                item["occurred_at"] = (dose - timedelta(minutes=5)).isoformat()
        out.append(orjson.dumps(item))
        if last_bp.get(session) == index and rng.random() < 0.1:
            twin = {**item, "event_id": f"{session}-000m", "device_id": "manual"}
            twin["data"] = {"systolic": 190, "diastolic": 100}
            out.append(orjson.dumps(twin))
    if run % 4 == 1:  # session.opened arrives 15 lines late
        kept: list[bytes] = []
        moved: list[tuple[int, bytes]] = []
        for line in out:
            if b'"session.opened"' in line:
                moved.append((len(kept) + 15, line))
            else:
                kept.append(line)
        for position, line in reversed(moved):
            kept.insert(min(position, len(kept)), line)
        out = kept
    else:  # shuffled within windows of 6 lines
        for start in range(0, len(out), 6):
            window = out[start : start + 6]
            rng.shuffle(window)
            out[start : start + 6] = window
    file.write_bytes(b"\n".join(out) + b"\n")


def _rule_of(record: dict, alerts: dict[str, dict]) -> str:
    rule = record["detail"].get("rule")
    if rule is None and record["subject_id"] in alerts:
        rule = alerts[record["subject_id"]]["rule"]
    return f"{record['kind']}:{rule}" if rule else record["kind"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, help="the base checkout's services folder")
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--keep", type=Path, help="keep the corpus and outputs here")
    parser.add_argument("--harness", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.harness is not None:
        harness(args.harness)
        return
    if args.base is None:
        parser.error("--base is required")
    folder = args.keep or Path(tempfile.mkdtemp(prefix="remsguard-differential-"))
    folder.mkdir(parents=True, exist_ok=True)
    diff: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    events = 0
    for run in range(args.runs):
        file = _generate(folder, run)
        events += sum(1 for _ in file.open("rb"))
        base_alerts, base_audit = _run(args.base, file)
        new_alerts, new_audit = _run(None, file)
        totals["alerts (base)"] += len(base_alerts)
        totals["alerts (new)"] += len(new_alerts)
        totals["audit records (base)"] += len(base_audit)
        totals["audit records (new)"] += len(new_audit)
        for alert_id in base_alerts.keys() - new_alerts.keys():
            diff[f"alert only in base: {base_alerts[alert_id]['rule']}"] += 1
        for alert_id in new_alerts.keys() - base_alerts.keys():
            diff[f"alert only in new: {new_alerts[alert_id]['rule']}"] += 1
        for alert_id in base_alerts.keys() & new_alerts.keys():
            before, after = base_alerts[alert_id], new_alerts[alert_id]
            for key in before.keys() | after.keys():
                if key == "protocol_version":  # the digest of a protocol file that changed
                    totals["alerts with another protocol_version"] += before[key] != after[key]
                elif before.get(key) != after.get(key):
                    diff[f"alert changed: {before['rule']}.{key}"] += 1
        everything = {**base_alerts, **new_alerts}
        for record_id in base_audit.keys() - new_audit.keys():
            diff[f"audit only in base: {_rule_of(base_audit[record_id], everything)}"] += 1
        for record_id in new_audit.keys() - base_audit.keys():
            diff[f"audit only in new: {_rule_of(new_audit[record_id], everything)}"] += 1
        for record_id in base_audit.keys() & new_audit.keys():
            if base_audit[record_id] != new_audit[record_id]:
                diff[f"audit changed: {_rule_of(base_audit[record_id], everything)}"] += 1
    print(f"{args.runs} corpora, {events:,} lines, in {folder}")
    for name, value in sorted(totals.items()):
        print(f"  {name}: {value:,}")
    print("differences:" if diff else "no differences")
    for name, value in sorted(diff.items()):
        print(f"  {value:6,}  {name}")


if __name__ == "__main__":
    main()
