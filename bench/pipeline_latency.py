"""End-to-end latency from publish to alert on `rems.alerts.v1` at a steady event rate.

    python -m bench.pipeline_latency [--rate 2000] [--seconds 30] [--bootstrap 127.0.0.1:9092]

One `remsguard processor` worker on fresh topics. A publisher process (kafka-python, acks=all,
idempotent; a process of its own, so that it shares no GIL with the alert consumer) sends
`--rate` events/s of many interleaved live sessions (stamped with the wall clock); ~1 in 12
readings is an SpO2 dip or a BP crisis, which the engine alerts on at once. Latency, per
triggering event: the moment a consumer reads its first alert minus the moment the event was
handed to the producer. The first 5 s are warm-up.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import time
from datetime import UTC, datetime

import orjson
from kafka import KafkaConsumer

from bench._pipeline import Deployment, session_events
from remsguard.client import DeviceClient

WARM_UP_S = 5.0
THRESHOLD_RULES = {"SPO2_LOW", "SPO2_CRITICAL", "BP_CRISIS", "BP_RISE"}


def stream(sessions: int, seed: int = 5) -> list[dict[str, object]]:
    """Events of `sessions` sessions, round-robin: each session's events stay in order."""
    rng = random.Random(seed)
    per_session = [session_events(i, datetime.now(UTC), rng) for i in range(sessions)]
    out: list[dict[str, object]] = []
    for step in range(max(len(events) for events in per_session)):
        out += [events[step] for events in per_session if step < len(events)]
    return out


def publisher(
    deployment: Deployment, docs: list[dict[str, object]], rate: int, sent: dict[str, float]
) -> None:
    tick = 0.01
    per_tick = max(1, round(rate * tick))
    with DeviceClient(deployment.bootstrap, deployment.topics) as client:
        started = time.perf_counter()
        for index in range(0, len(docs), per_tick):
            due = started + (index // per_tick) * tick
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            for doc in docs[index : index + per_tick]:
                doc["occurred_at"] = stamp
                client.send(doc)
                sent[str(doc["event_id"])] = time.perf_counter()
        sent["__done__"] = time.perf_counter()
        sent["__rate__"] = len(docs) / (time.perf_counter() - started)


def publisher_process(
    deployment: Deployment,
    docs: list[dict[str, object]],
    rate: int,
    out: multiprocessing.Queue[dict[str, float]],
) -> None:
    """`publisher` in a process of its own; hands back when each event was sent
    (`time.perf_counter` is the system's monotonic clock, the same in every process)."""
    sent: dict[str, float] = {}
    publisher(deployment, docs, rate, sent)
    out.put(sent)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    args = parser.parse_args()
    total = int(args.rate * args.seconds)
    docs = stream(total // 40 + 1)[:total]
    deployment = Deployment(args.bootstrap)
    deployment.create()
    sent: dict[str, float] = {}
    latencies: list[float] = []
    try:
        with deployment.worker():
            consumer = KafkaConsumer(
                deployment.topics.alerts,
                bootstrap_servers=args.bootstrap,
                group_id=None,
                auto_offset_reset="earliest",
                fetch_max_wait_ms=5,
            )
            handed_back: multiprocessing.Queue[dict[str, float]] = multiprocessing.Queue()
            process = multiprocessing.Process(
                target=publisher_process, args=(deployment, docs, args.rate, handed_back)
            )
            started = time.perf_counter()
            process.start()
            arrivals: dict[str, float] = {}  # triggering event id -> when its alert was read
            quiet_since = None
            while True:
                batch = consumer.poll(timeout_ms=50)
                arrived = time.perf_counter()
                for records in batch.values():
                    for record in records:
                        alert = orjson.loads(record.value)
                        if alert["rule"] in THRESHOLD_RULES:
                            arrivals.setdefault(alert["evidence"][0], arrived)
                if not sent and not handed_back.empty():
                    sent = handed_back.get()
                elif not sent and not process.is_alive() and handed_back.empty():
                    raise RuntimeError(f"the publisher exited with code {process.exitcode}")
                if sent:
                    quiet_since = quiet_since or time.perf_counter()
                    if time.perf_counter() - quiet_since > 5:
                        break
            process.join(timeout=30)
            consumer.close()
            for event_id, arrived in arrivals.items():
                at = sent.get(event_id)
                if at is not None and at - started >= WARM_UP_S:
                    latencies.append(arrived - at)
    finally:
        deployment.delete()
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    print(f"published {len(docs):,} events at {sent.get('__rate__', 0):,.0f} events/s")
    print(
        f"alerting events measured: {len(latencies):,}; publish -> alert latency "
        f"p50 {pct(0.50):.0f} ms, p99 {pct(0.99):.0f} ms, max {latencies[-1] * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
