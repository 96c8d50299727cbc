"""Helpers for the staff-alerting tests: a compliance log with a driven clock, alerts, a
channel that records what it was sent, and the service over them (the fixtures `clock`,
`log` and `rec` in conftest.py build one of each per test)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import orjson

from remsguard.adapters.storage import AuditQuery, ComplianceLog, make_engine, migrate
from remsguard.alerting.channels import Notification
from remsguard.alerting.policy import Policies
from remsguard.alerting.service import AlertingService
from remsguard.domain.decisions import (
    Alert,
    AuditRecord,
    Severity,
    Withdrawal,
    WithdrawalReason,
    alert_raised,
)

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
T = TypeVar("T")


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> datetime:
        self.now += timedelta(**kwargs)
        return self.now


def open_log(path: Path, clock: Clock) -> ComplianceLog:
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    return ComplianceLog(engine, now=clock)


def alert(
    alert_id: str,
    severity: Severity = Severity.CRITICAL,
    clinic: str = "c1",
    session: str = "s1",
    rule: str = "BP_CRISIS",
) -> Alert:
    return Alert(
        alert_id=alert_id,
        rule=rule,
        severity=severity,
        session_id=session,
        clinic_id=clinic,
        triggered_at=T0,
        message=f"{rule} on {session}",
        evidence=("e1",),
        protocol="spravato-rems",
        protocol_version="test",
    )


def withdrawal(alert_id: str, rule: str = "BP_CRISIS") -> Withdrawal:
    """The engine takes `alert_id` (of session s1, clinic c1) back: a late discharge."""
    return Withdrawal(
        alert_id=alert_id,
        rule=rule,
        session_id="s1",
        clinic_id="c1",
        withdrawn_at=T0,
        reason=WithdrawalReason.DISCHARGE_ARRIVED_LATE,
        detail="the reading came after the discharge",
        evidence=("discharge-1",),
    )


def stored(log: ComplianceLog, alerts: Iterable[Alert]) -> None:
    """As the engine's path stores them: the rows and their `alert.raised` records."""
    batch = list(alerts)
    log.save_alerts(batch)
    records: list[AuditRecord] = [alert_raised(a) for a in batch]
    log.append_audit(records)


class Recorder:
    """A channel that keeps every notification it is given."""

    name = "recorder"

    def __init__(self) -> None:
        self.sent: list[Notification] = []

    async def deliver(self, notification: Notification) -> bool:
        self.sent.append(notification)
        return True

    async def aclose(self) -> None:
        pass

    def escalations(self) -> list[tuple[str, int | None, str]]:
        return [(n.alert_id, n.step, n.target) for n in self.sent if n.kind == "escalation"]


def service(log: ComplianceLog, clock: Clock, recorder: Recorder) -> AlertingService:
    """The service with the default policy, telling `recorder` (and its own SSE hub)."""
    return AlertingService(log, Policies(), [recorder], clock=clock)


def kinds(log: ComplianceLog, kind: str) -> list[tuple[str, dict[str, object]]]:
    """(subject id, detail) of the log's records of `kind`."""
    page = log.audit_records(AuditQuery(kind=kind, limit=1000))
    return [(row.subject_id, orjson.loads(row.detail)) for row in page.items]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class Receiver:
    """A tiny HTTP server answering the scripted statuses in order (then 200)."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.requests: list[tuple[float, dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((time.monotonic(), dict(self.headers), body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()
