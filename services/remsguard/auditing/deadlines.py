"""The form deadline: a session's Patient Monitoring Form must be submitted within 7 calendar
days after the session ends, else ``MONITORING_FORM_OVERDUE`` (warning) is raised, once.

``check_overdue_forms(log, now)`` is the whole decision with an explicit clock; the API
process and embedded mode run it periodically (``FormDeadlineTask``). The alert's id is derived
from the session, its audit record from the alert, and the form row remembers it
(``mark_form_overdue``), so a crash between the steps or two API processes checking at once
still raise the alert once.

With a ``Telemetry``, each check also sets ``remsguard_forms_overdue`` (forms past due and not
submitted, by clinic; 0 for a clinic with none) and counts the alerts it raised in
``remsguard_alerts_raised_total``. ``on_raised`` hands them on (embedded mode: to the alerting
service, which notifies the console and escalates them like the engine's alerts).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Final

import structlog

from remsguard.adapters.storage import ComplianceLog
from remsguard.adapters.storage.models import utc
from remsguard.adapters.telemetry import Telemetry
from remsguard.domain.decisions import Alert, Severity, alert_raised, stable_id
from remsguard.domain.protocol import MonitoringProtocol

__all__ = ["RULE", "FormDeadlineTask", "check_overdue_forms", "follow_sessions"]

RULE: Final = "MONITORING_FORM_OVERDUE"
log = structlog.get_logger(__name__)


def overdue_alert(
    session_id: str,
    clinic_id: str,
    due_at: datetime,
    protocol: str | None,
    protocols: Mapping[str, MonitoringProtocol],
) -> Alert:
    known = protocols.get(protocol) if protocol is not None else None
    return Alert(
        alert_id=stable_id(RULE, session_id),
        rule=RULE,
        severity=Severity.WARNING,
        session_id=session_id,
        clinic_id=clinic_id,
        triggered_at=utc(due_at),
        message=(
            "Patient Monitoring Form not submitted within 7 calendar days after the session "
            f"ended (due {utc(due_at).isoformat().replace('+00:00', 'Z')})"
        ),
        evidence=(),
        protocol=protocol or "",
        protocol_version=known.version if known is not None else "",
    )


def check_overdue_forms(
    clog: ComplianceLog,
    now: datetime,
    protocols: Mapping[str, MonitoringProtocol] | None = None,
) -> list[Alert]:
    """Raise MONITORING_FORM_OVERDUE for every form past due and not submitted; returns the
    alerts raised by this call (none for a form already flagged)."""
    raised: list[Alert] = []
    for form in clog.overdue_forms(now):
        assert form.due_at is not None
        summary = clog.session_summary(form.session_id)
        alert = overdue_alert(
            form.session_id,
            form.clinic_id,
            form.due_at,
            summary.protocol if summary is not None else None,
            protocols or {},
        )
        clog.save_alerts([alert])
        clog.append_audit([alert_raised(alert)])
        if clog.mark_form_overdue(form.session_id, alert.alert_id):
            raised.append(alert)
        clog.refresh_sessions([form.session_id])
    return raised


def follow_sessions(clog: ComplianceLog, start: int) -> int:
    """Refresh the summaries (and form rows) of sessions with records at ``start`` or later;
    returns where to continue."""
    index = start
    while True:
        sessions, after = clog.sessions_since(index)
        if after == index:
            return index
        if sessions:
            clog.refresh_sessions(sessions)
        index = after


class FormDeadlineTask:
    """Runs the form-deadline check (and, if asked, session following) every ``interval``
    seconds with the given clock, in a worker thread."""

    def __init__(
        self,
        clog: ComplianceLog,
        clock: Callable[[], datetime],
        interval: float,
        protocols: Mapping[str, MonitoringProtocol] | None = None,
        *,
        follow: bool = False,
        telemetry: Telemetry | None = None,
        on_raised: Callable[[list[Alert]], None] | None = None,
    ) -> None:
        self.clog = clog
        self.clock = clock
        self.interval = interval
        self.protocols = protocols or {}
        self.follow = follow
        self.telemetry = telemetry
        self.on_raised = on_raised
        self._index = 0
        self._task: asyncio.Task[None] | None = None
        self._clinics: set[str] = set()  # clinics the gauge has shown

    def run_once(self) -> list[Alert]:
        if self.follow:
            self._index = follow_sessions(self.clog, self._index)
        now = self.clock()
        raised = check_overdue_forms(self.clog, now, self.protocols)
        for alert in raised:
            log.warning("form.overdue", session_id=alert.session_id, clinic_id=alert.clinic_id)
        if self.telemetry is not None:
            for alert in raised:
                self.telemetry.alerts_raised.labels(
                    alert.clinic_id, alert.rule, alert.severity.value
                ).inc()
            counts = dict.fromkeys(self._clinics, 0)
            counts.update(self.clog.forms_overdue_by_clinic(now))
            self._clinics = set(counts)
            self.telemetry.set_forms_overdue(counts)
        if raised and self.on_raised is not None:
            self.on_raised(raised)
        return raised

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.run_once)
            except Exception:  # keep checking: a database blip must not end the task
                log.exception("form.deadline_check_failed")
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
