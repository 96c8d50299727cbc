"""`Outbox`: where the worker's outputs go to the producer, each to the partition the
producer's partitioner gives its key (`KeyPartitions`, looked up once per key).

One caller: the agent. The producer is faust's (`app.producer`).
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

    async def send(
        self, topic: str, key: bytes | None, value: bytes, headers: Headers = ()
    ) -> asyncio.Future[Any]:
        """Queue one message; returns the future of its delivery."""
        partition = self.partitions.of(topic, key)
        return await self._one(topic, partition, key, value, list(headers))

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
