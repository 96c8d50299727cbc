"""The engine at thousands of concurrent sessions (issue 19): replay against parse-only.

    python3 -m uv run --frozen python -m bench.engine_scale [--sessions 10000]
        [--concurrent 4000] [--rounds 3] [--sweep 100,1000,4000,10000] [--engine-only]

The workload: `--sessions` sessions shaped as `bench.events` traffic (open, pre-dose BP,
dose, vitals every `--vitals-every` minutes (5; `bench.events` has 2) with BP every 10,
assessments every 30, discharge 147 minutes after opening: 33 events a session at 5, 71 at
2), their starts staggered evenly so that `--concurrent` are active at once in the steady
part (one start every 147 min / concurrent), each start at its own second so that, as in
live traffic, almost every event moves the clock. Lines are in event-time order. The bench
prints the peak and mean number of sessions active at an event.

Each round times, in the same process and alternating: parse-only (`json.loads` of every
line, and `orjson.loads`), then replay (`handlers.replay`: decode, engine, clock advanced to
every later event time, alerts serialised). `--sweep` repeats that for several concurrency
levels at the same session count and prints the replay cost per event at each, and its
ratio to the first level (flat = within 20%). `--engine-only` also times the engine alone
on pre-decoded events (`handle` then `advance_to` per event, as replay drives it).

Every side is timed in CPU seconds of this process (`time.process_time`), not wall time: on
a shared machine another process's load then stops moving the figures by whole seconds
(it still moves them through the caches it shares).
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import orjson

from bench.events import START, _stamp, _vitals
from bench.replay_throughput import replay_file
from remsguard.bootstrap import build_engine
from remsguard.contract.decode import decode_event
from remsguard.domain.decisions import Rejection
from remsguard.domain.events import Event

SESSION_MINUTES = 147  # opened to discharged in `bench.events.session_events`


def session(
    index: int, start: datetime, every: int, rng: random.Random
) -> list[tuple[datetime, dict[str, object]]]:
    """One session as in `bench.events.session_events`, opened at `start`, with vitals every
    `every` minutes after the dose (2 there; BP on the readings at whole tens of minutes)."""
    sid, clinic = f"sess-{index:07d}", f"clinic-{index % 40:02d}"
    dose_at = start + timedelta(minutes=20)
    rows: list[tuple[datetime, str, dict[str, object]]] = [
        (start, "session.opened", {"patient_ref": f"pt-{rng.getrandbits(48):012x}"}),
        (start + timedelta(minutes=10), "vitals.recorded", _vitals(rng, 0)),
        (
            dose_at,
            "dose.administered",
            {"drug": "esketamine", "route": "intranasal", "dose_mg": 56},
        ),
    ]
    for minute in range(every, 127, every):
        rows.append((dose_at + timedelta(minutes=minute), "vitals.recorded", _vitals(rng, minute)))
        if minute % 30 == 0:
            moaas = 5 if minute > 60 else rng.choice([3, 4, 5, 5])
            assessed: dict[str, object] = {"sedation_moaas": moaas, "dissociation": minute < 60}
            at = dose_at + timedelta(minutes=minute, seconds=30)
            rows.append((at, "assessment.recorded", assessed))
    discharged = {"staff_id": "rn-1", "clinically_stable": True}
    rows.append((dose_at + timedelta(minutes=127), "session.discharged", discharged))
    return [
        (
            at,
            {
                "event_id": f"{sid}-{n:04d}",
                "type": kind,
                "session_id": sid,
                "clinic_id": clinic,
                "occurred_at": _stamp(at),
                "device_id": f"dev-{index % 7}",
                "data": data,
            },
        )
        for n, (at, kind, data) in enumerate(rows, start=1)
    ]


def staggered(sessions: int, concurrent: int, every: int = 5, seed: int = 19) -> Iterator[bytes]:
    """`sessions` sessions staggered so about `concurrent` are active at once, as JSON lines
    in event-time order (ties by event id); each opens on a second of its own."""
    rng = random.Random(seed)
    step = timedelta(minutes=SESSION_MINUTES) / concurrent
    events: list[tuple[datetime, str, dict[str, object]]] = []
    for index in range(sessions):
        start = (START + step * index + timedelta(seconds=rng.randrange(0, 60))).replace(
            microsecond=0
        )
        events += [(at, str(doc["event_id"]), doc) for at, doc in session(index, start, every, rng)]
    events.sort(key=lambda row: (row[0], row[1]))
    for _, _, doc in events:
        yield orjson.dumps(doc) + b"\n"


def concurrency(path: Path) -> tuple[int, float]:
    """(peak, mean over events) of the sessions opened and not yet discharged at an event."""
    active: set[str] = set()
    peak, total, count = 0, 0, 0
    with path.open("rb") as lines:
        for line in lines:
            doc = orjson.loads(line)
            if doc["type"] == "session.opened":
                active.add(doc["session_id"])
            elif doc["type"] == "session.discharged":
                active.discard(doc["session_id"])
            peak = max(peak, len(active))
            total += len(active)
            count += 1
    return peak, total / max(count, 1)


def parse_only(path: Path, loads: object) -> float:
    started = time.process_time()
    with path.open("rb") as lines:
        for line in lines:
            loads(line)  # type: ignore[operator]
    return time.process_time() - started


def engine_only(events: list[Event]) -> float:
    """The engine alone on pre-decoded events, driven as replay drives it."""
    engine = build_engine("spravato-rems")
    handle, advance = engine.handle, engine.advance_to
    gc.collect()
    thresholds = gc.get_threshold()
    gc.set_threshold(100_000, 50, 100)  # as replay does
    started = time.process_time()
    try:
        for event in events:
            handle(event)
            clock = engine.clock
            if clock is None or event.occurred_at > clock:
                advance(event.occurred_at)
    finally:
        gc.set_threshold(*thresholds)
    return time.process_time() - started


def measure(path: Path, rounds: int, with_engine: bool) -> dict[str, float]:
    lines = sum(1 for _ in path.open("rb"))
    best = {"json": float("inf"), "orjson": float("inf"), "replay": float("inf")}
    ratios: list[float] = []
    alerts = 0
    decoded: list[Event] = []
    if with_engine:
        best["engine"] = float("inf")
        with path.open("rb") as source:
            decoded = [e for e in map(decode_event, source) if not isinstance(e, Rejection)]
    for round_ in range(1, rounds + 1):
        json_s = parse_only(path, json.loads)
        orjson_s = parse_only(path, orjson.loads)
        replay_s, alerts = replay_file(path)
        engine_s = engine_only(decoded) if with_engine else 0.0
        best["json"] = min(best["json"], json_s)
        best["orjson"] = min(best["orjson"], orjson_s)
        best["replay"] = min(best["replay"], replay_s)
        if with_engine:
            best["engine"] = min(best["engine"], engine_s)
        ratios.append(replay_s / json_s)
        extra = f", engine alone {engine_s:.2f} s" if with_engine else ""
        print(
            f"  round {round_}: json.loads {json_s:.2f} s, orjson {orjson_s:.2f} s, "
            f"replay {replay_s:.2f} s{extra}, replay/json.loads {ratios[-1]:.2f}x"
        )
    per_event = {name: seconds / lines * 1e6 for name, seconds in best.items()}
    print(
        f"  best: json.loads {lines / best['json']:,.0f} events/s, "
        f"orjson {lines / best['orjson']:,.0f} events/s, "
        f"replay {lines / best['replay']:,.0f} events/s ({per_event['replay']:.2f} µs/event), "
        f"replay/json.loads {best['replay'] / best['json']:.2f}x "
        f"(rounds {min(ratios):.2f}x to {max(ratios):.2f}x), "
        f"replay/orjson {best['replay'] / best['orjson']:.2f}x, alerts {alerts:,}"
        + (f", engine alone {per_event['engine']:.2f} µs/event" if with_engine else "")
    )
    return per_event


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--concurrent", type=int, default=4_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sweep", help="concurrency levels, e.g. 100,1000,4000,10000")
    parser.add_argument("--vitals-every", type=int, default=5, help="minutes (bench.events: 2)")
    parser.add_argument("--engine-only", action="store_true")
    parser.add_argument("--out", type=Path, help="write the workload here and stop")
    args = parser.parse_args()
    if args.out is not None:
        with args.out.open("wb") as out:
            out.writelines(staggered(args.sessions, args.concurrent, args.vitals_every))
        return
    levels = [int(x) for x in args.sweep.split(",")] if args.sweep else [args.concurrent]
    costs: list[tuple[int, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for level in levels:
            path = Path(tmp) / f"events-{level}.jsonl"
            with path.open("wb") as out:
                out.writelines(staggered(args.sessions, level, args.vitals_every))
            lines = sum(1 for _ in path.open("rb"))
            peak, mean = concurrency(path)
            print(
                f"{args.sessions:,} sessions, {level:,} concurrent wanted: {lines:,} events, "
                f"{path.stat().st_size / 1e6:.0f} MB, active at an event: peak {peak:,}, "
                f"mean {mean:,.0f}"
            )
            per_event = measure(path, args.rounds, args.engine_only)
            costs.append((level, per_event["replay"], per_event.get("engine", 0.0)))
            path.unlink()
    if len(costs) > 1:
        _, first_replay, first_engine = costs[0]
        print("per-event cost against the first level (best of rounds):")
        for level, replay_us, engine_us in costs:
            ratio = replay_us / first_replay
            line = f"  {level:>6,} concurrent: replay {replay_us:.2f} µs ({ratio:.2f}x)"
            if engine_us:
                line += f", engine alone {engine_us:.2f} µs ({engine_us / first_engine:.2f}x)"
            print(line)


if __name__ == "__main__":
    main()
