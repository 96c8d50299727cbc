"""Helpers for the stream-processor tests: isolated topic names, workers as subprocesses,
scenario files, and reading the output topics. Every wait is bounded."""

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
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient

from remsguard.adapters.kafka.topics import Topics, create_topics
from remsguard.bootstrap import build_engine
from remsguard.client import DeviceClient
from remsguard.contract.outbound import alert_to_json
from remsguard.handlers.replay import ReplayEvents, replay

PARTITIONS = 3
READY_TIMEOUT_S = 60


@dataclass
class Stack:
    """One isolated processor deployment on the shared broker: its own topics and group."""

    bootstrap: str
    name: str
    log_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    workers: list[Worker] = field(default_factory=list)

    @property
    def topics(self) -> Topics:
        return Topics.named(f"{self.name}-")

    @property
    def group(self) -> str:
        """The workers' consumer group (faust's group id is the app id)."""
        return f"{self.name}-app"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            REMSGUARD_KAFKA_BOOTSTRAP=self.bootstrap,
            REMSGUARD_TOPIC_PREFIX=f"{self.name}-",
            REMSGUARD_PROCESSOR_APP_ID=self.group,
            REMSGUARD_TOPIC_PARTITIONS=str(PARTITIONS),
            REMSGUARD_METRICS_PORT="0",
            REMSGUARD_LOG_FORMAT="json",
            # REMSGUARD_TEST_WORKER_LOG_LEVEL=info: the workers' "processor state" lines too
            REMSGUARD_LOG_LEVEL=os.environ.get("REMSGUARD_TEST_WORKER_LOG_LEVEL", "warning"),
            REMSGUARD_REMS_GATE="false",  # not about the gate: patients are not enrolled
            REMSGUARD_CLOCK_IDLE_GRACE_SECONDS="2",
            REMSGUARD_CLOCK_TICK_SECONDS="0.25",
            REMSGUARD_PROCESSOR_SESSION_TIMEOUT_SECONDS="6",
        )
        env.update(self.extra_env)
        return env

    def create_topics(self) -> None:
        create_topics(self.bootstrap, self.topics, PARTITIONS, 1)

    def start_worker(self, *args: str) -> Worker:
        index = len(self.workers)
        log = self.log_dir / f"worker-{index}.log"
        handle = log.open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "remsguard", "processor", *args],
            env=self.env(),
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        worker = Worker(process, log)
        self.workers.append(worker)
        return worker

    def publish(self, lines: Iterable[bytes]) -> int:
        with DeviceClient(self.bootstrap, self.topics) as client:
            return client.send_all(line for line in lines if line.strip())

    def stop_all(self) -> None:
        for worker in self.workers:
            worker.stop()

    def input_partitions(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t in self.topics.inputs for p in range(PARTITIONS)]

    def committed(self) -> dict[TopicPartition, int]:
        """The group's committed offsets on the input topics, as the broker has them: where a
        worker taking a partition over starts reading it (0: nothing committed, the start)."""
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            offsets = admin.list_group_offsets({self.group: self.input_partitions()})
        finally:
            admin.close()
        got = offsets.get(self.group, {})
        return {tp: max(0, got[tp].offset) if tp in got else 0 for tp in self.input_partitions()}

    def input_ends(self) -> dict[TopicPartition, int]:
        """The log-end offsets of the input topics."""
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None)
        try:
            ends: dict[TopicPartition, int] = consumer.end_offsets(self.input_partitions())
        finally:
            consumer.close()
        return ends


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log: Path
    port: int | None = None

    def metrics_port(self, timeout: float = READY_TIMEOUT_S) -> int:
        deadline = time.monotonic() + timeout
        while self.port is None:
            match = re.search(rb"metrics and health on http://[^:]+:(\d+)/", self.log.read_bytes())
            if match:
                self.port = int(match.group(1))
                break
            self._alive_or_fail()
            if time.monotonic() > deadline:
                raise AssertionError(f"worker printed no metrics address:\n{self.tail()}")
            time.sleep(0.1)
        return self.port

    def metrics(self) -> dict[str, float]:
        """Metric samples (name{labels} -> value) from the worker's /metrics."""
        url = f"http://127.0.0.1:{self.metrics_port()}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def metric_sum(self, prefix: str) -> float:
        return sum(v for k, v in self.metrics().items() if k.startswith(prefix))

    def partitions(self) -> int:
        with suppress(OSError):
            return int(self.metrics().get("remsguard_processor_partitions", 0))
        return 0

    def healthy(self) -> bool:
        url = f"http://127.0.0.1:{self.metrics_port()}/healthz"
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)

    def wait_assigned(self, partitions: int = PARTITIONS, timeout: float = READY_TIMEOUT_S) -> None:
        """Until the worker actively owns `partitions` partitions (after its recovery)."""
        deadline = time.monotonic() + timeout
        while True:
            self._alive_or_fail()
            with suppress(OSError):
                if self.metrics().get("remsguard_processor_partitions") == partitions:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"worker not assigned {partitions} partitions:\n{self.tail()}")
            time.sleep(0.25)

    def processed(self) -> float:
        return self.metric_sum('remsguard_processor_messages_total{kind="input"')

    def _alive_or_fail(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"worker exited {self.process.returncode}:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def kill9(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self, timeout: float = 30) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode


@contextmanager
def stack(bootstrap: str, tmp_path: Path, **extra_env: str) -> Iterator[Stack]:
    name = f"t{uuid.uuid4().hex[:10]}"
    the_stack = Stack(bootstrap, name, tmp_path, dict(extra_env))
    the_stack.create_topics()
    try:
        yield the_stack
    finally:
        the_stack.stop_all()
        _delete_topics(bootstrap, name)


def _delete_topics(bootstrap: str, prefix: str) -> None:
    """The deployment's topics (inputs, outputs, ticks, changelog) go with it."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        names = [n for n in admin.list_topics() if n.startswith(prefix)]
        if names:
            with suppress(Exception):
                admin.delete_topics(names)
    finally:
        admin.close()


# -- reading topics ---------------------------------------------------------------------------


def _consumer(bootstrap: str, topic: str) -> KafkaConsumer:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    return consumer


def read_until(
    bootstrap: str,
    topic: str,
    done: Any,
    *,
    timeout: float,
    quiet: float = 1.5,
) -> list[Any]:
    """Records of `topic` from the beginning until `done(records)` and then `quiet` seconds
    without a new one (to catch extras), or until `timeout`."""
    consumer = _consumer(bootstrap, topic)
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    satisfied_at: float | None = None
    try:
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=200, max_records=10_000)
            fresh = [r for rs in batch.values() for r in rs]
            records.extend(fresh)
            if fresh:
                satisfied_at = None
            if done(records):
                satisfied_at = satisfied_at or time.monotonic()
                if time.monotonic() - satisfied_at >= quiet:
                    break
            else:
                satisfied_at = None
    finally:
        consumer.close()
    return records


def alerts_of(records: list[Any]) -> list[dict[str, Any]]:
    """The alerts a run of the alerts topic leaves standing: raised, and not withdrawn (a
    withdrawal message has `"kind": "alert.withdrawn"`)."""
    messages = [orjson.loads(r.value) for r in records]
    withdrawn = {m["alert_id"] for m in messages if m.get("kind") == "alert.withdrawn"}
    return [m for m in messages if "kind" not in m and m["alert_id"] not in withdrawn]


def wait_for_alerts(
    stack: Stack, expected: set[str], *, timeout: float, quiet: float = 2.0
) -> list[dict[str, Any]]:
    records = read_until(
        stack.bootstrap,
        stack.topics.alerts,
        lambda rs: expected <= {a["alert_id"] for a in alerts_of(rs)},
        timeout=timeout,
        quiet=quiet,
    )
    return alerts_of(records)


# -- scenarios --------------------------------------------------------------------------------


def replay_alerts(
    lines: list[bytes],
    until: datetime,
    protocol_files: list[Path] | None = None,
    default_protocol: str = "spravato-rems",
) -> list[dict[str, Any]]:
    """The alerts `remsguard replay FILE --until UNTIL` leaves standing (printed and not
    withdrawn), as dicts."""
    engine = build_engine(default_protocol, protocol_files)
    out: list[dict[str, Any]] = []
    withdrawn: set[str] = set()
    replay(
        ReplayEvents(lines, until),
        engine,
        lambda alert: out.append(orjson.loads(alert_to_json(alert))),
        lambda _line, _rejection: None,
        on_withdrawal=lambda withdrawal: withdrawn.add(withdrawal.alert_id),
    )
    return [alert for alert in out if alert["alert_id"] not in withdrawn]


def stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class SessionWriter:
    """Events of one session at minute offsets from its dose time."""

    def __init__(self, session_id: str, dose_at: datetime, clinic: str = "clinic-1") -> None:
        self.session_id, self.dose_at, self.clinic = session_id, dose_at, clinic
        self.n = 0
        self.events: list[tuple[datetime, dict[str, Any]]] = []

    def add(self, minute: float, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        self.n += 1
        at = self.dose_at + timedelta(minutes=minute)
        doc = {
            "event_id": f"{self.session_id}-{self.n:03d}",
            "type": kind,
            "session_id": self.session_id,
            "clinic_id": self.clinic,
            "occurred_at": stamp(at),
            "data": data,
        }
        self.events.append((at, doc))
        return doc

    def opened(self, minute: float = -30, **data: Any) -> None:
        self.add(minute, "session.opened", {"patient_ref": f"pt-{self.session_id}", **data})

    def bp(self, minute: float, systolic: int = 120, diastolic: int = 78, **more: Any) -> None:
        self.add(minute, "vitals.recorded", {"systolic": systolic, "diastolic": diastolic, **more})

    def vitals(self, minute: float, **data: Any) -> None:
        self.add(minute, "vitals.recorded", data)

    def dose(self, minute: float = 0) -> None:
        self.add(
            minute,
            "dose.administered",
            {"drug": "esketamine", "route": "intranasal", "dose_mg": 56},
        )

    def assess(self, minute: float, moaas: int) -> None:
        self.add(minute, "assessment.recorded", {"sedation_moaas": moaas})

    def discharge(self, minute: float) -> None:
        self.add(minute, "session.discharged", {"staff_id": "rn-1", "clinically_stable": True})


def clinic_day(
    prefix: str, start: datetime, sessions: int, seed: int, spread_minutes: int = 600
) -> list[tuple[datetime, dict[str, Any]]]:
    """Interleaved sessions: compliant ones and ones that break a rule (by design, varied)."""
    rng = random.Random(seed)
    out: list[tuple[datetime, dict[str, Any]]] = []
    for index in range(sessions):
        s = SessionWriter(
            f"{prefix}-{index:04d}",
            start + timedelta(minutes=rng.randrange(0, spread_minutes)),
            clinic=f"clinic-{index % 3}",
        )
        flavour = index % 8
        s.opened(-30)
        if flavour != 1:
            s.bp(-10, 150 if flavour == 2 else 124, 80)
        s.dose(0)
        minute = 5
        while minute <= 125:
            if flavour == 3 and 30 <= minute <= 50:  # no BP in the 40-minute window
                s.vitals(minute, spo2=97)
            elif flavour == 4 and 60 <= minute < 80:  # a vitals gap
                pass
            elif flavour == 5 and minute == 45:
                s.bp(minute, 185, 100)  # crisis (and rise)
            elif flavour == 6 and minute in (20, 25):
                s.vitals(minute, spo2=90, systolic=130, diastolic=82)
            else:
                s.bp(minute, 120 + rng.randrange(-8, 20), 78 + rng.randrange(-5, 10), spo2=97)
            if minute in (30, 90):
                s.assess(minute + 0.5, 2 if (flavour == 7 and minute == 30) else 5)
            minute += 5
        if flavour == 0 and index % 16 == 0:
            s.discharge(100)  # early discharge
        elif flavour != 4 or index % 3:
            s.discharge(127)
        out.extend(s.events)
    return out


def to_lines(events: list[tuple[datetime, dict[str, Any]]]) -> list[bytes]:
    return [orjson.dumps(doc) for _, doc in events]


def in_time_order(
    events: list[tuple[datetime, dict[str, Any]]],
) -> list[tuple[datetime, dict[str, Any]]]:
    return sorted(events, key=lambda pair: (pair[0], pair[1]["event_id"]))


def with_duplicates(
    events: list[tuple[datetime, dict[str, Any]]], rate: float, seed: int
) -> list[tuple[datetime, dict[str, Any]]]:
    """Some events sent again a few positions later (a device retrying)."""
    rng = random.Random(seed)
    out = list(events)
    for index in range(len(events) - 1, -1, -1):
        if rng.random() < rate:
            out.insert(min(len(out), index + rng.randrange(1, 50)), events[index])
    return out


def cross_topic_reordered(
    events: list[tuple[datetime, dict[str, Any]]], seed: int, max_delay_minutes: float = 4.0
) -> list[tuple[datetime, dict[str, Any]]]:
    """Arrival order: vitals and dosing delayed by up to `max_delay_minutes` of event time
    (less than the protocol's 5-minute lateness), sessions-topic events on time."""
    rng = random.Random(seed)
    keyed = []
    for at, doc in events:
        delay = (
            0.0
            if doc["type"].startswith(("session.", "assessment."))
            else rng.uniform(0, max_delay_minutes)
        )
        keyed.append((at + timedelta(minutes=delay), doc["event_id"], (at, doc)))
    keyed.sort(key=lambda k: (k[0], k[1]))
    return [pair for _, _, pair in keyed]


def ids(alerts: list[dict[str, Any]]) -> set[str]:
    return {a["alert_id"] for a in alerts}


def as_set(alerts: list[dict[str, Any]]) -> set[bytes]:
    """Alerts as comparable values (the whole record, not just the id)."""
    return {orjson.dumps(a, option=orjson.OPT_SORT_KEYS) for a in alerts}
