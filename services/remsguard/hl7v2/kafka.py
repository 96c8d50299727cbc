"""The HL7 listener's door onto the Kafka path (`remsguard hl7-gateway`).

Each event is checked as at every door (the contract, the event-time bounds), then produced
to its type's input topic keyed by its session (acks=all, idempotent); the message is
acknowledged `AA` only once Kafka has acknowledged every send. Tenancy and duplicates are the
processor's to judge (it dead-letters a session of another clinic). The gateway keeps no
session state, so a message must name its session in PV1-19.

A refused message goes to the dead-letter topic as a small JSON record (sender, control id,
clinic, reason): never the message itself, which names the patient.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from kafka import KafkaProducer

from remsguard.adapters.kafka.topics import Topics
from remsguard.client import route
from remsguard.contract.decode import decode_event
from remsguard.domain.admission import EventTimeBounds
from remsguard.domain.decisions import Rejection
from remsguard.hl7v2.listener import Answer
from remsguard.hl7v2.messages import Header, Refusal

__all__ = ["KafkaDoor"]

_ACK_TIMEOUT: Final = 30.0


class KafkaDoor:
    def __init__(
        self,
        producer: KafkaProducer,
        topics: Topics,
        bounds: EventTimeBounds,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._producer = producer
        self._topics = topics
        self._bounds = bounds
        self._now = now

    async def accept(self, events: Sequence[bytes], clinic: str) -> list[Answer]:
        answers: list[Answer] = []
        sends: list[tuple[str, bytes | None, bytes]] = []
        for raw in events:
            decoded = decode_event(raw)
            if not isinstance(decoded, Rejection):
                decoded = self._bounds.check(decoded, self._now()) or decoded
            if isinstance(decoded, Rejection):
                answers.append(Answer("rejected", decoded.reason, decoded.detail))
                continue
            sends.append(route(raw, self._topics))
            answers.append(Answer("accepted"))
        if sends:
            await asyncio.to_thread(self._send_all, sends)
        return answers

    async def refused(self, header: Header, clinic: str | None, refusal: Refusal) -> None:
        record = {
            "source": "hl7",
            "reason": refusal.reason,
            "ack": refusal.ack_code,
            "detail": refusal.text,
            "sender": header.sender,
            "control_id": header.control_id,
            "clinic_id": clinic,
        }
        sends = [(self._topics.deadletter, None, orjson.dumps(record))]
        await asyncio.to_thread(self._send_all, sends, [("reason", refusal.reason.encode())])

    def open_session(self, clinic: str, patient_ref: str) -> str | None:
        return None  # no session state here: PV1-19 must name the session

    def _send_all(
        self,
        sends: Sequence[tuple[str, bytes | None, bytes]],
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Produce and wait for every acknowledgement; raises if any send failed."""
        futures: list[Any] = [
            self._producer.send(topic, key=key, value=value, headers=headers)
            for topic, key, value in sends
        ]
        self._producer.flush(timeout=_ACK_TIMEOUT)
        for future in futures:
            future.get(timeout=_ACK_TIMEOUT)  # KafkaError if the broker refused it
