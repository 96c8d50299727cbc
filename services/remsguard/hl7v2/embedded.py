"""The HL7 listener's door into embedded mode: the same ingest as `POST /v1/events`.

Events go through the shared embedded door (`doors.embedded`) as a device bound to the
message's clinic: the contract, the event-time bounds, tenancy and duplicates are decided
exactly as for JSON, and it returns once they are journaled (fsync'd), which is what the `AA`
promises.
"""

from __future__ import annotations

from collections.abc import Sequence

from remsguard.domain.decisions import Rejection
from remsguard.doors import Answer
from remsguard.doors.embedded import EmbeddedEventDoor
from remsguard.embedded.runtime import EmbeddedRuntime
from remsguard.hl7v2.messages import Header, Refusal
from remsguard.identity import Principal, Role

__all__ = ["HL7_REFUSED", "EmbeddedDoor"]

HL7_REFUSED = "hl7_refused"


class EmbeddedDoor:
    def __init__(self, runtime: EmbeddedRuntime) -> None:
        self._door = EmbeddedEventDoor(runtime)

    async def accept(self, events: Sequence[bytes], clinic: str) -> list[Answer]:
        device = Principal("hl7", "hl7 listener", Role.DEVICE, frozenset({clinic}))
        return await self._door.submit(events, device)

    async def refused(self, header: Header, clinic: str | None, refusal: Refusal) -> None:
        """A rejection record: who sent what that was refused, never the message itself."""
        detail = (
            f"{refusal.ack_code} {refusal.reason}: {refusal.text} "
            f"(sender {header.sender}, control id {header.control_id or '-'})"
        )
        await self._door.record(
            Rejection(reason=HL7_REFUSED, detail=detail[:500], clinic_id=clinic)
        )

    def open_session(self, clinic: str, patient_ref: str) -> str | None:
        return self._door.open_session(clinic, patient_ref)
