"""A session for auditors: its timeline (every event, decision and alert in event-time order),
its Patient Monitoring Form (JSON or CSV, filled from the events, missing fields marked), and
the form's submission (which stops the 7-day deadline)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

import orjson
from fastapi import APIRouter, Body, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel

from remsguard.adapters.storage import AuditQuery, AuditRow, ComplianceLog, MonitoringForm
from remsguard.adapters.storage.chain import FORM_SUBMITTED, hash_holds
from remsguard.adapters.storage.models import utc
from remsguard.adapters.storage.registry import RegistryStore
from remsguard.auditing.forms import FIELDS, MonitoringFormDoc, build_form, form_csv
from remsguard.contract.decode import decode_event
from remsguard.domain.decisions import AuditKind, stable_id
from remsguard.domain.events import Event
from remsguard.domain.protocol import MonitoringProtocol
from remsguard.entrypoints.http.audit import (
    READERS,
    AlertOut,
    AuditRecordOut,
    alert_json,
    record_json,
)
from remsguard.entrypoints.http.auth import require
from remsguard.entrypoints.http.common import (
    COMMON_ERRORS,
    CSV_CONTENT,
    Format,
    compliance,
    csv_response,
    json_response,
    log_query,
    now,
    protocols,
    visible,
    wants_csv,
)
from remsguard.entrypoints.http.errors import ApiError
from remsguard.identity import Principal, Role

__all__ = [
    "monitoring_form",
    "queried_session",
    "router",
    "session_clinic",
    "session_protocol",
    "vouched_events",
]

router = APIRouter(tags=["sessions"])
SessionId = Path(min_length=1, max_length=128)
NOT_FOUND: Final[dict[int | str, dict[str, Any]]] = {
    404: {"description": "No such session (or one this principal may not see)."}
}


class TimelineEntry(BaseModel):
    at: datetime
    source: str  # "record" or "alert"
    kind: str  # the record's kind, or "alert"
    record: AuditRecordOut | None = None
    alert: AlertOut | None = None
    event: dict[str, Any] | None = None  # the event in wire form, for event.accepted records


class Timeline(BaseModel):
    session_id: str
    clinic_id: str
    entries: list[TimelineEntry]


class FormFieldOut(BaseModel):
    value: Any
    missing: bool
    reason: str | None
    evidence: list[str]
    basis: str | None


class FormSubmission(BaseModel):
    due_at: datetime | None
    submitted_at: datetime | None
    submitted_by: str | None
    overdue: bool
    overdue_alert_id: str | None


class FormOut(BaseModel):
    session_id: str
    clinic_id: str
    patient_ref: str | None
    protocol: str | None
    complete: bool
    missing_fields: list[str]
    fields: dict[str, FormFieldOut]
    submission: FormSubmission
    unvouched_events: list[str] = []


class SubmitOut(BaseModel):
    session_id: str
    submitted: bool
    already_submitted: bool
    submission: FormSubmission


def session_clinic(log: ComplianceLog, principal: Principal, session_id: str) -> str:
    """The session's clinic; 404 when unknown or not visible (its existence is not revealed)."""
    summary = log.session_summary(session_id)
    clinic: str | None = summary.clinic_id if summary is not None else None
    if clinic is None:
        form = log.get_form(session_id)
        clinic = form.clinic_id if form is not None else None
    if clinic is None:
        page = log.audit_records(AuditQuery(session_id=session_id, limit=1))
        clinic = page.items[0].clinic_id if page.items else None
    if clinic is None or not visible(principal, clinic):
        raise ApiError(404, "not_found", f"no session {session_id!r}")
    return clinic


def queried_session(
    request: Request, principal: Principal, session_id: str, fmt: str = "json"
) -> tuple[ComplianceLog, str]:
    """The compliance log and the session's clinic, for an auditor query of the session; one
    this principal may not see is recorded as a query that found nothing, then 404."""
    log = compliance(request)
    try:
        return log, session_clinic(log, principal, session_id)
    except ApiError:
        log_query(request, principal, {"session": session_id}, 0, fmt)
        raise


def session_protocol(log: ComplianceLog, session_id: str, default: str) -> tuple[str, str | None]:
    """The session's protocol (`default` when its summary names none) and its patient_ref."""
    summary = log.session_summary(session_id)
    if summary is None:
        return default, None
    return summary.protocol or default, summary.patient_ref


def vouched_events(
    log: ComplianceLog, session_id: str
) -> tuple[list[Event], dict[str, Any], list[str]]:
    """The session's accepted events whose stored content the hash chain vouches for
    (``ComplianceLog.vouched_session_events``), their wire form by event id, and the ids of
    stored events it does not vouch for (left out: never evidence on a form)."""
    vouched = log.vouched_session_events(session_id)
    events: list[Event] = []
    wire: dict[str, Any] = {}
    for row in vouched.events:
        raw = row.payload.encode()
        decoded = decode_event(raw)
        if isinstance(decoded, Event) and row.event_id not in wire:
            events.append(decoded)
            wire[row.event_id] = orjson.loads(raw)
    return events, wire, vouched.unvouched


def _submission(
    form: MonitoringForm | None, submitted: AuditRow | None, at: datetime
) -> dict[str, Any]:
    """The form's submission state: who submitted it and when from its chained
    ``form.submitted`` record (a row's ``submitted_at`` without one is not believed), the
    deadline from the form row."""
    if form is None:
        return {
            "due_at": None,
            "submitted_at": None,
            "submitted_by": None,
            "overdue": False,
            "overdue_alert_id": None,
        }
    due = None if form.due_at is None else utc(form.due_at)
    submitted_at = None
    submitted_by = None
    if submitted is not None and submitted.occurred_at is not None:
        submitted_at = utc(submitted.occurred_at)
        by = orjson.loads(submitted.detail).get("by")
        submitted_by = None if by is None else str(by)
    return {
        "due_at": due,
        "submitted_at": submitted_at,
        "submitted_by": submitted_by,
        "overdue": form.overdue_alert_id is not None
        or (submitted_at is None and due is not None and due < at),
        "overdue_alert_id": form.overdue_alert_id,
    }


def _chained_submission(log: ComplianceLog, session_id: str) -> AuditRow | None:
    record = log.get_record(stable_id(FORM_SUBMITTED, session_id))
    return record if record is not None and hash_holds(record) else None


@router.get(
    "/v1/sessions/{session_id}/timeline",
    summary="Every event, decision and alert of a session, in event-time order",
    response_model=Timeline,
    responses={**COMMON_ERRORS, **NOT_FOUND, 200: {"content": CSV_CONTENT}},
)
def get_timeline(
    request: Request,
    principal: Principal = Depends(require(*READERS)),
    session_id: str = SessionId,
    format: Format | None = Query(None, description="json (default) or csv"),
) -> Response:
    csv = wants_csv(request, format)
    log, clinic = queried_session(request, principal, session_id, "csv" if csv else "json")
    records, alerts = log.session_timeline(session_id)
    _, wire, _ = vouched_events(log, session_id)
    entries: list[tuple[tuple[datetime, int, str], dict[str, Any]]] = []
    for row in records:
        if not visible(principal, row.clinic_id):
            continue
        entry: dict[str, Any] = {
            "at": utc(row.event_time),
            "source": "record",
            "kind": row.kind,
            "record": record_json(row),
            "alert": None,
            "event": wire.get(row.subject_id) if row.kind == AuditKind.EVENT_ACCEPTED else None,
        }
        entries.append(((utc(row.event_time), 0, f"{row.log_index:020d}"), entry))
    for alert in alerts:
        if not visible(principal, alert.clinic_id):
            continue
        at = utc(alert.triggered_at)
        entries.append(
            (
                (at, 1, alert.alert_id),
                {
                    "at": at,
                    "source": "alert",
                    "kind": "alert",
                    "record": None,
                    "alert": alert_json(alert),
                    "event": None,
                },
            )
        )
    entries.sort(key=lambda e: e[0])
    items = [e for _, e in entries]
    log_query(request, principal, {"session": session_id}, len(items), "csv" if csv else "json")
    if csv:
        header = ["at", "source", "kind", "id", "rule", "severity", "detail"]
        rows = []
        for item in items:
            if item["source"] == "record":
                rec = item["record"]
                detail = item["event"] if item["event"] is not None else rec["detail"]
                rows.append(
                    [
                        item["at"],
                        "record",
                        item["kind"],
                        rec["record_id"],
                        rec["rule"],
                        rec["severity"],
                        orjson.dumps(detail, option=orjson.OPT_UTC_Z).decode(),
                    ]
                )
            else:
                alert = item["alert"]
                rows.append(
                    [
                        item["at"],
                        "alert",
                        "alert",
                        alert["alert_id"],
                        alert["rule"],
                        alert["severity"],
                        alert["message"],
                    ]
                )
        return csv_response(header, rows, f"timeline-{session_id}")
    return json_response({"session_id": session_id, "clinic_id": clinic, "entries": items})


def monitoring_form(
    log: ComplianceLog,
    session_id: str,
    clinic: str,
    known: Mapping[str, MonitoringProtocol],
    default: str,
    at: datetime,
) -> MonitoringFormDoc:
    """The session's Patient Monitoring Form, filled from its vouched events (also drawn as a
    PDF by ``form_document``)."""
    events, _, unvouched = vouched_events(log, session_id)
    protocol, patient_ref = session_protocol(log, session_id, default)
    records, _ = log.session_timeline(session_id)
    return build_form(
        session_id,
        clinic,
        events,
        known,
        default_protocol=protocol,
        patient_ref=patient_ref,
        alert_rules=[
            (r.rule, r.subject_id)
            for r in records
            if r.kind == AuditKind.ALERT_RAISED and r.rule is not None and hash_holds(r)
        ],
        submission=_submission(log.get_form(session_id), _chained_submission(log, session_id), at),
        unvouched_events=unvouched,
        registry=RegistryStore(log).load(),
    )


@router.get(
    "/v1/sessions/{session_id}/form",
    summary="The session's Patient Monitoring Form, filled from its events",
    description=(
        "Fields: " + ", ".join(f"`{f}`" for f in FIELDS) + ". A field the events cannot fill "
        "is `missing: true` with the `reason`; `evidence` lists the event (or alert) ids a "
        "value comes from, `basis` the protocol thresholds behind a judgement. CSV: one row "
        "per field."
    ),
    response_model=FormOut,
    responses={**COMMON_ERRORS, **NOT_FOUND, 200: {"content": CSV_CONTENT}},
)
def get_form(
    request: Request,
    principal: Principal = Depends(require(*READERS)),
    session_id: str = SessionId,
    format: Format | None = Query(None, description="json (default) or csv"),
) -> Response:
    csv = wants_csv(request, format)
    log, clinic = queried_session(request, principal, session_id, "csv" if csv else "json")
    known, default = protocols(request)
    doc = monitoring_form(log, session_id, clinic, known, default, now(request))
    log_query(request, principal, {"session": session_id}, 1, "csv" if csv else "json")
    if csv:
        return Response(
            form_csv(doc).encode(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="form-{session_id}.csv"'},
        )
    return json_response(doc.to_json())


@router.post(
    "/v1/sessions/{session_id}/form/submit",
    summary="Mark the session's Patient Monitoring Form submitted",
    description=(
        "The form must be submitted within 7 calendar days after the session ends, else "
        "MONITORING_FORM_OVERDUE is raised. The first submission counts; later ones change "
        "nothing (`already_submitted`). The body, if any, is kept as submitted."
    ),
    response_model=SubmitOut,
    responses={
        **COMMON_ERRORS,
        404: {"description": "No such session, or it has no form yet (not discharged)."},
    },
)
def submit_form(
    request: Request,
    principal: Principal = Depends(require(Role.STAFF, Role.ADMIN)),
    session_id: str = SessionId,
    payload: dict[str, Any] | None = Body(None, description="the form as submitted, if any"),
) -> Response:
    log = compliance(request)
    session_clinic(log, principal, session_id)
    before = log.get_form(session_id)
    if before is None:
        raise ApiError(404, "no_form", f"session {session_id!r} has no monitoring form yet")
    at = now(request)
    already = before.submitted_at is not None
    form = before
    if not already:
        on_time = before.due_at is None or at <= utc(before.due_at)
        form = (
            log.forms.submit(
                session_id,
                principal.name,
                payload,
                at,
                detail={"principal_id": principal.principal_id, "on_time": on_time},
            )
            or before
        )
    return json_response(
        {
            "session_id": session_id,
            "submitted": form.submitted_at is not None,
            "already_submitted": already,
            "submission": _submission(form, _chained_submission(log, session_id), at),
        }
    )
