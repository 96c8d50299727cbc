"""Pipeline throughput against the raw aiokafka consume rate of the same input, same run.

    python -m bench.pipeline_throughput [--events 60000] [--bootstrap 127.0.0.1:9092]

1. raw: the events are published to fresh input topics, then one aiokafka consumer reads
   them all from the beginning (no decoding): the ceiling for a Python consumer here;
2. faust floor: a faust worker with the processor's consumer shape but an agent that only
   acks (`bench/_faust_floor.py`) reads the same topics: the ceiling for a faust worker;
3. pipeline: a `remsguard processor` worker is started on other fresh topics, the same
   events are published, and the clock runs from the first publish to the moment the audit
   record of the last event (`event.accepted` for every event) has been read back.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench._pipeline import Deployment, interleaved, now
from remsguard.client import DeviceClient


def publish(deployment: Deployment, lines: list[bytes]) -> float:
    started = time.perf_counter()
    with DeviceClient(deployment.bootstrap, deployment.topics) as client:
        client.send_all(lines)
    return time.perf_counter() - started


async def raw_consume(deployment: Deployment, total: int) -> float:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=deployment.bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [
            TopicPartition(topic, p)
            for topic in deployment.topics.inputs
            for p in range(deployment.partitions)
        ]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = 0
        started = time.perf_counter()
        while seen < total:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            seen += sum(len(records) for records in batch.values())
        return time.perf_counter() - started
    finally:
        await consumer.stop()


async def pipeline(deployment: Deployment, lines: list[bytes]) -> tuple[float, float]:
    """(seconds from first publish to the last audit record, seconds publishing)."""
    consumer = AIOKafkaConsumer(
        deployment.topics.audit,
        bootstrap_servers=deployment.bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    published: dict[str, float] = {}
    try:
        thread = threading.Thread(
            target=lambda: published.update(
                started=time.perf_counter(), took=publish(deployment, lines)
            )
        )
        thread.start()
        accepted: set[str] = set()
        last = time.perf_counter()
        while len(accepted) < len(lines):
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for records in batch.values():
                for record in records:
                    if b'"event.accepted"' in record.value:
                        accepted.add(orjson.loads(record.value)["subject_id"])
                        last = time.perf_counter()
            if time.perf_counter() - last > 120:
                raise RuntimeError(f"pipeline stalled at {len(accepted)} events")
        thread.join()
        return last - published["started"], published["took"]
    finally:
        await consumer.stop()


def faust_floor(deployment: Deployment, total: int, timeout: float = 300) -> float:
    """Events/s of a do-nothing faust agent over the already published input topics."""
    return faust_floor_run(deployment, total, timeout)[0]


def faust_floor_run(
    deployment: Deployment, total: int, timeout: float = 300
) -> tuple[float, float]:
    """(events/s, CPU seconds over the same span) of a do-nothing faust agent over the
    already published input topics."""
    command = [
        sys.executable,
        "-m",
        "bench._faust_floor",
        deployment.bootstrap,
        f"{deployment.name}-floor-{uuid.uuid4().hex[:6]}",
        str(total),
        *deployment.topics.inputs,
    ]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as worker:
        try:
            assert worker.stdout is not None
            timer = threading.Timer(timeout, worker.kill)
            timer.start()
            for line in worker.stdout:  # faust may write terminal control codes first
                if b"floor " in line:
                    timer.cancel()
                    rate, _, cpu = line.split(b"floor ")[1].split()
                    return float(rate), float(cpu)
            raise RuntimeError("the faust floor worker stopped before reading every event")
        finally:
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    args = parser.parse_args()
    lines = interleaved(args.events, now() - timedelta(days=2))
    print(f"events: {len(lines):,} ({sum(map(len, lines)) / len(lines):.0f} bytes each)")

    raw = Deployment(args.bootstrap)
    raw.create()
    try:
        took = publish(raw, lines)
        print(f"publish (kafka-python, acks=all, idempotent): {len(lines) / took:,.0f} events/s")
        raw_s = min(asyncio.run(raw_consume(raw, len(lines))) for _ in range(2))
        floor_rate = faust_floor(raw, len(lines))
    finally:
        raw.delete()
    raw_rate = len(lines) / raw_s
    print(f"raw aiokafka consume of the input topics: {raw_rate:,.0f} events/s")
    print(f"faust floor (an agent that only acks, same topics): {floor_rate:,.0f} events/s")

    live = Deployment(args.bootstrap)
    live.create()
    try:
        with live.worker():
            total_s, publish_s = asyncio.run(pipeline(live, lines))
    finally:
        live.delete()
    rate = len(lines) / total_s
    print(
        f"pipeline (1 worker, publish -> last audit record): {rate:,.0f} events/s "
        f"over {total_s:.1f} s (publishing took {publish_s:.1f} s)"
    )
    print(f"pipeline / raw consume: {rate / raw_rate:.1%}")
    print(f"pipeline / faust floor: {rate / floor_rate:.1%}")


if __name__ == "__main__":
    main()
