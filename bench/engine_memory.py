"""Engine memory per session, and what `MonitoringEngine.evict_finished` keeps bounded.

    python3 -m uv run --frozen python -m bench.engine_memory [--sessions 10000]
        [--concurrent 4000] [--retention-minutes 60] [--every-minutes 10]

Replays the `bench.engine_scale` workload twice under `tracemalloc` (decoding each line as it
comes, so the engine's state is all that stays): once as is, once calling
`evict_finished(clock, retention)` every `--every-minutes` of event time. Every such moment
it samples the memory traced since the engine was built, the sessions held, and those open
(dosed or opened, not discharged). Prints, for each run, the peak and final memory and
sessions held, the bytes per held session at the peak, and the tombstones left. The
retention is short by default so that eviction shows within the workload's few hours; the
engine's default is 24 hours, and memory then is about (sessions open + sessions finished in
the last 24 hours) x the bytes per session.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import tracemalloc
from datetime import timedelta
from pathlib import Path

from bench.engine_scale import staggered
from remsguard.bootstrap import build_engine
from remsguard.contract.decode import decode_event
from remsguard.domain.decisions import Rejection


def run(path: Path, every: timedelta, retention: timedelta | None) -> None:
    gc.collect()
    tracemalloc.start()
    engine = build_engine("spravato-rems")
    base = tracemalloc.get_traced_memory()[0]
    samples: list[tuple[int, int, int]] = []  # (bytes, sessions held, open)
    evicted = 0
    next_sample = None
    with path.open("rb") as lines:
        for line in lines:
            event = decode_event(line)
            assert not isinstance(event, Rejection), event
            engine.handle(event)
            at = event.occurred_at
            if engine.clock is None or at > engine.clock:
                engine.advance_to(at)
            if next_sample is None:
                next_sample = at + every
            if at >= next_sample:
                next_sample += every
                if retention is not None:
                    evicted += len(engine.evict_finished(at, retention))
                held = engine.sessions.values()
                open_ = sum(1 for s in held if s.discharge is None)
                samples.append((tracemalloc.get_traced_memory()[0] - base, len(held), open_))
    del event, line
    gc.collect()
    final = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    peak = max(samples)
    most = max(held for _, held, _ in samples)
    label = "no eviction" if retention is None else f"evict every {every}, retention {retention}"
    print(
        f"{label}: peak {peak[0] / 1e6:.1f} MB with {peak[1]:,} sessions held ({peak[2]:,} open), "
        f"{peak[0] / peak[1]:,.0f} bytes per held session; most held {most:,}; "
        f"final {final / 1e6:.1f} MB, {len(engine.sessions):,} held, {evicted:,} evicted, "
        f"{len(engine._evicted):,} tombstones"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--concurrent", type=int, default=4_000)
    parser.add_argument("--retention-minutes", type=float, default=60)
    parser.add_argument("--every-minutes", type=float, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.jsonl"
        with path.open("wb") as out:
            out.writelines(staggered(args.sessions, args.concurrent))
        every = timedelta(minutes=args.every_minutes)
        run(path, every, None)
        run(path, every, timedelta(minutes=args.retention_minutes))


if __name__ == "__main__":
    main()
