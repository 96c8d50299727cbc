"""Embedded mode over several clinic days in accelerated event time: memory flat (issue 19).

    python3 -m uv run --frozen python -m bench.embedded_soak [--days 4] [--sessions-per-day 2000]
        [--retention-hours 24] [--warm-up-days 1.5]

Opens the real embedded container (journal, compliance log, snapshots) in this process on a
clock the benchmark moves: minute by minute of event time it posts that minute's events
(`bench.engine_scale` sessions, 33 events each, opened evenly over each day) to the runtime
as one request, then moves the clock on; the runtime's timers (eviction every
`--eviction-seconds` of real time, snapshots) run as they do live. Every simulated hour it
samples the process's RSS (after a full collection) and the sessions the engine holds.
Prints the samples, the RSS at the end of the warm-up and at the end, and the growth.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from bench.engine_scale import session
from remsguard.config import Settings
from remsguard.contract.decode import decode_event
from remsguard.embedded.container import EmbeddedContainer
from remsguard.embedded.ingest import Incoming


class _Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def add_day(
    by_minute: dict[int, list[bytes]], day: int, per_day: int, start: datetime, rng: random.Random
) -> None:
    """Add the events of the sessions opened on `day`, by the minute (from `start`) they
    occur in (generated a day at a time, so the traffic held is the same every day)."""
    spacing = timedelta(days=1) / per_day
    for index in range(day * per_day, (day + 1) * per_day):
        opened = (start + spacing * index + timedelta(seconds=rng.randrange(60))).replace(
            microsecond=0
        )
        for at, doc in session(index, opened, 5, rng):
            minute = int((at - start).total_seconds() // 60)
            by_minute.setdefault(minute, []).append(orjson.dumps(doc))


async def soak(args: argparse.Namespace, data: Path) -> None:
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=args.days + 1)
    clock = _Clock(start)
    settings = Settings(
        data_dir=data,
        rems_gate=False,
        log_level="warning",
        session_retention_hours=args.retention_hours,
        session_eviction_seconds=args.eviction_seconds,
    )
    traffic: dict[int, list[bytes]] = {}
    rng = random.Random(19)
    container = EmbeddedContainer.open(settings, data, clock=clock)
    await container.start()
    engine = container.runtime.engine
    samples: list[tuple[float, float, int]] = []  # (day, RSS MB, sessions held)
    began = time.monotonic()
    last = args.days * 1440 + 6 * 60  # six hours past the last day: the last checks decided
    posted = 0
    try:
        for minute in range(last + 1):
            if minute % 1440 == 0 and minute // 1440 < args.days:
                add_day(traffic, minute // 1440, args.sessions_per_day, start, rng)
            clock.now = start + timedelta(minutes=minute)
            rows = traffic.pop(minute, [])
            if rows:
                items = [Incoming(raw, decode_event(raw)) for raw in rows]
                await container.runtime.submit(items, None)
                posted += len(rows)
            else:
                await asyncio.sleep(0)
            if minute % 60 == 0:
                gc.collect()
                samples.append((minute / 1440, rss_mb(), len(engine.sessions)))
                day, rss, held = samples[-1]
                print(f"day {day:5.2f}: RSS {rss:7.1f} MB, sessions held {held:6,}", flush=True)
    finally:
        await container.stop()
    warm = [s for s in samples if s[0] >= args.warm_up_days]
    if warm:
        first, end = warm[0], samples[-1]
        peak = max(s[1] for s in warm)
        print(
            f"{posted:,} events over {args.days} days of event time in "
            f"{time.monotonic() - began:.0f} s; RSS after warm-up (day {first[0]:.2f}) "
            f"{first[1]:.1f} MB, at the end {end[1]:.1f} MB: growth "
            f"{(end[1] / first[1] - 1) * 100:+.1f}% (peak after warm-up {peak:.1f} MB); "
            f"sessions held {first[2]:,} -> {end[2]:,}; load {os.getloadavg()[0]:.2f} "
            "(2 shared cores)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=4)
    parser.add_argument("--sessions-per-day", type=int, default=2000)
    parser.add_argument("--retention-hours", type=float, default=24.0)
    parser.add_argument("--eviction-seconds", type=float, default=1.0)
    parser.add_argument("--warm-up-days", type=float, default=1.5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="remsguard-soak-") as scratch:
        asyncio.run(soak(args, Path(scratch) / "data"))


if __name__ == "__main__":
    main()
