"""The audit sink's consumer loop without Kafka or a database: each batch stored before its
offsets are committed, kinds by topic, lag of the audit topic only, a last head on the way out."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from remsguard.handlers.audit_sink import SinkBatch, Stored
from remsguard.handlers.audit_sink_consumer import AuditSinkLoop, SinkTopics

TOPICS = SinkTopics("t-rems.audit.v1", "t-rems.alerts.v1", ("t-rems.vitals.v1",), "rems.audit.v1")


@dataclass(frozen=True)
class Part:
    topic: str
    partition: int


@dataclass(frozen=True)
class Message:
    value: bytes
    offset: int


@dataclass
class FakeConsumer:
    batches: list[Mapping[Any, Sequence[Any]]]
    calls: list[str] = field(default_factory=list)

    def poll(self, timeout_ms: int, max_records: int) -> Mapping[Any, Sequence[Any]]:
        self.calls.append("poll")
        return self.batches.pop(0) if self.batches else {}

    def commit(self) -> None:
        self.calls.append("commit")

    def assignment(self) -> Iterable[Any]:
        return [Part(TOPICS.audit, 0), Part(TOPICS.alerts, 0)]

    def highwater(self, partition: Any) -> int | None:
        return 10

    def position(self, partition: Any) -> int:
        return 4


@dataclass
class FakeTelemetry:
    lags: list[tuple[str, int, int]] = field(default_factory=list)
    batches: list[tuple[int, int]] = field(default_factory=list)

    def audit_batch(self, inserted: int, duplicates: int, seconds: float) -> None:
        self.batches.append((inserted, duplicates))

    def set_consumer_lag(self, topic: str, partition: int, lag: int) -> None:
        self.lags.append((topic, partition, lag))

    def up(self, service: str, running: bool = True) -> None:
        pass


def test_batches_are_stored_before_commit_and_a_head_is_signed_at_the_end() -> None:
    consumer = FakeConsumer(
        [
            {
                Part(TOPICS.audit, 0): [Message(b"not json", 3)],
                Part(TOPICS.alerts, 0): [Message(b"{}", 7)],
                Part("t-rems.vitals.v1", 1): [Message(b"[]", 1)],
            }
        ]
    )
    stored: list[SinkBatch] = []
    signed: list[int] = []

    def store(batch: SinkBatch) -> Stored:
        consumer.calls.append("store")
        stored.append(batch)
        return Stored(records=0, duplicates=0, alerts=0, sessions=0)

    telemetry = FakeTelemetry()
    loop = AuditSinkLoop(
        consumer, TOPICS, store, telemetry, sign_head=lambda: signed.append(1), idle_timeout=0.0
    )
    loop.run()
    assert consumer.calls[:3] == ["poll", "store", "commit"]
    assert sorted(where for where, _ in stored[0].malformed) == [
        "t-rems.alerts.v1/0@7",
        "t-rems.audit.v1/0@3",
    ]  # read as an alert and an audit record; the input topic's line as an event
    assert telemetry.batches == [(0, 0)]
    assert telemetry.lags == [("rems.audit.v1", 0, 6)]  # the audit topic only, unprefixed
    assert signed == [1]


def test_kinds_by_topic() -> None:
    assert [TOPICS.kind(t) for t in TOPICS.all] == ["audit", "alert", "event"]
