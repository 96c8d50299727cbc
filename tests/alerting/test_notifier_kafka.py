"""`remsguard notifier` on a real broker: alerts from the topic are stored and notified once,
duplicates on the topic and a restart of the notifier notify nothing twice."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from remsguard.adapters.storage import AuditQuery, ComplianceLog
from remsguard.alerting import records
from remsguard.alerting.notifier import run_notifier
from remsguard.config import Settings
from remsguard.contract.outbound import alert_to_json

from .support import alert

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.skipif(not records.KINDS_AVAILABLE, reason="alerting audit kinds not registered"),
]


def _publish(bootstrap: str, topic: str, values: list[bytes]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for value in values:
        producer.send(topic, value)
    producer.flush()
    producer.close()


async def _run_until(settings: Settings, done: Callable[[], bool], timeout: float = 60) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(run_notifier(settings, stop))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not done() and loop.time() < deadline and not task.done():
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)  # let the commit of the last batch happen
    stop.set()
    await task


def test_notifier_stores_and_notifies_each_alert_once(kafka_bootstrap: str, tmp_path: Path) -> None:
    prefix = f"notifier-{uuid.uuid4().hex[:8]}."
    db = f"sqlite:///{tmp_path / 'log.db'}"
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=prefix,
        database_url=db,
        metrics_port=0,
        notifier_group_id=f"{prefix}notifier",
    )
    topic = f"{prefix}rems.alerts.v1"
    a1, a2 = alert_to_json(alert("k1")), alert_to_json(alert("k2", session="s2"))
    _publish(kafka_bootstrap, topic, [a1, a1, b"not json", a2])

    def notified() -> int:
        with ComplianceLog.open(db) as log:
            return len(log.audit_records(AuditQuery(kind=records.NOTIFIED, limit=100)).items)

    asyncio.run(_run_until(settings, lambda: notified() >= 2))
    assert notified() == 2
    _publish(kafka_bootstrap, topic, [a2, a1])  # redelivered by an upstream retry
    asyncio.run(_run_until(settings, lambda: False, timeout=8))  # a restart, same group
    with ComplianceLog.open(db) as log:
        rows = log.audit_records(AuditQuery(kind=records.NOTIFIED, limit=100)).items
        assert sorted(r.subject_id for r in rows) == ["k1", "k2"]
        stored = log.get_alert("k1")
        assert stored is not None and stored.status == "open"
        assert orjson.loads(rows[0].detail)["rule"] == "BP_CRISIS"
