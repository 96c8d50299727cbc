"""Doors: where events translated from another wire format (HL7 v2, FHIR) enter the service.

A door takes raw JSON events (the wire contract of `contract/events.py`) on behalf of a
principal bound to clinics, and says what became of each one, durably: it returns only once
every accepted event is journaled (embedded mode) or acknowledged by Kafka (`remsguard api`,
`remsguard hl7-gateway`). Every door applies the same rules as `POST /v1/events`: the
contract, the event-time bounds, the token's clinics; embedded mode also decides tenancy of
sessions and duplicates at once, the Kafka path leaves those to the processor.

`check` answers what can be decided before anything is written (contract, clinics, times),
so an all-or-nothing request (a FHIR transaction) can be refused whole.

`doors.lines` is the batch door onto Kafka for a file of JSON lines (`remsguard publish`,
`simulate --kafka`): through the device client (`remsguard.client`), each line's fate counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from remsguard.contract.decode import decode_event
from remsguard.domain.admission import CLINIC_NOT_PERMITTED, EventTimeBounds, rejection_of
from remsguard.domain.decisions import Rejection
from remsguard.domain.events import Event
from remsguard.identity import Principal

__all__ = ["Answer", "DoorUnavailable", "EventDoor", "admit", "rejected"]


@dataclass(frozen=True, slots=True)
class Answer:
    """What the door made of one event."""

    outcome: Literal["accepted", "duplicate", "rejected"]
    reason: str | None = None
    detail: str | None = None


class DoorUnavailable(Exception):
    """The door cannot take events now (stopping, overloaded, the broker did not answer):
    nothing of the request may be taken as done; the sender retries."""


class EventDoor(Protocol):
    async def submit(self, events: Sequence[bytes], principal: Principal) -> list[Answer]:
        """Each event's outcome, in order; durable when this returns."""
        ...

    def check(self, events: Sequence[bytes], principal: Principal) -> list[Answer | None]:
        """Each event's rejection decidable before writing (None: it may go on)."""
        ...

    def session_clinic(self, session_id: str) -> str | None:
        """The clinic a session belongs to, when the door keeps sessions (else None)."""
        ...


def admit(
    raw: bytes, principal: Principal | None, bounds: EventTimeBounds, now: datetime
) -> Event | Rejection:
    """The event, or why no door takes it: the contract, the token's clinics, the time bounds
    (in the order `POST /v1/events` decides them)."""
    decoded = decode_event(raw)
    if isinstance(decoded, Rejection):
        return decoded
    if principal is not None and not principal.may_see(decoded.clinic_id):
        detail = f"this token may not post events of clinic {decoded.clinic_id!r}"
        return rejection_of(decoded, CLINIC_NOT_PERMITTED, detail)
    return bounds.check(decoded, now) or decoded


def rejected(decided: Event | Rejection) -> Answer | None:
    """The answer for a rejection; None for an event that may go on."""
    if isinstance(decided, Rejection):
        return Answer("rejected", decided.reason, decided.detail)
    return None
