"""Issue 15: the Kafka path fails loudly, clearly and never silently. Each test reproduces a
finding on the real broker, with its own REMSGUARD_TOPIC_PREFIX and processor app id, and
bounds every wait."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from remsguard.adapters.kafka.errors import DeliveryFailed
from remsguard.adapters.kafka.topics import Topics, changelog_topic
from remsguard.client import DeviceClient, RefusedEvent

from .processor_kit import PARTITIONS, SessionWriter, Stack, read_until, stack

pytestmark = pytest.mark.kafka


def _env(bootstrap: str, name: str) -> dict[str, str]:
    """A deployment's environment (its own prefix and app id), a short connect timeout."""
    deployment = Stack(bootstrap, name, Path("."))
    return {**deployment.env(), "REMSGUARD_KAFKA_CONNECT_TIMEOUT_SECONDS": "3"}


def _remsguard(*args: str, env: dict[str, str], timeout: float = 60) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "remsguard", *args],
        env=env,
        input=b"",
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def _vitals(session: str, n: int, *, note_bytes: int = 0, at: datetime | None = None) -> bytes:
    data: dict[str, Any] = {"systolic": 120, "diastolic": 80}
    doc: dict[str, Any] = {
        "event_id": f"{session}-{n}",
        "type": "vitals.recorded",
        "session_id": session,
        "clinic_id": "clinic-1",
        "occurred_at": (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "data": data,
    }
    if note_bytes:
        doc["pad"] = "x" * note_bytes
    return orjson.dumps(doc)


def _delete(bootstrap: str, prefix: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        names = [n for n in admin.list_topics() if n.startswith(prefix)]
        if names:
            admin.delete_topics(names)
    finally:
        admin.close()


# -- 1 and 9: publish checks every send, says what it did with each line ----------------------


def test_a_message_the_broker_refuses_is_never_reported_as_published(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Item 1: a 2 MB event used to be `published 1 events`, exit 0, and was not on the
    topic. Now publish refuses it before sending (the topic's max.message.bytes), says so
    by line, exits 1; the client raises; and a send the broker refuses anyway (the size
    check bypassed) is a `DeliveryFailed`, never silence. Item 9: malformed lines are
    dead-lettered (default) or skipped and counted (`--skip-invalid`), exit 0."""
    name = f"t15a{uuid.uuid4().hex[:8]}"
    env = _env(kafka_bootstrap, name)
    topics = Topics.named(f"{name}-")
    try:
        big = tmp_path / "big.jsonl"
        big.write_bytes(_vitals("s-big", 1) + b"\n" + _vitals("s-big", 2, note_bytes=2_000_000))
        done = _remsguard("publish", str(big), env=env)
        err = done.stderr.decode()
        assert done.returncode == 1, err
        assert "line 2: not published: message_too_large" in err
        assert "published 1 events" in err and "refused (message_too_large: 1)" in err
        records = read_until(kafka_bootstrap, topics.vitals, lambda rs: len(rs) >= 1, timeout=10)
        assert [orjson.loads(r.value)["event_id"] for r in records] == ["s-big-1"]

        with DeviceClient(kafka_bootstrap, topics) as client:
            with pytest.raises(RefusedEvent) as refused:
                client.send(_vitals("s-big", 3, note_bytes=2_000_000))
            assert refused.value.reason == "message_too_large"
            with pytest.raises(RefusedEvent) as keyless:
                client.send(orjson.dumps({**orjson.loads(_vitals("x", 1)), "session_id": None}))
            assert keyless.value.reason == "no_key"
        blind = DeviceClient(kafka_bootstrap, topics, message_limits={})  # no size check
        blind.send(_vitals("s-big", 4, note_bytes=2_000_000), label="the big one")
        with pytest.raises(DeliveryFailed) as failed:
            blind.flush(30)
        assert failed.value.failures[0][0] == "the big one"
        assert "too large" in failed.value.failures[0][1]
        blind.close()

        mixed = tmp_path / "mixed.jsonl"
        mixed.write_bytes(
            b"\n".join(
                [_vitals("s-ok", 1), b'{"event_id": "trunc', _vitals("s-ok", 2)[:-3] + b"}}"]
            )
            + b"\n"
        )
        default = _remsguard("publish", str(mixed), env=env)
        said = default.stderr.decode()
        assert default.returncode == 0, said
        assert "line 2: not routable (invalid_json" in said
        assert f"1 unroutable lines sent to {topics.deadletter}" in said
        skipping = _remsguard("publish", "--skip-invalid", str(mixed), env=env)
        assert skipping.returncode == 0, skipping.stderr.decode()
        assert "lines skipped (invalid_json: 1" in skipping.stderr.decode()
    finally:
        _delete(kafka_bootstrap, f"{name}-")


# -- 2, 5, 8: keys checked, JSON logs, honest metrics ---------------------------------------


def test_mis_keyed_messages_are_dead_lettered_and_the_worker_log_is_json(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Item 2: events keyed by device id, or with no key, or on a partition the default
    partitioner would not give their key, used to be processed (284 alerts against 72 with
    two workers). Now each is dead-lettered with its reason and raises nothing. Item 5:
    every line the worker writes is a JSON object. Item 8: metrics on 127.0.0.1, an index
    at /, and a caught-up worker's clock lag reads 0 even on old data."""
    with stack(kafka_bootstrap, tmp_path, REMSGUARD_LOG_LEVEL="info") as deployment:
        topics = deployment.topics
        worker = deployment.start_worker()
        worker.wait_assigned()
        old = datetime.now(UTC) - timedelta(days=2)
        good = SessionWriter("good-1", old)
        good.opened()
        good.bp(-10)
        good.dose()
        bad = SessionWriter("bad-1", old)
        bad.opened()
        bad.vitals(5, spo2=80)  # would raise SPO2_CRITICAL if it were processed
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        try:
            for _, doc in good.events:
                producer.send(topics.for_type(doc["type"]), key=b"good-1", value=orjson.dumps(doc))
            opened, reading = (orjson.dumps(doc) for _, doc in bad.events)
            producer.send(topics.sessions, key=b"monitor-7", value=opened)  # a device id
            producer.send(topics.vitals, key=None, value=reading)
            wrong = (_partition_of(b"bad-1") + 1) % PARTITIONS
            producer.send(topics.vitals, key=b"bad-1", value=reading, partition=wrong)
            producer.flush(30)
        finally:
            producer.close()
        letters = read_until(
            kafka_bootstrap, topics.deadletter, lambda rs: len(rs) >= 3, timeout=60
        )
        reasons = sorted(dict(r.headers)["reason"].decode() for r in letters)
        assert reasons == ["key_mismatch", "no_key", "wrong_partition"]
        detail = dict(letters[0].headers)["detail"].decode()
        assert "session_id" in detail or "partition" in detail
        alerts = read_until(kafka_bootstrap, topics.alerts, lambda rs: False, timeout=4)
        assert not [a for a in alerts if orjson.loads(a.value)["session_id"] == "bad-1"]

        port = worker.metrics_port()
        assert re.search(
            rb"metrics and health on http://127\.0\.0\.1:\d+/", worker.log.read_bytes()
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as index:
            assert b"/metrics" in index.read() and index.status == 200
        deadline = time.monotonic() + 30
        while True:
            lags = {
                k: v
                for k, v in worker.metrics().items()
                if k.startswith("remsguard_processor_clock_lag_seconds")
            }
            if lags and max(lags.values()) < 5:
                break
            assert time.monotonic() < deadline, lags
            time.sleep(0.5)
        assert worker.healthy()
        time.sleep(1)
        worker.stop()
    lines = worker.log.read_bytes().splitlines()
    assert any(b"processor state" in line for line in lines)
    for line in lines:
        assert isinstance(json.loads(line), dict), line
        assert b"\x1b" not in line, line


def _partition_of(key: bytes) -> int:
    from kafka.partitioner.default import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % PARTITIONS


# -- 3 and 4: layouts and brokers checked first, one or two lines, the right exit code -------


def test_a_wrong_layout_is_refused_before_anything_is_created(kafka_bootstrap: str) -> None:
    """Items 3 and 4: an input topic or the processor's changelog with another partition
    count used to give a 54-line traceback (after creating the other topics) or a crash
    loop behind a green health check; now every command refuses in one or two lines,
    exit 2, and creates nothing."""
    name = f"t15c{uuid.uuid4().hex[:8]}"
    env = _env(kafka_bootstrap, name)
    topics = Topics.named(f"{name}-")
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.create_topics([NewTopic(changelog_topic(f"{name}-app"), PARTITIONS - 1, 1)])
        started = time.monotonic()
        worker = _remsguard("processor", env=env, timeout=60)
        assert time.monotonic() - started < 20
        err = worker.stderr.decode().strip().splitlines()
        assert worker.returncode == 2, err
        assert len(err) <= 2 and "sessions-changelog has 2" in err[0], err
        assert not [n for n in admin.list_topics() if n.startswith(f"{name}-rems.")]
        admin.delete_topics([changelog_topic(f"{name}-app")])

        admin.create_topics([NewTopic(topics.vitals, PARTITIONS + 1, 1)])
        for command in (["topics", "create"], ["publish", "-"], ["processor"]):
            done = _remsguard(*command, env=env)
            lines = done.stderr.decode().strip().splitlines()
            assert done.returncode == 2, (command, lines)
            assert len(lines) <= 2 and f"{topics.vitals} has {PARTITIONS + 1}" in lines[0]
            assert "Traceback" not in done.stderr.decode()
        assert [n for n in admin.list_topics() if n.startswith(f"{name}-")] == [topics.vitals]
        debug = _remsguard("--debug", "topics", "create", env=env)
        assert debug.returncode != 0 and "Traceback" in debug.stderr.decode()
    finally:
        admin.close()
        _delete(kafka_bootstrap, f"{name}-")


@pytest.mark.parametrize(
    "command",
    [
        ["topics", "create"],
        ["publish", "-"],
        ["processor"],
        ["alerts", "tail", "--idle-timeout", "1"],
        ["deadletter", "list"],
    ],
)
def test_an_unreachable_broker_is_one_line_and_exit_1_within_the_timeout(
    command: list[str],
) -> None:
    """Item 4: 34-36 s and 138-176 lines of traceback used to end every command."""
    env = _env("127.0.0.1:1", f"t15d{uuid.uuid4().hex[:8]}")
    env["REMSGUARD_KAFKA_CONNECT_TIMEOUT_SECONDS"] = "2"
    started = time.monotonic()
    done = _remsguard(*command, env=env, timeout=60)
    took = time.monotonic() - started
    lines = done.stderr.decode().strip().splitlines()
    assert done.returncode == 1, lines
    assert took < 12, took
    assert len(lines) <= 2 and "cannot reach the Kafka broker at 127.0.0.1:1" in lines[0], lines


# -- 6: consumer groups belong to their environment -------------------------------------------


def test_the_audit_sink_group_derives_from_the_prefix(kafka_bootstrap: str, tmp_path: Path) -> None:
    name = f"t15e{uuid.uuid4().hex[:8]}"
    env = _env(kafka_bootstrap, name)
    try:
        assert _remsguard("topics", "create", env=env).returncode == 0
        done = _remsguard(
            "audit-sink",
            "--db",
            f"sqlite:///{tmp_path / 'log.db'}",
            "--idle-timeout",
            "3",
            env=env,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        try:
            groups = {g["group_id"] for g in admin.list_groups()}
        finally:
            admin.close()
        assert f"{name}-remsguard-audit-sink" in groups
    finally:
        _delete(kafka_bootstrap, f"{name}-")
