"""The HL7 listener's door onto the Kafka path (`remsguard hl7-gateway`).

Each event is checked as at every door (the contract, the event-time bounds), then produced
to its type's input topic keyed by its session (acks=all, idempotent) by the shared Kafka door
(`doors.kafka`); the message is acknowledged `AA` only once Kafka has acknowledged every send.
Tenancy and duplicates are the processor's to judge (it dead-letters a session of another
clinic). The gateway keeps no session state, so a message must name its session in PV1-19.

A refused message goes to the dead-letter topic as a small JSON record (sender, control id,
clinic, reason): never the message itself, which names the patient.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import orjson
from kafka import KafkaProducer

from remsguard.adapters.kafka.topics import Topics
from remsguard.domain.admission import EventTimeBounds
from remsguard.doors import Answer
from remsguard.doors.kafka import KafkaEventDoor
from remsguard.hl7v2.messages import Header, Refusal

__all__ = ["KafkaDoor"]


class KafkaDoor:
    def __init__(
        self,
        producer: KafkaProducer,
        topics: Topics,
        bounds: EventTimeBounds,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._door = KafkaEventDoor(producer, topics, bounds, now)

    async def accept(self, events: Sequence[bytes], clinic: str) -> list[Answer]:
        return await self._door.submit(events, None)  # the clinic is the facility map's

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
        sends = [(self._door.topics.deadletter, None, orjson.dumps(record))]
        await self._door.send_all(sends, [("reason", refusal.reason.encode())])

    def open_session(self, clinic: str, patient_ref: str) -> str | None:
        return None  # no session state here: PV1-19 must name the session
