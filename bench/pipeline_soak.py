"""Soak of the processor's state: several simulated clinic days read in accelerated event
time, with and without eviction, and the session changelog's compacted size day by day.

    python -m bench.pipeline_soak [--days 4] [--sessions-per-day 400] [--bootstrap ...]

The events (`bench._pipeline.session_events`, ~42 a session, doses spread over 08:00-18:00
of each day) start `--days`+1 days ago and are published once per run to fresh topics; a
worker reads them as a backlog (its clock follows event time). Run twice in one call: with
eviction (retention 24 h, evicting every second) and without (retention 100,000 h). Then the
changelog topic is read from the start, and at every event-time day boundary (the latest
activity among the session values written so far) the compacted view is taken as Kafka's
log compaction leaves it: the latest value per key, deleted keys dropped. That is what a
worker's recovery reads, and what the topic's compacted size converges to.
"""

from __future__ import annotations

import argparse
import asyncio
import random
from datetime import UTC, datetime, time, timedelta

import orjson
from kafka import KafkaConsumer, TopicPartition

from bench._pipeline import Deployment, session_events
from bench.pipeline_throughput import publish
from bench.pipeline_vs_floor import worker_span
from remsguard.adapters.kafka.session_view import last_activity
from remsguard.handlers.stored_session import Evicted, decode_stored


def clinic_days(days: int, per_day: int, seed: int = 11) -> list[bytes]:
    rng = random.Random(seed)
    first = datetime.combine(datetime.now(UTC).date(), time(8), UTC) - timedelta(days=days + 1)
    docs = []
    for day in range(days):
        for i in range(per_day):
            dose_at = first + timedelta(days=day, seconds=rng.randrange(0, 10 * 3600))
            docs += session_events(day * per_day + i, dose_at, rng)
    docs.sort(key=lambda d: (str(d["occurred_at"]), str(d["event_id"])))
    return [orjson.dumps(d) for d in docs]


def compacted_by_day(bootstrap: str, topic: str, partitions: int) -> list[tuple[str, ...]]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    ends = consumer.end_offsets(tps)
    records = []
    while any(consumer.position(tp) < ends[tp] for tp in tps):
        for batch in consumer.poll(timeout_ms=1000, max_records=50_000).values():
            records += batch
    consumer.close()
    records.sort(key=lambda r: (r.timestamp, r.partition, r.offset))
    latest: dict[bytes, bytes] = {}
    clock: datetime | None = None
    day: object = None
    rows = []

    def row(label: str) -> tuple[str, ...]:
        live = sum(1 for v in latest.values() if not isinstance(decode_stored(v)[1], Evicted))
        size = sum(len(k) + len(v) for k, v in latest.items())
        return (label, f"{live:,}", f"{len(latest) - live:,}", f"{size / 1e6:.2f} MB")

    for record in records:
        if record.value is None:
            latest.pop(record.key, None)
        else:
            latest[record.key] = record.value
            stored = decode_stored(record.value)[1]
            at = stored.end if isinstance(stored, Evicted) else last_activity(stored)
            if at is not None and (clock is None or at > clock):
                clock = at
        if clock is not None and clock.date() != day:
            if day is not None:
                rows.append(row(f"start of {clock.date()}"))
            day = clock.date()
    rows.append(row("end"))
    return rows


def run(bootstrap: str, lines: list[bytes], retention_hours: str) -> list[tuple[str, ...]]:
    deployment = Deployment(bootstrap)
    deployment.create()
    env = {
        "REMSGUARD_SESSION_RETENTION_HOURS": retention_hours,
        "REMSGUARD_SESSION_EVICTION_SECONDS": "1",
    }
    try:
        publish(deployment, lines)
        with deployment.worker(env):
            asyncio.run(worker_span(deployment, len(lines)))
            asyncio.run(asyncio.sleep(5))  # the last evictions and flushes
        topic = f"{deployment.name}-app-sessions-changelog"
        return compacted_by_day(bootstrap, topic, deployment.partitions)
    finally:
        deployment.delete()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=4)
    parser.add_argument("--sessions-per-day", type=int, default=400)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    args = parser.parse_args()
    lines = clinic_days(args.days, args.sessions_per_day)
    print(f"events: {len(lines):,}, {args.days} days of {args.sessions_per_day} sessions")
    for label, hours in (("eviction (24 h)", "24"), ("no eviction", "100000")):
        print(f"\n{label}: point in event time | live sessions | tombstone records | compacted")
        for cells in run(args.bootstrap, lines, hours):
            print(" | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
