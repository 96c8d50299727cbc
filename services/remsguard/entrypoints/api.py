"""`remsguard api`: the standalone auditor API and staff console of the Kafka/PostgreSQL
deployment. (`remsguard principals` lives in `principals.py`; re-exported here.)

The API serves the same FastAPI app as embedded mode (`create_app`), over an API-only
container: the compliance log at `REMSGUARD_DATABASE_URL` (migrated on start), no JSON
ingest (`POST /v1/events` answers 404); FHIR writes (`/fhir/r4/...`) are published to the
Kafka input topics through `doors.kafka`, for the processor to judge. It also runs the
form-deadline check every `REMSGUARD_FORM_CHECK_SECONDS` (MONITORING_FORM_OVERDUE, once
per session).

With `REMSGUARD_API_STAFF_CONSOLE=true` it also serves the staff console: a read-only engine
over the processor's session state (`SessionView`, from the table's changelog) answers the
sessions board and `GET /sessions/{id}/discharge-readiness`; the alerts topic feeds the SSE
stream (`AlertFeed`); acknowledgements and resolutions go through `AlertingService` into the
compliance log, where the notifier's escalation sees them. Without it those routes answer 503.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

import typer
import uvicorn
from prometheus_client import CollectorRegistry

from remsguard.adapters.kafka.session_view import SessionView
from remsguard.adapters.kafka.topics import Topics
from remsguard.adapters.storage import ComplianceLog
from remsguard.adapters.telemetry import Telemetry
from remsguard.alerting.factory import build_console_alerting
from remsguard.alerting.feed import AlertFeed
from remsguard.alerting.service import AlertingService
from remsguard.auditing.deadlines import FormDeadlineTask
from remsguard.bootstrap import build_telemetry, event_time_bounds, load_protocols
from remsguard.config import Settings, compliance_log_url, get_settings
from remsguard.domain.decisions import AuditRecord
from remsguard.domain.engine import MonitoringEngine
from remsguard.domain.protocol import MonitoringProtocol, ProtocolError
from remsguard.doors.kafka import KafkaEventDoor
from remsguard.entrypoints.principals import principals_app

__all__ = ["ApiContainer", "api_command", "principals_app"]


def _wall_clock() -> datetime:
    return datetime.now(UTC)


@dataclass
class StaffConsole:
    """The console's parts in `remsguard api`: the processor's sessions seen through a
    read-only engine, live alerts, and the acknowledge/resolve service."""

    sessions: SessionView
    engine: MonitoringEngine  # reads `sessions.sessions`; never fed an event
    alerting: AlertingService
    feed: AlertFeed

    @classmethod
    def open(
        cls, settings: Settings, log: ComplianceLog, protocols: Mapping[str, MonitoringProtocol]
    ) -> StaffConsole:
        view = SessionView.from_settings(settings)
        engine = MonitoringEngine(
            protocols, default_protocol=settings.default_protocol, sessions=view.sessions
        )
        alerting = build_console_alerting(settings, log)
        feed = AlertFeed(settings.kafka_bootstrap, Topics.from_settings(settings).alerts, alerting)
        return cls(view, engine, alerting, feed)

    def start(self) -> None:
        self.sessions.start()
        self.feed.start()

    async def stop(self) -> None:
        await self.feed.stop()
        await self.sessions.stop()
        await self.alerting.stop()  # closes the SSE streams


@dataclass
class ApiContainer:
    """What the HTTP app serves from in `remsguard api` (`ServedProcess`): no JSON ingest;
    FHIR writes onto Kafka; staff alerting and live sessions only with the staff console."""

    settings: Settings
    compliance: ComplianceLog
    telemetry: Telemetry
    protocols: Mapping[str, MonitoringProtocol]
    clock: Callable[[], datetime] = _wall_clock
    deadlines: FormDeadlineTask | None = None
    console: StaffConsole | None = None
    # FHIR ingest onto Kafka (`/fhir/r4/...`); its producer is made on the first write.
    fhir_door: KafkaEventDoor | None = None

    def now(self) -> datetime:
        return self.clock()

    @property
    def ingest(self) -> None:
        """No JSON ingest here (`POST /v1/events` answers 404): devices publish to Kafka."""
        return None

    @property
    def event_door(self) -> KafkaEventDoor | None:
        return self.fhir_door

    @property
    def staff_alerting(self) -> AlertingService | None:
        """Acknowledge/resolve and the SSE hub: only with the staff console."""
        return None if self.console is None else self.console.alerting

    @property
    def live_sessions(self) -> MonitoringEngine | None:
        """The read-only engine over the processor's sessions, once the view has caught up
        with the changelog (before that a session could look unknown)."""
        if self.console is None or not self.console.sessions.caught_up:
            return None
        return self.console.engine

    @property
    def taking_events(self) -> bool:
        return True  # nothing to recover before answering

    async def caught_up(self) -> bool:
        return True  # the audit sink records the topics; a read sees what it has written

    def record_access(self, record: AuditRecord) -> None:
        self.compliance.append_audit([record])

    def registry_changed(self) -> None:
        """The processor re-reads the registry itself (`registry_refresh_seconds`)."""

    @classmethod
    def open(
        cls,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = _wall_clock,
        compliance: ComplianceLog | None = None,
        check_deadlines: bool = True,
    ) -> ApiContainer:
        log = compliance or ComplianceLog.open(compliance_log_url(settings))
        protocols = load_protocols(list(settings.protocol_files))
        telemetry = build_telemetry(settings)
        deadlines = (
            FormDeadlineTask(
                log,
                clock,
                settings.form_check_seconds,
                protocols,
                follow=settings.api_follow_sessions,
                telemetry=telemetry,
            )
            if check_deadlines
            else None
        )
        console = None
        if settings.api_staff_console:
            console = StaffConsole.open(settings, log, protocols)
        door = _fhir_door(settings)
        return cls(settings, log, telemetry, protocols, clock, deadlines, console, fhir_door=door)

    @property
    def registry(self) -> CollectorRegistry:
        return self.telemetry.registry

    async def start(self) -> None:
        if self.deadlines is not None:
            self.deadlines.start()
        if self.console is not None:
            self.console.start()

    async def stop(self) -> None:
        if self.fhir_door is not None:
            self.fhir_door.close()
        if self.console is not None:
            await self.console.stop()
        if self.deadlines is not None:
            await self.deadlines.stop()
        self.compliance.close()


def _fhir_door(settings: Settings) -> KafkaEventDoor:
    """FHIR writes published to the input topics, checked as at every door; the producer
    (acks=all) is made on the first write, so an auditor-only API needs no broker."""
    from remsguard.client import make_producer

    return KafkaEventDoor(
        lambda: make_producer(settings.kafka_bootstrap, settings.kafka_connect_timeout_seconds),
        Topics.from_settings(settings),
        event_time_bounds(settings),
    )


def api_command(
    db: Annotated[str | None, typer.Option("--db", help="database URL (default: settings)")] = None,
    host: Annotated[str | None, typer.Option(help="address to listen on")] = None,
    port: Annotated[int | None, typer.Option(min=0, max=65535, help="HTTP port")] = None,
) -> None:
    """Serve the auditor API over the compliance log (no ingest); with
    REMSGUARD_API_STAFF_CONSOLE, the staff console over the processor's state too."""
    from remsguard.entrypoints.http import create_app

    settings = get_settings()
    if db is not None:
        settings = settings.model_copy(update={"database_url": db})
    try:
        container = ApiContainer.open(settings)
    except (ProtocolError, ValueError) as exc:
        typer.echo(f"remsguard api: {exc}", err=True)
        raise typer.Exit(2) from None
    uvicorn.run(
        create_app(container),
        host=host or settings.api_host,
        port=settings.api_port if port is None else port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
