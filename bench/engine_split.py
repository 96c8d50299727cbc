"""Where replay's time goes on the `bench.engine_scale` workload, layer by layer (issue 19).

    python3 -m uv run --frozen python -m bench.engine_split [--sessions 10000]
        [--concurrent 4000] [--rounds 2]

Times, in CPU seconds of this process and alternating within each round (best of rounds,
per event): `json.loads` of every line; the contract's decode (`decode_event`, and
`decode_events` in batches of replay's `READ_AHEAD` lines, as replay decodes); the engine's
`handle` alone on pre-decoded events (the clock never moved); the engine as replay drives it
(`handle`, then `advance_to` on every later event time); the same through the service step
(`monitoring.monitor` with replay's `EventTime` clock and a sink that does nothing); and
replay itself (`handlers.replay`: lines, decode, the step, alerts serialised). Differences
between lines are what each layer adds: the wakes (`advance_to`), the service step, and
replay's own loop with decoding interleaved with the engine.
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.engine_scale import staggered
from bench.replay_throughput import replay_file
from remsguard.bootstrap import build_engine
from remsguard.contract.decode import decode_event, decode_events
from remsguard.domain.decisions import Decisions, Rejection
from remsguard.domain.events import Event
from remsguard.handlers.replay import READ_AHEAD
from remsguard.monitoring.clocks import EventTime
from remsguard.monitoring.service import monitor


def _timed(run: Callable[[], None]) -> float:
    """CPU seconds of `run`, with the cyclic GC set as replay sets it."""
    gc.collect()
    thresholds = gc.get_threshold()
    gc.set_threshold(100_000, 50, 100)
    started = time.process_time()
    try:
        run()
    finally:
        gc.set_threshold(*thresholds)
    return time.process_time() - started


def layers(path: Path, lines: list[bytes], events: list[Event]) -> dict[str, Callable[[], float]]:
    def parse() -> None:
        for line in lines:
            json.loads(line)

    def decode() -> None:
        for line in lines:
            decode_event(line)

    def decode_batched() -> None:
        for start in range(0, len(lines), READ_AHEAD):
            decode_events(lines[start : start + READ_AHEAD])

    def handle() -> None:
        engine = build_engine("spravato-rems")
        for event in events:
            engine.handle(event)

    def engine_alone() -> None:
        engine = build_engine("spravato-rems")
        handle, advance = engine.handle, engine.advance_to
        for event in events:
            handle(event)
            clock = engine.clock
            if clock is None or event.occurred_at > clock:
                advance(event.occurred_at)

    def service_step() -> None:
        engine, clock = build_engine("spravato-rems"), EventTime()

        def sink(decisions: Decisions, event: Event | None = None) -> None:
            pass

        for event in events:
            monitor(engine, event, "", clock, sink)

    return {
        "json.loads": lambda: _timed(parse),
        "decode": lambda: _timed(decode),
        "decode_events": lambda: _timed(decode_batched),
        "handle": lambda: _timed(handle),
        "engine": lambda: _timed(engine_alone),
        "monitor": lambda: _timed(service_step),
        "replay": lambda: replay_file(path)[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--concurrent", type=int, default=4_000)
    parser.add_argument("--vitals-every", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.jsonl"
        with path.open("wb") as out:
            out.writelines(staggered(args.sessions, args.concurrent, args.vitals_every))
        lines = path.read_bytes().splitlines()
        decoded = [decode_event(line) for line in lines]
        events = [e for e in decoded if not isinstance(e, Rejection)]
        best: dict[str, float] = {}
        for _ in range(args.rounds):
            for name, run in layers(path, lines, events).items():
                best[name] = min(best.get(name, float("inf")), run())
    per_event = {name: seconds / len(lines) * 1e6 for name, seconds in best.items()}
    print(
        f"{args.sessions:,} sessions, {args.concurrent:,} concurrent, {len(lines):,} events; "
        "CPU µs per event, best of rounds:"
    )
    for name, micros in per_event.items():
        print(f"  {name:<13} {micros:6.2f}")
    print(f"  replay / json.loads {best['replay'] / best['json.loads']:.2f}x")


if __name__ == "__main__":
    main()
