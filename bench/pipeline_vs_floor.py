"""One `remsguard processor` worker against faust's floor over the same backlog, paired.

    python -m bench.pipeline_vs_floor [--events 60000] [--rounds 3] [--bootstrap ...]

Each round publishes the events once to fresh input topics (`bench._pipeline.interleaved`),
then reads that same backlog twice, in alternating order from round to round: with the faust
floor (`bench/_faust_floor.py`: an agent that only acks, timed from its first message to its
last) and with one worker (timed from its first audit record to the `event.accepted` record of
the last event, by the records' broker timestamps, which the worker's producer sets when it
sends). Both read a backlog with nothing else running in the benchmark: neither is charged for
the publisher. `bench.pipeline_throughput` times the worker from the first publish instead,
with the publisher running beside it on the same cores.

Each also reports its CPU seconds per event over the same span (the floor its own
`time.process_time`, the worker's from /proc from its assignment on): the ratio of those is
what the worker would reach against the floor with a core each, which a machine shared with
the broker and other work distorts less than the rates.

BENCH_PROFILE=/tmp/worker.prof runs the worker under cProfile (its rate is then not a figure).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from datetime import timedelta
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer

from bench._pipeline import Deployment, interleaved, now
from bench.pipeline_throughput import faust_floor_run, publish


async def worker_span(deployment: Deployment, total: int, timeout: float = 300) -> float:
    """Seconds from the worker's first audit record to the last event's `event.accepted`."""
    consumer = AIOKafkaConsumer(
        deployment.topics.audit,
        bootstrap_servers=deployment.bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        accepted: set[str] = set()
        first, last = None, 0
        started = time.monotonic()
        while len(accepted) < total:
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"worker stalled at {len(accepted)} events")
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for records in batch.values():
                for record in records:
                    first = record.timestamp if first is None else min(first, record.timestamp)
                    if b'"event.accepted"' in record.value:
                        accepted.add(orjson.loads(record.value)["subject_id"])
                        last = max(last, record.timestamp)
        assert first is not None
        return (last - first) / 1000
    finally:
        await consumer.stop()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker_rate(deployment: Deployment, total: int, env: dict[str, str]) -> tuple[float, float]:
    """(events/s, CPU seconds per event) of one worker over the published backlog; the CPU
    from its assignment (start-up excluded) to the last event's record."""
    with deployment.worker(env) as process:
        before = cpu_seconds(process.pid)
        span = asyncio.run(worker_span(deployment, total))
        used = cpu_seconds(process.pid) - before
    return (total - 1) / span, used / total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="K=V[,K=V]",
        help="also time a worker with these settings, in the same rounds (repeatable)",
    )
    args = parser.parse_args()
    lines = interleaved(args.events, now() - timedelta(days=2))
    print(f"events: {len(lines):,} ({sum(map(len, lines)) / len(lines):.0f} bytes each)")
    configs: list[tuple[str, dict[str, str]]] = [("worker", {})]
    for spec in args.worker_env:
        configs.append((spec, dict(pair.split("=", 1) for pair in spec.split(","))))
    ratios: dict[str, list[float]] = {name: [] for name, _ in configs}
    cpu_ratios: dict[str, list[float]] = {name: [] for name, _ in configs}
    for round_ in range(args.rounds):
        # Rotate the order from round to round: a drifting machine load favours none.
        steps = [("floor", {}), *configs]
        shift = round_ % len(steps)
        steps = steps[shift:] + steps[:shift]
        rates: dict[str, float] = {}
        cpus: dict[str, float] = {}
        deployments = []
        try:
            for _ in configs:
                deployment = Deployment(args.bootstrap)
                deployment.create()
                publish(deployment, lines)
                deployments.append(deployment)
            spare = list(deployments)
            for name, env in steps:
                if name == "floor":
                    rates[name], cpu = faust_floor_run(deployments[0], len(lines))
                    cpus[name] = cpu / len(lines)
                else:
                    rates[name], cpus[name] = worker_rate(spare.pop(), len(lines), env)
        finally:
            for deployment in deployments:
                deployment.delete()
        shown = ", ".join(
            f"{name} {rate:,.0f}/s, {cpus[name] * 1e6:.0f} us CPU/event"
            + ("" if name == "floor" else f" ({rate / rates['floor']:.1%} of the floor's rate)")
            for name, rate in rates.items()
        )
        print(f"round {round_ + 1} (load {os.getloadavg()[0]:.1f}): {shown}", flush=True)
        for name, _ in configs:
            ratios[name].append(rates[name] / rates["floor"])
            cpu_ratios[name].append(cpus["floor"] / cpus[name])
    for name, values in ratios.items():
        print(
            f"{name} / floor: rate median {statistics.median(values):.1%}; CPU per event, "
            f"floor / {name}, median {statistics.median(cpu_ratios[name]):.1%} "
            f"({len(values)} rounds)"
        )


if __name__ == "__main__":
    main()
