"""`remsguard replay`: decode the arguments, hand the file to the replay handler."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, BinaryIO

import typer

from remsguard.config import get_settings
from remsguard.contract.decode import decode_event
from remsguard.contract.outbound import alert_to_json, withdrawal_to_json
from remsguard.domain.decisions import Alert, AuditRecord, Rejection, Withdrawal
from remsguard.domain.engine import MonitoringEngine
from remsguard.domain.events import Event
from remsguard.domain.protocol import ProtocolError
from remsguard.domain.registry import RemsRegistry
from remsguard.entrypoints.options import ProtocolFiles, ProtocolOption, aware_time
from remsguard.handlers.replay import READ_AHEAD, ReplayEvents, replay
from remsguard.protocols import build_engine


@contextmanager
def _open(file: str) -> Iterator[BinaryIO]:
    if file == "-":
        yield sys.stdin.buffer
        return
    with Path(file).open("rb") as handle:
        yield handle


def _read_ahead(lines: BinaryIO) -> int:
    """Lines decoded together before the engine takes them (the same outputs, less CPU): a
    file is read ahead; a pipe or a terminal, whose next line may be minutes away, line by
    line, so each event's alerts come out as soon as it arrives."""
    return READ_AHEAD if stat.S_ISREG(os.fstat(lines.fileno()).st_mode) else 1


def _read_registry(path: Path) -> RemsRegistry:
    from remsguard.adapters.storage.registry import read_registry_lines  # only when asked

    try:
        with path.open("rb") as handle:
            return read_registry_lines(handle)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def replay_command(
    file: Annotated[str, typer.Argument(help="JSON-lines events, in arrival order ('-' = stdin)")],
    until: Annotated[
        str | None, typer.Option(help="advance the clock to this RFC 3339 time at the end")
    ] = None,
    protocol: ProtocolOption = None,
    protocol_file: ProtocolFiles = None,
    db: Annotated[
        str | None,
        typer.Option("--db", help="also write the run's compliance log to this database URL"),
    ] = None,
    registry: Annotated[
        Path | None,
        typer.Option(
            "--registry",
            help="the REMS registry (JSON lines, as `remsguard registry list` prints) for the "
            "enrollment and certification gate; without it the gate is not checked",
        ),
    ] = None,
) -> None:
    """Run the engine over a file; print each alert, and each withdrawal of one (`"kind":
    "alert.withdrawn"`), as one JSON line on stdout, as the alerts stream carries them."""
    until_at = None if until is None else aware_time(until, "--until", "2026-11-23T12:00:00Z")
    try:
        engine = build_engine(protocol or get_settings().default_protocol, protocol_file)
        engine.registry = None if registry is None else _read_registry(registry)
    except (ProtocolError, ValueError) as exc:
        typer.echo(f"remsguard replay: {exc}", err=True)
        raise typer.Exit(2) from None
    if engine.registry is None:
        typer.echo(
            "remsguard replay: no --registry: REMS enrollment and certification not checked",
            err=True,
        )
    out = sys.stdout.buffer

    def on_alert(alert: Alert) -> None:
        out.write(alert_to_json(alert) + b"\n")

    def on_withdrawal(withdrawal: Withdrawal) -> None:
        out.write(withdrawal_to_json(withdrawal) + b"\n")

    def on_rejected(line: int, rejection: Rejection) -> None:
        sys.stderr.write(f"line {line}: rejected: {rejection.reason}: {rejection.detail}\n")

    writer = None if db is None else _LogWriter(db)
    try:
        with _open(file) as lines:
            replay(
                ReplayEvents(
                    lines if writer is None else writer.tap(lines), until_at, _read_ahead(lines)
                ),
                engine,
                on_alert if writer is None else writer.alert_then(on_alert),
                on_rejected,
                None if writer is None else writer.audit,
                on_withdrawal,
            )
    except OSError as exc:
        typer.echo(f"remsguard replay: cannot read {file}: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from None
    out.flush()
    if writer is not None:
        writer.finish(engine)


class _LogWriter:
    """Buffers the run's audit records and alerts into the compliance log at --db."""

    BATCH = 5000

    def __init__(self, url: str) -> None:
        from remsguard.adapters.storage import ComplianceLog

        self.log = ComplianceLog.open(url)
        self.records: list[AuditRecord] = []
        self.alerts: list[Alert] = []
        self.events: list[Event] = []
        self.sessions: set[str] = set()

    def tap(self, lines: Iterable[bytes]) -> Iterator[bytes]:
        """Pass the lines through, keeping each decodable event for ``session_events`` (the
        monitoring forms read only those the log records as accepted)."""
        for line in lines:
            if line.strip():
                event = decode_event(line)
                if isinstance(event, Event):
                    self.events.append(event)
            yield line

    def audit(self, record: AuditRecord) -> None:
        self.records.append(record)
        if record.session_id is not None:
            self.sessions.add(record.session_id)
        if len(self.records) >= self.BATCH:
            self.flush()

    def alert_then(self, on_alert: Callable[[Alert], None]) -> Callable[[Alert], None]:
        def both(alert: Alert) -> None:
            self.alerts.append(alert)
            on_alert(alert)

        return both

    def flush(self) -> None:
        self.log.append_audit(self.records)
        self.log.save_alerts(self.alerts)
        self.log.save_events(self.events)
        self.records, self.alerts, self.events = [], [], []

    def finish(self, engine: MonitoringEngine) -> None:
        self.flush()
        sessions = {sid: engine.sessions.get(sid) for sid in self.sessions}
        self.log.refresh_sessions(
            self.sessions,
            patient_refs={sid: s.patient_ref for sid, s in sessions.items() if s is not None},
            protocols={sid: s.protocol for sid, s in sessions.items() if s is not None},
        )
        self.log.close()
