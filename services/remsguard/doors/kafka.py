"""The door onto the Kafka path (`remsguard api`'s FHIR ingest, `remsguard hl7-gateway`).

Each event is checked as at every door (the contract, the token's clinics, the event-time
bounds), then produced to its type's input topic keyed by its session (acks=all, idempotent);
`submit` returns only once Kafka has acknowledged every send. Tenancy of sessions and
duplicates are the processor's to judge (it dead-letters a session of another clinic, and
answers a repeated event id as a duplicate), so an event accepted here may still be refused
there. No session state is kept here.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from kafka import KafkaProducer

from remsguard.adapters.kafka.topics import Topics
from remsguard.client import route
from remsguard.domain.admission import EventTimeBounds
from remsguard.doors import Answer, DoorUnavailable, admit, rejected
from remsguard.identity import Principal

__all__ = ["KafkaEventDoor", "Send"]

ACK_TIMEOUT: Final = 30.0
Send = tuple[str, bytes | None, bytes]  # topic, key, value


class KafkaEventDoor:
    def __init__(
        self,
        producer: KafkaProducer | Callable[[], KafkaProducer],
        topics: Topics,
        bounds: EventTimeBounds,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """`producer` may be a factory: the producer is then made on the first send (so a
        process that may never publish does not need the broker to start)."""
        self._producer = producer if isinstance(producer, KafkaProducer) else None
        self._make = producer if not isinstance(producer, KafkaProducer) else None
        self._lock = threading.Lock()
        self.topics = topics
        self._bounds = bounds
        self._now = now

    def check(self, events: Sequence[bytes], principal: Principal | None) -> list[Answer | None]:
        now = self._now()
        return [rejected(admit(raw, principal, self._bounds, now)) for raw in events]

    async def submit(self, events: Sequence[bytes], principal: Principal | None) -> list[Answer]:
        answers: list[Answer] = []
        sends: list[Send] = []
        for raw, refusal in zip(events, self.check(events, principal), strict=True):
            if refusal is not None:
                answers.append(refusal)
                continue
            sends.append(route(raw, self.topics))
            answers.append(Answer("accepted"))
        if sends:
            await self.send_all(sends)
        return answers

    def session_clinic(self, session_id: str) -> str | None:
        return None  # no session state on this path

    async def send_all(
        self, sends: Sequence[Send], headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        """Produce and wait for every acknowledgement; `DoorUnavailable` if any failed."""
        try:
            await asyncio.to_thread(self._send_all, sends, headers)
        except Exception as exc:  # KafkaError, BrokerUnreachable, a timeout: not durable
            raise DoorUnavailable(f"Kafka did not acknowledge: {type(exc).__name__}") from None

    def close(self, timeout: float = 10.0) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            producer.flush(timeout=timeout)
            producer.close(timeout=timeout)

    def _producer_now(self) -> KafkaProducer:
        with self._lock:
            if self._producer is None:
                assert self._make is not None
                self._producer = self._make()
            return self._producer

    def _send_all(self, sends: Sequence[Send], headers: list[tuple[str, bytes]] | None) -> None:
        producer = self._producer_now()
        futures: list[Any] = [
            producer.send(topic, key=key, value=value, headers=headers)
            for topic, key, value in sends
        ]
        producer.flush(timeout=ACK_TIMEOUT)
        for future in futures:
            future.get(timeout=ACK_TIMEOUT)  # KafkaError if the broker refused it
