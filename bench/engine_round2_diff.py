"""Issue 14's whole-output comparison: the engine before clinical round 2 against this one,
over the same generated corpora, every difference sorted into the change that explains it.

    git worktree add --detach /tmp/rg-before d2e032b
    python -m bench.engine_round2_diff --base /tmp/rg-before/services [--runs 12]

Each corpus (as `bench.engine_differential` makes them: `remsguard simulate` clinic days of
varied violation and reorder rates, every other one perturbed: not-stable discharges,
discharges before the dose, simultaneous readings) is replayed by both engines (`remsguard
replay`, this one without a registry: the REMS gate is counted separately). The alerts each
leaves standing (raised, not withdrawn) are compared by id, and by content apart from the new
`inhibited_by` field. Categories:

- `new rule <R>`: raised only now, by a rule the old engine did not have;
- `withdrawn now`: the old engine raised it, the new one raised and withdrew it;
- `only before` / `only now`: any other alert of one side (gap 1, the worst value at one
  instant; gap 2, monitoring again after a dose that follows a discharge);
- `inhibited`: the same alert, now marked `inhibited_by` (gap 6);
- `content`: the same id with other content (none expected).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from bench.engine_differential import _generate

NEW_RULES = frozenset(
    {
        "DOSE_AFTER_DISCHARGE",
        "DISCHARGE_NOT_STABLE",
        "PATIENT_NOT_ENROLLED",
        "SETTING_NOT_CERTIFIED",
    }
)


def _replay(services: Path | None, corpus: Path) -> list[dict[str, Any]]:
    env = dict(os.environ)
    if services is not None:
        env["PYTHONPATH"] = str(services)
    done = subprocess.run(
        [sys.executable, "-m", "remsguard", "replay", str(corpus)],
        env=env,
        capture_output=True,
        check=True,
    )
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def _standing(messages: list[dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], set[str]]:
    withdrawn = {m["alert_id"] for m in messages if m.get("kind") == "alert.withdrawn"}
    raised = {m["alert_id"]: m for m in messages if "kind" not in m}
    return {k: v for k, v in raised.items() if k not in withdrawn}, withdrawn


def compare(before: list[dict[str, Any]], now: list[dict[str, Any]]) -> Counter[str]:
    old, _ = _standing(before)
    new, withdrawn = _standing(now)
    counts: Counter[str] = Counter()
    for alert_id, alert in new.items():
        if alert_id not in old:
            rule = alert["rule"]
            counts[f"new rule {rule}" if rule in NEW_RULES else f"only now {rule}"] += 1
            continue
        if alert.get("inhibited_by"):
            counts[f"inhibited {alert['rule']}"] += 1
        same = {k: v for k, v in alert.items() if k not in ("inhibited_by", "protocol_version")}
        was = {k: v for k, v in old[alert_id].items() if k != "protocol_version"}
        counts["same"] += same == was
        counts["content"] += same != was
    for alert_id, alert in old.items():
        if alert_id not in new:
            kind = "withdrawn now" if alert_id in withdrawn else "only before"
            counts[f"{kind} {alert['rule']}"] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="the old checkout's services/")
    parser.add_argument("--runs", type=int, default=12)
    args = parser.parse_args()
    total: Counter[str] = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            corpus = _generate(Path(tmp), run)
            total += compare(_replay(args.base, corpus), _replay(None, corpus))
    width = max(map(len, total))
    for key, count in sorted(total.items(), key=lambda kv: (kv[0] != "same", kv[0])):
        print(f"{key:<{width}}  {count:>7}")


if __name__ == "__main__":
    main()
