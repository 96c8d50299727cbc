"""Replay throughput against a parse-only baseline (read + JSON-decode every line), same run.

python3 -m uv run --frozen python -m bench.replay_throughput [--events 1000000] [--rounds 3]

Both sides are timed in CPU seconds of this process (`time.process_time`), so that other
processes on a shared machine move them less than wall time would.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench.events import generate
from remsguard.bootstrap import build_engine
from remsguard.contract.outbound import alert_to_json
from remsguard.domain.decisions import Alert, Rejection
from remsguard.handlers.replay import ReplayEvents, replay


def parse_only(path: Path) -> tuple[float, int]:
    started = time.process_time()
    count = 0
    with path.open("rb") as lines:
        for line in lines:
            json.loads(line)
            count += 1
    return time.process_time() - started, count


def replay_file(path: Path) -> tuple[float, int]:
    engine = build_engine("spravato-rems")
    sink: list[bytes] = []

    def on_alert(alert: Alert) -> None:
        sink.append(alert_to_json(alert))

    def on_rejected(line: int, rejection: Rejection) -> None:
        raise AssertionError(f"line {line}: {rejection}")

    started = time.process_time()
    with path.open("rb") as lines:
        summary = replay(ReplayEvents(lines), engine, on_alert, on_rejected)
    elapsed = time.process_time() - started
    return elapsed, summary.alerts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.jsonl"
        with path.open("wb") as out:
            out.writelines(generate(args.events))
        lines = sum(1 for _ in path.open("rb"))
        print(f"events: {lines:,} in {path.stat().st_size / 1e6:.0f} MB")
        best_parse = best_replay = float("inf")
        alerts, ratios = 0, []
        for round_ in range(1, args.rounds + 1):
            parse_s, _ = parse_only(path)
            replay_s, alerts = replay_file(path)
            best_parse, best_replay = min(best_parse, parse_s), min(best_replay, replay_s)
            ratios.append(replay_s / parse_s)
            print(
                f"round {round_}: parse-only {parse_s:.2f} s, replay {replay_s:.2f} s, "
                f"ratio {ratios[-1]:.2f}x"
            )
        print(
            f"best: parse-only {lines / best_parse:,.0f} events/s, "
            f"replay {lines / best_replay:,.0f} events/s, "
            f"replay/parse-only time ratio {best_replay / best_parse:.2f}x "
            f"(rounds {min(ratios):.2f}x to {max(ratios):.2f}x), alerts {alerts:,}"
        )


if __name__ == "__main__":
    main()
