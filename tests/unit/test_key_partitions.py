"""The processor's output partitions: the producer's own choice, looked up once per key."""

from __future__ import annotations

from typing import Any

from aiokafka.partitioner import DefaultPartitioner
from faust.types import TP

from remsguard.adapters.kafka.outbox import KeyPartitions


class FakeProducer:
    """Partitions like aiokafka's default partitioner; counts the lookups."""

    def __init__(self, partitions: int) -> None:
        self.partitions: int | None = partitions
        self.calls = 0

    def key_partition(self, topic: str, key: bytes) -> TP:
        self.calls += 1
        if self.partitions is None:
            raise TypeError("'NoneType' object is not iterable")  # metadata not loaded
        every = list(range(self.partitions))
        return TP(topic, DefaultPartitioner()(key, every, every))


class FakeApp:
    def __init__(self, producer: FakeProducer) -> None:
        self.producer = producer


def partitions(producer: FakeProducer, limit: int = 1000) -> KeyPartitions:
    app: Any = FakeApp(producer)
    return KeyPartitions(app, limit=limit)


def test_a_key_gets_the_default_partitioners_choice_and_is_looked_up_once() -> None:
    producer = FakeProducer(6)
    known = partitions(producer)
    every = list(range(6))
    for key in (b"s0000001", b"s0000002", b"s0000001", b"s0000002"):
        assert known.of("rems.audit.v1", key) == DefaultPartitioner()(key, every, every)
    assert producer.calls == 2


def test_a_record_without_key_is_left_to_the_producer() -> None:
    producer = FakeProducer(6)
    assert partitions(producer).of("rems.deadletter.v1", None) is None
    assert producer.calls == 0


def test_unknown_metadata_leaves_the_choice_to_the_send_and_is_not_remembered() -> None:
    producer = FakeProducer(6)
    producer.partitions = None
    known = partitions(producer)
    assert known.of("rems.audit.v1", b"s1") is None
    producer.partitions = 6
    assert known.of("rems.audit.v1", b"s1") is not None
    assert producer.calls == 2


def test_a_rebalance_forgets_every_partition_since_counts_may_have_changed() -> None:
    producer = FakeProducer(3)
    known = partitions(producer)
    keys = [f"s{i}".encode() for i in range(50)]
    before = [known.of("t", key) for key in keys]
    producer.partitions = 12
    assert [known.of("t", key) for key in keys] == before  # remembered
    known.clear()
    after = [known.of("t", key) for key in keys]
    assert after != before
    assert max(p for p in after if p is not None) >= 3


def test_memory_is_bounded() -> None:
    producer = FakeProducer(6)
    known = partitions(producer, limit=10)
    for i in range(25):
        known.of("t", f"s{i}".encode())
    assert len(known._known) <= 10
