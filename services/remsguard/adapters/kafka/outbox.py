"""`Outbox`: the worker's outputs, appended to aiokafka record batches, a batch per
topic-partition, each with one delivery future.

`producer.send` costs ~8 µs of CPU per message here (a chain of coroutines, a future and a
`RecordMetadata` per message); appending a record to a batch ~1 µs. So a message for a
topic-partition goes into that partition's open batch; the first one opens a batch and hands
it to the producer at once (`send_batch`), left open: the producer's sender drains it after
its linger (`producer_linger`), as it does its own batches, and every record appended until
then travels in it; after that the batch is closed and the next message opens another. A
batch's future is done when Kafka has acknowledged the whole batch, or holds the exception it
failed with: every message in a failed batch is a failed delivery.

The partition is the producer's own choice for the key (`KeyPartitions`); a message without a
key, or sent before the topic's metadata is known, goes through `producer.send` (rare: dead
letters without a key).

One caller: the agent. The producer is aiokafka's, under faust's (`app.producer`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

__all__ = ["KeyPartitions", "Outbox"]

Headers = Sequence[tuple[str, bytes]]


class KeyPartitions:
    """The partition the producer's partitioner gives a key, worked out once per topic and
    key (murmur2 in pure Python is a measurable share of each send); cleared on rebalance.
    An output topic that gains partitions between rebalances keeps each session on its old
    partition until then: per-session order holds, and no consumer depends on the partition."""

    def __init__(self, app: Any, limit: int = 200_000) -> None:
        self._app = app
        self._limit = limit
        self._known: dict[tuple[str, bytes], int] = {}

    def of(self, topic: str, key: bytes | None) -> int | None:
        """None: let the producer choose (no key, or the topic's metadata not loaded yet)."""
        if key is None:
            return None
        partition = self._known.get((topic, key))
        if partition is None:
            try:
                partition = int(self._app.producer.key_partition(topic, key).partition)
            except Exception:  # metadata not loaded yet: this send computes it itself
                return None
            if len(self._known) >= self._limit:
                self._known.clear()
            self._known[(topic, key)] = partition
        return partition

    def clear(self) -> None:
        self._known.clear()


class Outbox:
    def __init__(self, app: Any, partitions: KeyPartitions | None = None) -> None:
        self._app = app
        self.partitions = KeyPartitions(app) if partitions is None else partitions
        # topic-partition -> (the open batch, its delivery future)
        self._open: dict[tuple[str, int], tuple[Any, asyncio.Future[Any]]] = {}

    async def send(
        self, topic: str, key: bytes | None, value: bytes, headers: Headers = ()
    ) -> asyncio.Future[Any]:
        """Queue one message; returns the future of its delivery (its batch's)."""
        headers = list(headers)  # the batch builder takes a list only, as the producer does
        partition = self.partitions.of(topic, key)
        if partition is None:
            return await self._one(topic, None, key, value, headers)
        slot = (topic, partition)
        current = self._open.get(slot)
        if current is not None:
            batch, delivered = current
            # A done batch was delivered (or failed): a record appended now would not travel.
            if (
                not delivered.done()
                and batch.append(timestamp=None, key=key, value=value, headers=headers) is not None
            ):
                return delivered
        producer = self._app.producer._ensure_producer()  # faust's has no batch API
        if producer._txn_manager is not None:
            # Idempotent or transactional: sequence numbers are fixed when a batch is drained,
            # so nothing may be appended to it after that; not how remsguard configures it.
            return await self._one(topic, partition, key, value, headers)
        batch = producer.create_batch()
        batch.append(timestamp=None, key=key, value=value, headers=headers)  # never refused
        # Waits only while this partition's previous batch, full, is not drained yet: the
        # back-pressure `producer.send` applies too.
        opened: asyncio.Future[Any] = await producer.send_batch(batch, topic, partition=partition)
        self._open[slot] = (batch, opened)
        return opened

    async def _one(
        self,
        topic: str,
        partition: int | None,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]],
    ) -> asyncio.Future[Any]:
        """One message on its own (`producer.send`: a future of its own)."""
        sent: asyncio.Future[Any] = await self._app.producer.send(
            topic, key, value, partition, None, headers
        )
        return sent

    def rebalanced(self) -> None:
        """Partition counts of the output topics may have changed: look keys up again."""
        self.partitions.clear()
