"""`GET /v1/sessions/{id}/monitoring-form.pdf`: the session's Patient Monitoring Form as a PDF
(`auditing.form_document`): the same form as `GET /v1/sessions/{id}/form`, with the records it
rests on and the Merkle root they are proven included under. Auditor, staff and admin roles,
clinic-scoped like every session route; each download is an `api.query` record."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from remsguard.auditing.form_document import form_evidence, form_pdf
from remsguard.entrypoints.http.audit import READERS
from remsguard.entrypoints.http.auth import require
from remsguard.entrypoints.http.common import COMMON_ERRORS, PDF, log_query, now, protocols
from remsguard.entrypoints.http.sessions import (
    NOT_FOUND,
    SessionId,
    monitoring_form,
    queried_session,
)
from remsguard.identity import Principal

__all__ = ["router"]

router = APIRouter(tags=["sessions"])


@router.get(
    "/v1/sessions/{session_id}/monitoring-form.pdf",
    summary="The session's Patient Monitoring Form as a PDF",
    description=(
        "Every form field filled from the session's vouched events, missing ones marked "
        "`missing` with the reason; the compliance log records behind the values and the "
        "signed tree head's Merkle root each of them is proven included under."
    ),
    response_class=Response,
    responses={**COMMON_ERRORS, **NOT_FOUND, 200: {"content": {PDF: {}}}},
)
def get_form_pdf(
    request: Request,
    principal: Principal = Depends(require(*READERS)),
    session_id: str = SessionId,
) -> Response:
    log, clinic = queried_session(request, principal, session_id, "pdf")
    known, default = protocols(request)
    at = now(request)
    doc = monitoring_form(log, session_id, clinic, known, default, at)
    body = form_pdf(doc, form_evidence(log, doc), at)
    log_query(request, principal, {"session": session_id}, 1, "pdf")
    return Response(
        body,
        media_type=PDF,
        headers={
            "Content-Disposition": f'inline; filename="monitoring-form-{session_id}.pdf"',
            "Cache-Control": "no-store",
        },
    )
