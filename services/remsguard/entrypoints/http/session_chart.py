"""The staff console's session chart: its data and its files.

- `GET /console/api/sessions/{id}/chart`: readings, the protocol's bands, doses, the 40-minute
  check window, the end of the monitoring window, assessments, alerts and discharge
  (`auditing.session_chart`), from the compliance log, so it answers the same in embedded mode
  and in `remsguard api`. The console polls it while a chart is open (a new reading shows
  within a second); like `/console/api/state` it is a console read, not an auditor query,
  so it leaves no `api.query` record per poll.
- `GET /console/chart/{name}`: the chart's script and styles and the vendored uPlot
  (`static/vendor/`, MIT, see `uPlot.LICENSE`): no CDN.
"""

from __future__ import annotations

from importlib import resources
from typing import Final

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from remsguard.adapters.storage import AlertQuery, AlertRow, ComplianceLog
from remsguard.adapters.storage.log import MAX_LIMIT
from remsguard.adapters.storage.models import utc
from remsguard.auditing.session_chart import ChartAlert, session_chart
from remsguard.entrypoints.http.audit import READERS
from remsguard.entrypoints.http.auth import require
from remsguard.entrypoints.http.common import compliance, json_response, protocols
from remsguard.entrypoints.http.errors import ApiError
from remsguard.entrypoints.http.sessions import (
    SessionId,
    session_clinic,
    session_protocol,
    vouched_events,
)
from remsguard.identity import Principal

__all__ = ["router"]

router = APIRouter(tags=["console"])
_STATIC: Final = resources.files("remsguard.entrypoints.http") / "static"
FILES: Final = {
    "session.js": ("session.js", "text/javascript; charset=utf-8"),
    "session.css": ("session.css", "text/css; charset=utf-8"),
    "uPlot.iife.min.js": ("vendor/uPlot.iife.min.js", "text/javascript; charset=utf-8"),
    "uPlot.min.css": ("vendor/uPlot.min.css", "text/css; charset=utf-8"),
    "uPlot.LICENSE": ("vendor/uPlot.LICENSE", "text/plain; charset=utf-8"),
}
WITHDRAWN: Final = "withdrawn"


@router.get("/console/chart/{name}", include_in_schema=False)
async def chart_file(name: str) -> Response:
    if name not in FILES:
        raise ApiError(404, "not_found", f"no file {name!r}")
    path, media_type = FILES[name]
    return Response(
        (_STATIC / path).read_bytes(),
        media_type=media_type,
        headers={"Cache-Control": "no-cache"},
    )


def session_alerts(log: ComplianceLog, session_id: str) -> list[AlertRow]:
    """Every alert of the session, in event-time order."""
    rows: list[AlertRow] = []
    cursor: str | None = None
    while True:
        page = log.alerts(AlertQuery(session_id=session_id, cursor=cursor, limit=MAX_LIMIT))
        rows.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return rows


@router.get(
    "/console/api/sessions/{session_id}/chart",
    summary="A session's chart: readings, protocol bands, doses, windows, assessments, alerts",
)
def get_chart(
    request: Request,
    principal: Principal = Depends(require(*READERS)),
    session_id: str = SessionId,
) -> Response:
    log = compliance(request)
    clinic = session_clinic(log, principal, session_id)
    events, _, _ = vouched_events(log, session_id)
    known, default = protocols(request)
    protocol, patient_ref = session_protocol(log, session_id, default)
    alerts = [
        ChartAlert(a.alert_id, a.rule, a.severity, utc(a.triggered_at), a.status, a.message)
        for a in session_alerts(log, session_id)
        if a.status != WITHDRAWN
    ]
    payload = session_chart(
        session_id,
        clinic,
        events,
        alerts,
        known,
        default_protocol=protocol,
        patient_ref=patient_ref,
    )
    return json_response(payload, headers={"Cache-Control": "no-store"})
