"""The processor's outputs in record batches: one delivery future per batch, a failed batch
fails every message in it, and nothing is acked before its outputs and state are in Kafka."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from faust.types import TP

from remsguard.adapters.kafka.outbox import Outbox
from remsguard.adapters.kafka.write_behind import WriteBehind


class FakeAiokafka:
    """aiokafka's batch API: batches handed over stay open until `drain` builds them."""

    _txn_manager = None

    def __init__(self, batch_size: int = 16 * 1024) -> None:
        self.batch_size = batch_size
        self.batches: list[tuple[str, int, BatchBuilder, asyncio.Future[Any]]] = []

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self.batch_size, 0)

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> Any:
        future = asyncio.get_running_loop().create_future()
        self.batches.append((topic, partition, batch, future))
        return future

    def drain(self, error: Exception | None = None) -> None:
        """The sender takes every batch (building it closes it); Kafka answers."""
        for _, _, batch, future in self.batches:
            batch._build()
            if not future.done():
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)


class FakeProducer:
    """faust's producer: the partitioner, single sends, and aiokafka's producer under it."""

    def __init__(self) -> None:
        self.aiokafka = FakeAiokafka()
        self.single: list[tuple[str, bytes | None, int | None]] = []

    def _ensure_producer(self) -> FakeAiokafka:
        return self.aiokafka

    def key_partition(self, topic: str, key: bytes) -> TP:
        every = list(range(6))
        return TP(topic, DefaultPartitioner()(key, every, every))

    async def send(
        self, topic: str, key: bytes | None, value: bytes, partition: Any, *_: Any
    ) -> Any:
        self.single.append((topic, key, partition))
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


class FakeApp:
    def __init__(self) -> None:
        self.producer = FakeProducer()


def test_messages_share_their_partitions_open_batch_until_it_is_drained() -> None:
    async def scenario() -> None:
        app: Any = FakeApp()
        outbox = Outbox(app)
        first = [await outbox.send("audit", b"s1", f"r{i}".encode()) for i in range(3)]
        assert first[0] is first[1] is first[2]
        other = await outbox.send("alerts", b"s1", b"a", [("h", b"v")])
        assert other is not first[0]
        assert len(app.producer.aiokafka.batches) == 2
        app.producer.aiokafka.drain()
        await asyncio.sleep(0)
        later = await outbox.send("audit", b"s1", b"r3")
        assert later is not first[0] and first[0].done() and not later.done()
        records = [b.record_count() for _, _, b, _ in app.producer.aiokafka.batches]
        assert records == [3, 1, 1]
        assert app.producer.single == []

    asyncio.run(scenario())


def test_a_full_batch_opens_the_next_and_a_message_without_key_goes_alone() -> None:
    async def scenario() -> None:
        app: Any = FakeApp()
        app.producer.aiokafka.batch_size = 200
        outbox = Outbox(app)
        futures = {await outbox.send("audit", b"s1", b"x" * 80) for _ in range(6)}
        assert len(futures) == len(app.producer.aiokafka.batches) > 1
        await outbox.send("deadletter", None, b"bad")
        assert app.producer.single == [("deadletter", None, None)]

    asyncio.run(scenario())


def test_a_failed_batch_fails_every_message_in_it_and_nothing_is_acked() -> None:
    async def scenario() -> None:
        app: Any = FakeApp()
        outbox, pending = Outbox(app), WriteBehind()
        acked: list[str] = []
        written: list[bytes] = []

        async def write(partition: int, key: bytes, blob: bytes | None) -> Any:
            written.append(key)
            future = asyncio.get_running_loop().create_future()
            future.set_result(None)
            return future

        async def ack(event: Any) -> None:
            acked.append(event)

        for n in range(3):
            pending.processed(0, f"m{n}", [await outbox.send("audit", b"s1", b"r")])
        pending.seal(0, [(b"s1", b"state")])
        assert await pending.settle(0, write, ack) == 0  # outputs not acknowledged yet
        assert pending.waiting() == [0]
        app.producer.aiokafka.drain(RuntimeError("broker said no"))
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="output not delivered"):
            await pending.settle(0, write, ack)
        assert written == [] and acked == []
        # the agent crashes; once restarted, a new batch is opened, never the failed one
        again = await outbox.send("audit", b"s1", b"r")
        assert not again.done()

    asyncio.run(scenario())


def test_messages_are_acked_once_outputs_then_state_are_acknowledged() -> None:
    async def scenario() -> None:
        app: Any = FakeApp()
        outbox, pending = Outbox(app), WriteBehind()
        acked: list[str] = []
        state: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        async def write(partition: int, key: bytes, blob: bytes | None) -> Any:
            return state

        async def ack(event: Any) -> None:
            acked.append(event)

        pending.processed(2, "m0", [await outbox.send("audit", b"s1", b"r")])
        pending.processed(2, "m1", [])
        pending.seal(2, [(b"s1", b"state")])
        app.producer.aiokafka.drain()
        await asyncio.sleep(0)
        assert await pending.settle(2, write, ack) == 1
        assert acked == []  # the state is sent, not acknowledged
        state.set_result(None)
        await pending.settle(2, write, ack)
        assert acked == ["m0", "m1"] and pending.waiting() == []

    asyncio.run(scenario())
