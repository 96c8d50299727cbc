"""What the staff console shows, built from the engine and the alert log.

`sessions_board` lists the clinic's sessions under monitoring with the engine's own
discharge readiness (`MonitoringEngine.readiness`) and next checks: nothing is recomputed
here. The engine is embedded mode's own, or in `remsguard api` a read-only one over the
stream processor's session state (`ServedProcess.live_sessions`). Call it on the event loop's thread
(the embedded runtime and the API's session view change the sessions there).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from remsguard.adapters.storage import AlertQuery, AlertRow, AlertStatus, ComplianceLog
from remsguard.adapters.storage.models import utc
from remsguard.alerting.service import alert_row_dict
from remsguard.domain.engine import MonitoringEngine
from remsguard.domain.readiness import DischargeReadiness
from remsguard.domain.session import Session

__all__ = [
    "ACTIVE_FOR",
    "board_now",
    "open_alerts",
    "open_critical_rules",
    "readiness_json",
    "sessions_board",
]

ACTIVE_FOR: Final = timedelta(hours=4)  # a session silent this long leaves the board
ALERTS_SINCE: Final = timedelta(hours=24)
_SEVERITY_RANK: Final = {"critical": 0, "warning": 1, "info": 2}
_MAX_ALERTS: Final = 500


def _iso(value: datetime | None) -> str | None:
    return None if value is None else utc(value).isoformat().replace("+00:00", "Z")


def board_now(engine: MonitoringEngine | None) -> datetime:
    """The engine's clock (max of wall clock and event time in embedded mode), else now."""
    wall = datetime.now(UTC)
    if engine is None or engine.clock is None:
        return wall
    return max(wall, engine.clock)


_UNRESOLVED = (AlertStatus.OPEN.value, AlertStatus.ACKNOWLEDGED.value, AlertStatus.SHELVED.value)


def open_alerts(
    log: ComplianceLog, clinics: frozenset[str] | None, now: datetime
) -> list[dict[str, Any]]:
    """Unresolved alerts (open, acknowledged, shelved) of the last day: most severe, newest
    first. Inhibited ones are here too: the console lists them on their inhibitor's card."""
    rows: list[AlertRow] = []
    for status in _UNRESOLVED:
        cursor: str | None = None
        while len(rows) < 4 * _MAX_ALERTS:
            page = log.alerts(
                AlertQuery(
                    clinics=clinics,
                    status=status,
                    since=now - ALERTS_SINCE,
                    cursor=cursor,
                    limit=1000,
                )
            )
            rows.extend(page.items)
            cursor = page.next_cursor
            if cursor is None:
                break
    rows.sort(key=lambda r: utc(r.triggered_at), reverse=True)
    rows.sort(key=lambda r: _SEVERITY_RANK.get(r.severity, 9))
    return [alert_row_dict(r) for r in rows[:_MAX_ALERTS]]


def open_critical_rules(alerts: Iterable[dict[str, Any]]) -> dict[str, tuple[str, ...]]:
    """Rules of unresolved critical alerts, by session (for the engine's readiness)."""
    out: dict[str, list[str]] = {}
    for alert in alerts:
        if alert["severity"] == "critical" and alert["status"] != AlertStatus.RESOLVED.value:
            out.setdefault(alert["session_id"], []).append(alert["rule"])
    return {k: tuple(v) for k, v in out.items()}


def readiness_json(readiness: DischargeReadiness, now: datetime) -> dict[str, Any]:
    return {
        "session_id": readiness.session_id,
        "ready": readiness.ready,
        "earliest_discharge_at": _iso(readiness.earliest_discharge_at),
        "reasons": list(readiness.reasons),
        "next_checks": [
            {
                "label": check.label,
                "due_at": _iso(check.due_at),
                "due_in_seconds": round((check.due_at - now).total_seconds()),
            }
            for check in readiness.next_checks
        ],
        "as_of": _iso(now),
    }


def _last_activity(session: Session) -> datetime | None:
    times = [rows[-1].at for rows in (session.doses, session.vitals, session.sedation) if rows]
    return max(times) if times else None


def _latest(session: Session) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if session.bp:
        bp = session.bp[-1]
        out["bp"] = {"systolic": bp.systolic, "diastolic": bp.diastolic, "at": _iso(bp.at)}
    for name, rows in (
        ("spo2", session.spo2),
        ("respiratory_rate", session.respiratory_rate),
        ("moaas", session.sedation),
    ):
        if rows:
            out[name] = {"value": rows[-1].value, "at": _iso(rows[-1].at)}
    return out


def sessions_board(
    engine: MonitoringEngine,
    clinics: frozenset[str] | None,
    now: datetime,
    alerts: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Sessions under monitoring (not discharged, active in the last 4 hours), dose order."""
    critical = open_critical_rules(alerts)
    open_by_session: dict[str, int] = {}
    for alert in alerts:
        open_by_session[alert["session_id"]] = open_by_session.get(alert["session_id"], 0) + 1
    out: list[dict[str, Any]] = []
    for session in list(engine.sessions.values()):
        if clinics is not None and session.clinic_id not in clinics:
            continue
        if session.discharge is not None:
            continue
        last = _last_activity(session)
        if last is None or last < now - ACTIVE_FOR:
            continue
        readiness = engine.readiness(session.session_id, now, critical.get(session.session_id, ()))
        if readiness is None:
            continue
        dose = session.latest_dose
        out.append(
            {
                "session_id": session.session_id,
                "clinic_id": session.clinic_id,
                "patient_ref": session.patient_ref,
                "protocol": session.protocol,
                "dosed_at": _iso(dose.at if dose else None),
                "last_activity_at": _iso(last),
                "latest": _latest(session),
                "open_alerts": open_by_session.get(session.session_id, 0),
                "readiness": readiness_json(readiness, now),
            }
        )
    out.sort(key=lambda s: (s["dosed_at"] or "~", s["session_id"]))
    return out
