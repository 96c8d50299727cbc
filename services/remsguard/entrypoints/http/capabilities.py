"""What a process offers the HTTP app, and the FastAPI dependencies that hand it to a route.

`create_app` serves one `ServedProcess`: embedded mode's `EmbeddedContainer` (every capability)
or `remsguard api`'s `ApiContainer` (no JSON ingest; FHIR writes onto Kafka; staff alerting and
live sessions only with its staff console). A capability a process lacks is None, and the
dependency that asks for it answers for the route: 404 where the process has no such door,
503 where the part is off or not ready yet. Routes never look at the container's class.

    @router.post("/v1/things")
    async def things(ingest: Ingest, principal: Principal = Depends(require(Role.DEVICE))): ...
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Annotated, Any, Final, Protocol

import structlog
from fastapi import Depends, Request

from remsguard.adapters.storage import ComplianceLog
from remsguard.adapters.telemetry import Telemetry
from remsguard.alerting.service import AlertingService
from remsguard.config import Settings
from remsguard.domain.decisions import AuditRecord
from remsguard.domain.engine import MonitoringEngine
from remsguard.domain.protocol import MonitoringProtocol
from remsguard.doors import EventDoor
from remsguard.embedded.ingest import Incoming
from remsguard.embedded.runtime import EventResult
from remsguard.entrypoints.http.auth import caller
from remsguard.entrypoints.http.errors import ApiError
from remsguard.identity import Principal, Role

__all__ = [
    "READS_AFTER_WRITES",
    "Compliance",
    "EventIngest",
    "Ingest",
    "LiveSessions",
    "Process",
    "ServedProcess",
    "StaffAlerting",
    "ingest_of",
]

log = structlog.get_logger(__name__)


class EventIngest(Protocol):
    """JSON ingest (`POST /v1/events`): decoded items in, one result each, durable on 2xx."""

    @property
    def running(self) -> bool: ...

    async def submit(
        self, items: list[Incoming], principal: Principal | None
    ) -> list[EventResult]: ...


class ServedProcess(Protocol):
    """A process the HTTP app serves from (`EmbeddedContainer`, `ApiContainer`)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def compliance(self) -> ComplianceLog: ...
    @property
    def telemetry(self) -> Telemetry: ...
    @property
    def protocols(self) -> Mapping[str, MonitoringProtocol]:
        """The protocols this process judges by (forms, readiness)."""
        ...

    def now(self) -> datetime:
        """The time the API stamps queries and judges deadlines with."""
        ...

    @property
    def ingest(self) -> EventIngest | None:
        """JSON event ingest; None: this process takes no JSON events."""
        ...

    @property
    def event_door(self) -> EventDoor | None:
        """Where FHIR writes go (journal or Kafka); None: no FHIR ingest."""
        ...

    @property
    def staff_alerting(self) -> AlertingService | None:
        """Acknowledge, resolve, shelve and the SSE hub; None: not running here."""
        ...

    @property
    def live_sessions(self) -> MonitoringEngine | None:
        """The engine whose sessions the console shows; None: none here, or not read yet."""
        ...

    @property
    def taking_events(self) -> bool:
        """False while the process is still starting (recovering); `/healthz` says 503."""
        ...

    def registry_changed(self) -> None:
        """The REMS registry changed through the API: re-read it where an engine judges."""
        ...

    async def caught_up(self) -> bool:
        """Wait until the compliance log holds what every answered write decided (embedded
        mode records just behind ingest); False if it is still behind after a bound."""
        ...

    def record_access(self, record: AuditRecord) -> None:
        """Append an API query's access record to the compliance log; durable on return.
        Called from a worker thread (the routes that read the log are sync)."""
        ...

    async def start(self) -> None: ...
    async def stop(self) -> None: ...


# The dependencies below only pick a part of the process: `async`, so FastAPI calls them on the
# event loop instead of a worker thread each (a thread hop costs more than they do).
async def _process(request: Request) -> ServedProcess:
    process: ServedProcess = request.app.state.container
    return process


async def _compliance(process: Annotated[ServedProcess, Depends(_process)]) -> ComplianceLog:
    return process.compliance


# A part the process lacks (None): what a route asking for it answers instead.
_LACKING: Final = {
    "ingest": (404, "not_found", "this service does not ingest events"),
    "staff_alerting": (503, "no_alerting", "staff alerting is not running in this process"),
    "live_sessions": (503, "no_engine", "discharge readiness is served where the engine runs"),
}


def _part(name: str) -> Callable[[ServedProcess], Awaitable[Any]]:
    """A dependency handing a route the process's part `name`, or answering for the route
    as `_LACKING` says where the process has none."""
    status, code, message = _LACKING[name]

    async def dependency(process: Annotated[ServedProcess, Depends(_process)]) -> Any:
        part = getattr(process, name)
        if part is None:
            raise ApiError(status, code, message)
        return part

    return dependency


def ingest_of(request: Request) -> EventIngest:
    """`Ingest` as a plain call, for the one route that resolves no dependencies (`POST
    /v1/events`, see `events.py`): the process's JSON ingest, or the answer `Ingest` gives."""
    process: ServedProcess = request.app.state.container
    ingest = process.ingest
    if ingest is None:
        raise ApiError(*_LACKING["ingest"])
    return ingest


async def _reads_after_writes(
    request: Request, process: Annotated[ServedProcess, Depends(_process)]
) -> None:
    if await _auditor(request):
        return  # history, read as the log holds it: never held up behind ingest
    if not await process.caught_up():
        log.warning("http.read_behind_writes")  # served from what the log holds so far


async def _auditor(request: Request) -> bool:
    try:
        return (await caller(request)).role is Role.AUDITOR
    except ApiError:
        return False  # no valid token: the route's own check answers for it


READS_AFTER_WRITES: Final = Depends(_reads_after_writes)
"""A router dependency: its routes run once the compliance log holds every write answered
before the request came (`app.py` puts it on every router but the ingest doors'), so staff
and devices see the alerts of events answered before they asked. An auditor's reads do not
wait: an auditor neither posts events nor acts on live alerts, and reads the log as it holds
it (a consistent prefix of what was answered, behind it by the recorder's lag; issue 19:
auditor queries stay fast while ingest runs at the process's limit)."""

Process = Annotated[ServedProcess, Depends(_process)]
Compliance = Annotated[ComplianceLog, Depends(_compliance)]
Ingest = Annotated[EventIngest, Depends(_part("ingest"))]
StaffAlerting = Annotated[AlertingService, Depends(_part("staff_alerting"))]
LiveSessions = Annotated[MonitoringEngine, Depends(_part("live_sessions"))]
