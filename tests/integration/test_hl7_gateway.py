"""`remsguard hl7-gateway` on the real broker: a message is acknowledged once its events are on
their input topics, keyed by session; refusals are dead-lettered without the message."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from hl7.client import MLLPClient
from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient

from .embedded_support import free_port, remsguard
from .test_hl7_embedded import ack_code, bp, oru

pytestmark = pytest.mark.kafka


@pytest.fixture
def gateway(kafka_bootstrap: str, tmp_path: Path) -> Iterator[tuple[int, str, dict[str, str]]]:
    prefix = f"hl7gw-{uuid.uuid4().hex[:8]}-"
    env = {
        **os.environ,
        "REMSGUARD_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "REMSGUARD_TOPIC_PREFIX": prefix,
        "REMSGUARD_METRICS_PORT": "0",
        "REMSGUARD_LOG_FORMAT": "json",
    }
    created = remsguard("topics", "create", env=env)
    assert created.returncode == 0, created.stderr
    port = free_port()
    log = tmp_path / "gateway.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "remsguard", "hl7-gateway", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 60
        while "MLLP on" not in log.read_text(errors="replace"):
            assert process.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.2)
        yield port, prefix, env
    finally:
        process.terminate()
        process.wait(timeout=20)
        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        try:
            admin.delete_topics([n for n in admin.list_topics() if n.startswith(prefix)])
        finally:
            admin.close()


def _read(bootstrap: str, topic: str, count: int) -> list[tuple[bytes | None, dict[str, object]]]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=10_000,
    )
    try:
        out: list[tuple[bytes | None, dict[str, object]]] = []
        for record in consumer:
            out.append((record.key, orjson.loads(record.value)))
            if len(out) >= count:
                break
        return out
    finally:
        consumer.close()


def test_the_gateway_acknowledges_once_the_events_are_on_their_topic(
    gateway: tuple[int, str, dict[str, str]], kafka_bootstrap: str
) -> None:
    port, prefix, _ = gateway
    with MLLPClient("127.0.0.1", port) as client:
        assert ack_code(client.send_message(oru("G-1", -10, bp(121, 79), session="S-GW"))) == "AA"
        no_visit = client.send_message(oru("G-2", -5, bp(121, 79), session=""))
        assert ack_code(no_visit) == "AE" and b"PV1^1^19" in no_visit
    ((key, event),) = _read(kafka_bootstrap, f"{prefix}rems.vitals.v1", 1)
    assert key == b"S-GW"
    assert event["type"] == "vitals.recorded" and event["session_id"] == "S-GW"
    assert event["data"] == {"systolic": 121.0, "diastolic": 79.0}
    ((_, dead),) = _read(kafka_bootstrap, f"{prefix}rems.deadletter.v1", 1)
    assert dead["reason"] == "no_session" and dead["control_id"] == "G-2"
    assert "DOE" not in orjson.dumps(dead).decode()  # the patient's name never leaves
