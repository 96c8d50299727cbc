"""`GET /sessions/{id}/discharge-readiness`: may the patient leave, and if not, why.

The answer is the engine's (`MonitoringEngine.readiness`), given the session's unresolved
critical alerts from the compliance log: `ready`, `earliest_discharge_at` (the latest dose +
the protocol's window), `reasons` in plain words, and the `next_checks` still owed.
Served where the engine's state is: embedded mode, or `remsguard api` with the staff console
(the processor's session state, read from its changelog) once it has caught up; else 503.
"""

from __future__ import annotations

import asyncio

import orjson
from fastapi import APIRouter, Depends, Path
from fastapi.responses import Response

from remsguard.adapters.storage import AlertQuery, AlertStatus
from remsguard.entrypoints.http.auth import auth_errors, require
from remsguard.entrypoints.http.board import board_now, readiness_json
from remsguard.entrypoints.http.capabilities import Compliance, LiveSessions
from remsguard.entrypoints.http.errors import ApiError
from remsguard.identity import Principal, Role

__all__ = ["router"]

router = APIRouter(tags=["staff"])


@router.get(
    "/sessions/{session_id}/discharge-readiness",
    summary="Discharge readiness of one session (from the engine)",
    responses={
        200: {"description": "`{ready, earliest_discharge_at, reasons, next_checks, ...}`"},
        **auth_errors("A device token."),
        404: {"description": "No such session, or not one of this principal's clinics."},
        503: {"description": "No engine state here (no staff console), or not read yet."},
    },
)
async def discharge_readiness(
    session_id: str = Path(min_length=1, max_length=128),
    principal: Principal = Depends(require(Role.STAFF, Role.ADMIN, Role.AUDITOR)),
    *,
    engine: LiveSessions,
    log: Compliance,
) -> Response:
    session = engine.sessions.get(session_id)
    if session is None or not principal.may_see(session.clinic_id):
        raise ApiError(404, "not_found", f"no session {session_id!r}")
    page = await asyncio.to_thread(
        log.alerts, AlertQuery(session_id=session_id, severity="critical", limit=1000)
    )
    rules = tuple(row.rule for row in page.items if row.status != AlertStatus.RESOLVED.value)
    now = board_now(engine)
    readiness = engine.readiness(session_id, now, rules)
    if readiness is None:  # the session went away while we were reading the log
        raise ApiError(404, "not_found", f"no session {session_id!r}")
    body = readiness_json(readiness, now)
    body["patient_ref"] = session.patient_ref
    body["clinic_id"] = session.clinic_id
    return Response(orjson.dumps(body), media_type="application/json")
