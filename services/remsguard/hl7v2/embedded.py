"""The HL7 listener's door into embedded mode: the same ingest as `POST /v1/events`.

Events go through `EmbeddedRuntime.submit` as a device bound to the message's clinic: the
contract, the event-time bounds, tenancy and duplicates are decided exactly as for JSON, and
`submit` returns once they are journaled (fsync'd), which is what the `AA` promises.
"""

from __future__ import annotations

from collections.abc import Sequence

from remsguard.contract.decode import decode_event
from remsguard.domain.decisions import Rejection
from remsguard.embedded.compliance import Principal, Role
from remsguard.embedded.ingest import Incoming
from remsguard.embedded.runtime import EmbeddedRuntime
from remsguard.hl7v2.listener import Answer
from remsguard.hl7v2.messages import Header, Refusal

__all__ = ["HL7_REFUSED", "EmbeddedDoor"]

HL7_REFUSED = "hl7_refused"


class EmbeddedDoor:
    def __init__(self, runtime: EmbeddedRuntime) -> None:
        self._runtime = runtime

    async def accept(self, events: Sequence[bytes], clinic: str) -> list[Answer]:
        items = [Incoming(raw, decode_event(raw)) for raw in events]
        device = Principal("hl7", "hl7 listener", Role.DEVICE, frozenset({clinic}))
        results = await self._runtime.submit(items, device)
        return [Answer(r.outcome.value, r.reason, r.detail) for r in results]

    async def refused(self, header: Header, clinic: str | None, refusal: Refusal) -> None:
        """A rejection record: who sent what that was refused, never the message itself."""
        detail = (
            f"{refusal.ack_code} {refusal.reason}: {refusal.text} "
            f"(sender {header.sender}, control id {header.control_id or '-'})"
        )
        rejection = Rejection(reason=HL7_REFUSED, detail=detail[:500], clinic_id=clinic)
        await self._runtime.submit([Incoming(b"", rejection)], None)

    def open_session(self, clinic: str, patient_ref: str) -> str | None:
        """The clinic's newest session of the patient that is opened and not discharged."""
        found = None
        for session in self._runtime.engine.sessions.values():
            if (
                session.clinic_id == clinic
                and session.patient_ref == patient_ref
                and session.opened
                and not session.discharges
            ):
                found = session.session_id
        return found
