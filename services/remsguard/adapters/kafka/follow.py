"""`TopicFollower`: one process reads every partition of one topic, without a consumer group.

For readers that each need the whole topic (every `remsguard api` replica keeps its own copy
of the processor's session state, and shows every alert on its own consoles): aiokafka with
`group_id=None` subscribes to all partitions and commits nothing. It starts from the
beginning (`from_beginning`, a compacted state topic) or from the end (live alerts).

It waits for the topic to exist (listing topics never auto-creates one, so a reader started
before the processor cannot create the changelog with the wrong settings), and retries with
backoff when the broker is away; a restart reads again from the chosen end. `caught_up` turns
true once it has read up to the end offsets it saw when it (re)started.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Final

import structlog

__all__ = ["OnBatch", "TopicFollower"]

log = structlog.get_logger(__name__)

OnBatch = Callable[[Sequence[Any]], Awaitable[None]]  # aiokafka ConsumerRecords
MAX_RETRY_SECONDS: Final = 10.0
TOPIC_POLL_SECONDS: Final = 1.0


@dataclass(eq=False)
class TopicFollower:
    bootstrap: str
    topic: str
    on_batch: OnBatch
    _: KW_ONLY
    from_beginning: bool
    max_records: int = 2000
    caught_up: bool = field(default=False, init=False)
    records: int = field(default=0, init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False, repr=False)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"follow-{self.topic}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        delay = 0.5
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "kafka.follow_failed", topic=self.topic, error=repr(exc)[:300], retry_in=delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_SECONDS)

    async def _follow(self) -> None:
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if self.from_beginning else "latest",
        )
        await consumer.start()
        try:
            while self.topic not in await consumer.topics():
                await asyncio.sleep(TOPIC_POLL_SECONDS)
            consumer.subscribe([self.topic])
            ends: dict[Any, int] | None = None
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=self.max_records)
                records = [r for rs in batches.values() for r in rs]
                if records:
                    await self.on_batch(records)
                    self.records += len(records)
                if self.caught_up:
                    continue
                assigned = consumer.assignment()
                if not assigned:
                    continue
                if ends is None:
                    ends = await consumer.end_offsets(list(assigned))
                positions = [await consumer.position(tp) for tp in ends]
                if all(pos >= ends[tp] for pos, tp in zip(positions, ends, strict=True)):
                    self.caught_up = True
                    log.info("kafka.follow_caught_up", topic=self.topic, records=self.records)
        finally:
            await consumer.stop()
