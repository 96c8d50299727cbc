"""The door into embedded mode: `EmbeddedRuntime.submit`, the same ingest as `POST /v1/events`.

Events are submitted on behalf of the caller's principal: the contract, the event-time bounds,
the token's clinics, the tenancy of sessions and duplicates are decided exactly as for JSON,
and `submit` returns once the accepted events are journaled (fsync'd).
"""

from __future__ import annotations

from collections.abc import Sequence

from remsguard.contract.decode import decode_event
from remsguard.domain.decisions import Rejection
from remsguard.doors import Answer, DoorUnavailable, admit, rejected
from remsguard.embedded.ingest import Incoming
from remsguard.embedded.runtime import EmbeddedRuntime, Unavailable
from remsguard.identity import Principal

__all__ = ["EmbeddedEventDoor"]


class EmbeddedEventDoor:
    def __init__(self, runtime: EmbeddedRuntime) -> None:
        self.runtime = runtime

    async def submit(self, events: Sequence[bytes], principal: Principal | None) -> list[Answer]:
        items = [Incoming(raw, decode_event(raw)) for raw in events]
        try:
            results = await self.runtime.submit(items, principal)
        except Unavailable as exc:
            raise DoorUnavailable(str(exc)) from None
        return [Answer(r.outcome.value, r.reason, r.detail) for r in results]

    async def record(self, rejection: Rejection) -> None:
        """A rejection record of something refused before it became an event."""
        await self.runtime.submit([Incoming(b"", rejection)], None)

    def check(self, events: Sequence[bytes], principal: Principal) -> list[Answer | None]:
        now = self.runtime.current_time()
        bounds = self.runtime.bounds
        return [rejected(admit(raw, principal, bounds, now)) for raw in events]

    def session_clinic(self, session_id: str) -> str | None:
        session = self.runtime.engine.sessions.get(session_id)
        return None if session is None else session.clinic_id

    def open_session(self, clinic: str, patient_ref: str) -> str | None:
        """The clinic's newest session of the patient that is opened and not discharged."""
        found = None
        for session in self.runtime.engine.sessions.values():
            if (
                session.clinic_id == clinic
                and session.patient_ref == patient_ref
                and session.opened
                and not session.discharges
            ):
                found = session.session_id
        return found
