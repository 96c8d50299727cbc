"""Wires embedded mode for one data directory: journal, engine, compliance log, principals.

Files in the data directory:
- `journal.db` (+ `-wal`, `-shm`): the event journal (see `journal.py`).
- `first-run-tokens.txt` (0600): the admin and device tokens made on the first start.
- `engine.snapshot`: the engine's state at a journal position (see `snapshot.py`), so a
  restart replays only the journal after it.
- `remsguard.db` (+ `-wal`, `-shm`): the compliance log (`remsguard.adapters.storage`), with
  the API principals.

Besides the runtime (which also keeps the session summaries current) and the alerting service,
the container runs the form deadline (`FormDeadlineTask`: MONITORING_FORM_OVERDUE once per
session whose Patient Monitoring Form is not submitted within 7 days of discharge) every
`form_check_seconds`, on the runtime's clock, handing what it raises to the alerting service.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from prometheus_client import CollectorRegistry

from remsguard.adapters.storage import ComplianceLog
from remsguard.adapters.storage.registry import RegistryStore
from remsguard.adapters.telemetry import Telemetry
from remsguard.alerting.factory import NotifyingLog, build_alerting
from remsguard.alerting.service import AlertingService
from remsguard.auditing.deadlines import FormDeadlineTask
from remsguard.bootstrap import build_telemetry, event_time_bounds, load_protocols
from remsguard.config import Settings
from remsguard.domain.decisions import AuditRecord
from remsguard.domain.engine import MonitoringEngine
from remsguard.domain.protocol import MonitoringProtocol
from remsguard.doors.embedded import EmbeddedEventDoor
from remsguard.embedded.compliance import create_principal, has_principals
from remsguard.embedded.head_signing import HeadSigningTask, signing_key
from remsguard.embedded.journal import EventJournal
from remsguard.embedded.runtime import EmbeddedRuntime, RecoverySummary, Unavailable
from remsguard.embedded.snapshot import (
    SNAPSHOT_FILE,
    SnapshotStore,
    engine_version,
    protocols_version,
)
from remsguard.identity import Role

if TYPE_CHECKING:
    from remsguard.hl7v2.listener import MLLPListener

__all__ = ["TOKENS_FILE", "EmbeddedContainer", "ensure_first_run_tokens"]

log = structlog.get_logger(__name__)

TOKENS_FILE = "first-run-tokens.txt"
_RECORD_ACCESS_SECONDS = 30.0  # an auditor query waits this long for its access record
JOURNAL_FILE = "journal.db"
COMPLIANCE_FILE = "remsguard.db"


def ensure_first_run_tokens(data_dir: Path, log: ComplianceLog) -> Path | None:
    """On the first start (no principals yet): an admin and a device token, in a 0600 file."""
    if has_principals(log):
        return None
    admin = create_principal(log, "admin", Role.ADMIN)
    device = create_principal(log, "device", Role.DEVICE)
    path = data_dir / TOKENS_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(f"admin: {admin}\ndevice: {device}\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(path, 0o600)  # in case the file existed with wider permissions
    return path


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class EmbeddedContainer:
    """Everything the embedded HTTP app serves from; `start`/`stop` run in its lifespan.
    It offers every capability of `entrypoints.http.capabilities.ServedProcess`.

    Other components of embedded mode (the notifier, the console's SSE feed) add themselves
    here and to `start`/`stop`.
    """

    settings: Settings
    data_dir: Path
    journal: EventJournal
    compliance: ComplianceLog
    runtime: EmbeddedRuntime
    telemetry: Telemetry
    recovery: RecoverySummary | None = field(default=None)
    alerting: AlertingService | None = field(default=None)
    deadlines: FormDeadlineTask | None = field(default=None)
    hl7: MLLPListener | None = field(default=None)  # `--hl7-port`: devices' HL7 v2 over MLLP
    heads: HeadSigningTask | None = field(default=None)  # signed tree heads (head_signing.py)
    protocols: Mapping[str, MonitoringProtocol] = field(default_factory=dict)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, init=False, repr=False)

    @classmethod
    def open(
        cls,
        settings: Settings,
        data_dir: Path,
        protocol_files: list[Path] | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
        telemetry: Telemetry | None = None,
    ) -> EmbeddedContainer:
        """`clock` is the process's clock (default: the wall clock in UTC); `--simulate`
        gives its simulated clock instead. `bootstrap.embedded_container` is the usual way in."""
        data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(data_dir, 0o700)
        telemetry = telemetry or build_telemetry(settings)
        protocols = load_protocols(protocol_files)
        journal = EventJournal(data_dir / JOURNAL_FILE)
        compliance = ComplianceLog.open(f"sqlite:///{data_dir / COMPLIANCE_FILE}")
        # The REMS gate: the registry as recorded, replaced on every change made through the
        # API (`registry_changed`); None when REMSGUARD_REMS_GATE=false.
        registry = RegistryStore(compliance).load() if settings.rems_gate else None
        engine = MonitoringEngine(
            protocols, default_protocol=settings.default_protocol, registry=registry
        )
        alerting = build_alerting(settings, compliance, telemetry)
        runtime = EmbeddedRuntime(
            engine,
            journal,
            NotifyingLog(compliance, alerting),
            telemetry,
            bounds=event_time_bounds(settings),
            summaries=compliance,
            now=clock or _utc_now,
            retention=timedelta(hours=settings.session_retention_hours),
            eviction_interval=settings.session_eviction_seconds,
            snapshots=SnapshotStore(
                data_dir / SNAPSHOT_FILE, engine_version(), protocols_version(engine)
            ),
            snapshot_interval=settings.snapshot_interval_seconds,
            snapshot_every_events=settings.snapshot_every_events,
        )
        deadlines = FormDeadlineTask(
            compliance,
            runtime.current_time,
            settings.form_check_seconds,
            protocols,
            telemetry=telemetry,
            on_raised=alerting.on_alerts,
        )
        heads = HeadSigningTask(
            compliance, signing_key(settings, data_dir), settings.tree_head_interval_seconds
        )
        hl7 = None
        if settings.hl7_port is not None:
            from remsguard.hl7v2.embedded import EmbeddedDoor
            from remsguard.hl7v2.setup import build_listener

            hl7 = build_listener(
                settings,
                EmbeddedDoor(runtime),
                telemetry.registry,
                port=settings.hl7_port,
                clinic_label=telemetry.clinics.label,
            )
        return cls(
            settings,
            data_dir,
            journal,
            compliance,
            runtime,
            telemetry,
            alerting=alerting,
            deadlines=deadlines,
            heads=heads,
            hl7=hl7,
            protocols=protocols,
        )

    @property
    def registry(self) -> CollectorRegistry:
        return self.telemetry.registry

    # What the HTTP app serves from (`ServedProcess`): every capability.

    def now(self) -> datetime:
        """The API's time: the wall clock (the engine's clock is `runtime.current_time`)."""
        return _utc_now()

    @property
    def ingest(self) -> EmbeddedRuntime:
        return self.runtime

    @property
    def event_door(self) -> EmbeddedEventDoor:
        return EmbeddedEventDoor(self.runtime)

    @property
    def staff_alerting(self) -> AlertingService | None:
        return self.alerting

    @property
    def live_sessions(self) -> MonitoringEngine:
        return self.runtime.engine

    @property
    def taking_events(self) -> bool:
        return self.runtime.running

    async def caught_up(self) -> bool:
        """The compliance log holds what every answered request decided (the runtime records
        just behind ingest); False if still behind after a few seconds."""
        return await self.runtime.caught_up()

    def record_access(self, record: AuditRecord) -> None:
        """Journaled with the runtime's next group and recorded just behind it
        (`EmbeddedRuntime.record`), so a query waits for an fsync of the journal, not for
        the compliance log's writer. From a worker thread; before the runtime's loop runs,
        written to the log at once. `Unavailable` if it is not journaled in time."""
        loop = self._loop
        if loop is None:
            self.compliance.append_audit([record])
            return
        if _in_event_loop():  # it would wait for the loop it blocks, for the full timeout
            raise RuntimeError("record_access blocks: call it from a worker thread")
        done = asyncio.run_coroutine_threadsafe(self.runtime.record(record), loop)
        try:
            done.result(timeout=_RECORD_ACCESS_SECONDS)
        except TimeoutError:
            done.cancel()
            raise Unavailable("the access record was not journaled in time") from None

    def registry_changed(self) -> None:
        """Re-read the REMS registry (after a change through the API): the engine judges
        doses by it from the next event on. A dose already judged is not judged again."""
        if self.settings.rems_gate:
            self.runtime.engine.registry = RegistryStore(self.compliance).load()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        registry = self.runtime.engine.registry
        log.info(
            "embedded.rems_gate",
            on=registry is not None,
            certified_clinics=0 if registry is None else len(registry.certifications),
            enrollments=0 if registry is None else len(registry.enrollments),
        )
        self.recovery = await asyncio.to_thread(self.runtime.recover)
        log.info(
            "embedded.recovered",
            events=self.recovery.events,
            from_snapshot=self.recovery.snapshot is not None,
            rejections=self.recovery.rejections,
            alerts=self.recovery.alerts,
            seconds=round(self.recovery.seconds, 3),
        )
        if self.alerting is not None:
            await self.alerting.start()
        await self.runtime.start()
        if self.deadlines is not None:
            self.deadlines.start()
        if self.heads is not None:
            self.heads.start()
        if self.hl7 is not None:
            await self.hl7.start()

    async def stop(self) -> None:
        self._loop = None  # access records from here on go to the log at once
        if self.hl7 is not None:
            await self.hl7.stop()  # first: no message is taken that cannot be journaled
        if self.deadlines is not None:
            await self.deadlines.stop()
        await self.runtime.stop()
        if self.alerting is not None:
            await self.alerting.stop()
        if self.heads is not None:
            await self.heads.stop()  # after the last writer: the final head covers it all
        self.journal.close()
        self.compliance.close()
