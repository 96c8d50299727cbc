"""Embedded mode's restart at a large journal, with and without a snapshot (issue 19).

    python3 -m uv run --frozen python -m bench.embedded_restart [--events 1000000]
        [--concurrent 1000] [--rounds 2] [--data DIR]

Builds a data directory whose journal holds `--events` events of `bench.engine_scale`'s
staggered workload (33-event sessions, `--concurrent` active at once, in event-time order,
each journaled with its event time as the engine clock, as a live process would have), with
an eviction call journaled every minute of event time (what the live runtime does with its
default settings) and the compliance log marked complete (`recorded_through`), as after a
graceful stop. Then, in alternating rounds, each in a fresh process, it times what a restart
does before serving: `EmbeddedContainer.open` + `start` (recovery, then the runtime and its
tasks), (a) with the snapshot file removed: the whole journal is replayed, and (b) with the
snapshot the previous round's graceful stop wrote. It prints each round's seconds, the
process's peak RSS, the sessions held, and the ratio (a)/(b); then the graceful stop's time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import orjson

from bench.engine_scale import staggered
from remsguard.embedded.journal import (
    Checkpoint,
    EventJournal,
    JournaledEvent,
    JournaledEviction,
    from_us,
    to_us,
)

SNAPSHOT = "engine.snapshot"
_CHUNK = 20_000


def build(data: Path, events: int, concurrent: int) -> int:
    """Journal about `events` events (whole sessions) into `data`; how many."""
    data.mkdir(parents=True, exist_ok=True)
    journal = EventJournal(data / "journal.db")
    sessions = max(1, events // 33)
    pending: list[JournaledEvent] = []
    written, next_eviction = 0, None
    retention, forget = timedelta(hours=24), timedelta(days=31)
    for line in staggered(sessions, concurrent):
        doc = orjson.loads(line)
        clock = from_us(to_us(_parse(doc["occurred_at"])))
        assert clock is not None
        if next_eviction is None:
            next_eviction = clock + timedelta(minutes=1)
        if clock >= next_eviction:  # as the live timer: after what is journaled so far
            written += _flush(journal, pending)
            journal.append_eviction(JournaledEviction(written, next_eviction, retention, forget))
            next_eviction += timedelta(minutes=1)
        pending.append(JournaledEvent(doc["session_id"], doc["event_id"], clock, line.strip()))
        if len(pending) >= _CHUNK:
            written += _flush(journal, pending)
    written += _flush(journal, pending)
    journal.set_recorded_through(journal.last())
    journal.close()
    return written


def _parse(stamp: str) -> object:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _flush(journal: EventJournal, pending: list[JournaledEvent]) -> int:
    if not pending:
        return 0
    journal.append(pending, checkpoint=Checkpoint())
    count = len(pending)
    pending.clear()
    return count


async def _restart(data: Path) -> dict[str, object]:
    """One restart in this process: open + start timed, then the graceful stop timed."""
    from remsguard.config import Settings
    from remsguard.embedded.container import EmbeddedContainer

    settings = Settings(data_dir=data, rems_gate=False, log_level="warning")
    started = time.perf_counter()
    container = EmbeddedContainer.open(settings, data)
    await container.start()
    restart = time.perf_counter() - started
    recovery = container.recovery
    assert recovery is not None
    held = len(container.runtime.engine.sessions)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    await container.stop()
    return {
        "restart_s": restart,
        "recovery_s": recovery.seconds,
        "replayed": recovery.events,
        "from_snapshot": recovery.snapshot is not None,
        "held_sessions": held,
        "peak_rss_mb": rss,
        "stop_s": time.perf_counter() - started,
    }


def _round(data: Path, snapshot: bool) -> dict[str, object]:
    if not snapshot:
        (data / SNAPSHOT).unlink(missing_ok=True)
    elif not (data / SNAPSHOT).exists():
        raise SystemExit("no snapshot to restart from")
    done = subprocess.run(
        [sys.executable, "-m", "bench.embedded_restart", "--child", str(data)],
        capture_output=True,
        check=True,
        env={**os.environ, "REMSGUARD_LOG_LEVEL": "warning"},
    )
    result: dict[str, object] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--concurrent", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data", type=Path, default=None, help="reuse or build here")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(asyncio.run(_restart(args.child))))
        return
    with tempfile.TemporaryDirectory(prefix="remsguard-restart-") as scratch:
        data = args.data or Path(scratch) / "data"
        if not (data / "journal.db").exists():
            started = time.perf_counter()
            count = build(data, args.events, args.concurrent)
            print(f"journaled {count:,} events in {time.perf_counter() - started:.1f} s")
        print(f"load average {os.getloadavg()[0]:.2f} (2 shared cores)")
        print(_round(data, snapshot=False), "(first start: writes the snapshot at its stop)")
        for number in range(1, args.rounds + 1):
            full = _round(data, snapshot=False)
            fast = _round(data, snapshot=True)
            ratio = float(str(full["restart_s"])) / float(str(fast["restart_s"]))
            print(f"round {number}: full replay {full}")
            print(f"round {number}: from snapshot {fast}")
            print(f"round {number}: full / snapshot = {ratio:.1f}x, load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
