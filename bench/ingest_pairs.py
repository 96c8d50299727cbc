"""Paired wrk runs of embedded ingest: this tree against a baseline tree, alternated.

    git worktree add /tmp/base <commit>
    python3 -m uv run --frozen python -m bench.ingest_pairs --baseline /tmp/base [--pairs 3]
        [--seconds 8] [--connections 8]

Each run starts a fresh `remsguard up` (the baseline's with `PYTHONPATH=<baseline>/services`),
posts unique single events over `--connections` wrk connections for `--seconds` (the `wrk`
phase of `bench.embedded_ingest`) and stops it. Runs alternate baseline, this tree,
baseline, ... so both sides see the same machine. Prints each run (requests/s, latency,
server CPU a request) and the median of the per-pair ratios, this tree over the baseline.
This is how the ingest rounds in docs/PERFORMANCE.md were measured (there with the server
and wrk at `nice -n -15`, as other work shared the machine). Needs `wrk` on PATH.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from bench import _wrk
from bench.embedded_ingest import _cpu_seconds, events, start_up, stop, tokens


def _run(source: Path | None, seconds: float, connections: int) -> tuple[float, str, float]:
    """One fresh server (from `source`'s services, else this tree): requests/s, latency,
    server CPU ms a request."""
    extra = {} if source is None else {"PYTHONPATH": str(source / "services")}
    with tempfile.TemporaryDirectory(prefix="remsguard-pairs-") as scratch:
        data = Path(scratch) / "data"
        process, base = start_up(data, extra)
        try:
            device = tokens(data)["device"]
            before = _cpu_seconds(process.pid)
            rate, latency = _wrk.run(base, device, connections, seconds, events, 100)
            cpu = (_cpu_seconds(process.pid) - before) / (rate * seconds) * 1000
        finally:
            stop(process)
    return rate, latency, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, required=True, help="a checkout to compare to")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    if not (args.baseline / "services" / "remsguard").is_dir():
        raise SystemExit(f"{args.baseline} is not a remsguard checkout (no services/remsguard)")
    ratios = []
    for pair in range(1, args.pairs + 1):
        rates = []
        for name, source in (("baseline", args.baseline), ("this tree", None)):
            rate, latency, cpu = _run(source, args.seconds, args.connections)
            rates.append(rate)
            print(f"pair {pair} {name}: {rate:,.0f} requests/s; {latency}; server {cpu:.2f} ms")
        ratios.append(rates[1] / rates[0])
    print(f"this tree / baseline, median of {len(ratios)} pairs: {statistics.median(ratios):.3f}x")


if __name__ == "__main__":
    main()
