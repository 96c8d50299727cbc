"""Shared pieces of the pipeline benchmarks: an isolated deployment (fresh topics and group),
a `remsguard processor` subprocess, and deterministic events."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from kafka.admin import KafkaAdminClient

from remsguard.adapters.kafka.topics import Topics, create_topics

PARTITIONS = 6


class Deployment:
    def __init__(self, bootstrap: str, partitions: int = PARTITIONS) -> None:
        self.bootstrap = bootstrap
        self.partitions = partitions
        self.name = f"bench{uuid.uuid4().hex[:8]}"
        self.topics = Topics.named(f"{self.name}-")
        self.log = Path(f"/tmp/{self.name}-worker.log")

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            REMSGUARD_KAFKA_BOOTSTRAP=self.bootstrap,
            REMSGUARD_TOPIC_PREFIX=f"{self.name}-",
            REMSGUARD_PROCESSOR_APP_ID=f"{self.name}-app",
            REMSGUARD_TOPIC_PARTITIONS=str(self.partitions),
            REMSGUARD_METRICS_PORT="0",
            REMSGUARD_LOG_FORMAT="json",
            REMSGUARD_LOG_LEVEL="warning",
        )
        return env

    def create(self) -> None:
        create_topics(self.bootstrap, self.topics, self.partitions, 1)

    @contextmanager
    def worker(self, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
        with self.log.open("wb") as log:
            profile = os.environ.get("BENCH_PROFILE")  # a path: run the worker under cProfile
            prefix = ["-m", "cProfile", "-o", profile] if profile else []
            # BENCH_SAMPLE (a path): a CPU-time sampler in the worker (bench/_sampled_worker.py)
            command = ["-m", "bench._sampled_worker"] if os.environ.get("BENCH_SAMPLE") else []
            process = subprocess.Popen(
                [sys.executable, *prefix, *(command or ["-m", "remsguard", "processor"])],
                env=self.env() | (env or {}),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            try:
                self._wait_assigned(process)
                yield process
            finally:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)

    def _wait_assigned(self, process: subprocess.Popen[bytes], timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        port = None
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log.read_text()[-3000:]}")
            if port is None:
                found = re.search(
                    rb"metrics and health on http://[^:]+:(\d+)/", self.log.read_bytes()
                )
                port = int(found.group(1)) if found else None
            if port is not None:
                with suppress(OSError):
                    url = f"http://127.0.0.1:{port}/metrics"
                    with urllib.request.urlopen(url, timeout=5) as response:
                        text = response.read().decode()
                    if f"remsguard_processor_partitions {float(self.partitions)}" in text:
                        return
            time.sleep(0.25)
        raise RuntimeError("worker did not get its partitions in time")

    def delete(self) -> None:
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            names = [n for n in admin.list_topics() if n.startswith(self.name)]
            if names:
                admin.delete_topics(names)
        finally:
            admin.close()
        with suppress(OSError):
            self.log.unlink()


def session_events(index: int, dose_at: datetime, rng: random.Random) -> list[dict[str, object]]:
    """One session's events in time order: ~40 events, a few alerts (SpO2 dips, a crisis)."""
    sid = f"s{index:07d}"
    out: list[dict[str, object]] = []

    def add(minute: float, kind: str, data: dict[str, object]) -> None:
        at = dose_at + timedelta(minutes=minute)
        out.append(
            {
                "event_id": f"{sid}-{len(out):03d}",
                "type": kind,
                "session_id": sid,
                "clinic_id": f"clinic-{index % 20}",
                "occurred_at": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "data": data,
            }
        )

    add(-30, "session.opened", {"patient_ref": f"pt-{index}"})
    add(-10, "vitals.recorded", {"systolic": 124, "diastolic": 80, "spo2": 98})
    add(0, "dose.administered", {"drug": "esketamine", "route": "intranasal", "dose_mg": 56})
    for minute in range(3, 120, 3):
        data: dict[str, object] = {"spo2": 85 if rng.random() < 0.1 else 97, "heart_rate": 80}
        if minute % 9 == 0:
            data.update(systolic=rng.choice([126, 128, 190]), diastolic=82)
        add(minute, "vitals.recorded", data)
    add(125, "session.discharged", {"staff_id": "rn", "clinically_stable": True})
    return out


def interleaved(total: int, start: datetime, seed: int = 3, concurrent: int = 300) -> list[bytes]:
    """`total` events of many sessions, interleaved in event-time order."""
    rng = random.Random(seed)
    docs: list[tuple[str, str, dict[str, object]]] = []
    index = 0
    while len(docs) < total:
        for _ in range(concurrent):
            dose_at = start + timedelta(seconds=rng.randrange(0, 6 * 3600))
            for doc in session_events(index, dose_at, rng):
                docs.append((str(doc["occurred_at"]), str(doc["event_id"]), doc))
            index += 1
    docs.sort(key=lambda d: (d[0], d[1]))
    return [orjson.dumps(doc) for _, _, doc in docs[:total]]


def now() -> datetime:
    return datetime.now(UTC)
