"""The auditor API over the compliance log: audit records and alerts by clinic, session,
patient, rule, severity and time range (cursor pages, stable order, CSV export of any query),
inclusion proofs against the latest signed tree head, and consistency proofs between heads.

A principal bound to clinics sees only those clinics' rows: the scope goes into the database
query itself, not a filter on the result. Every query is appended to the compliance log.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from datetime import datetime
from typing import Any, Final, TypeVar

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from remsguard.adapters.storage import AlertQuery, AlertRow, AuditQuery, AuditRow, Page
from remsguard.adapters.storage.log import MAX_LIMIT, head_json
from remsguard.adapters.storage.models import utc
from remsguard.alerting.service import alert_row_dict
from remsguard.entrypoints.http.auth import require
from remsguard.entrypoints.http.common import (
    COMMON_ERRORS,
    CSV_CONTENT,
    Format,
    Rfc3339,
    aware,
    check_clinic,
    compliance,
    csv_response,
    issued_cursor,
    json_response,
    log_query,
    visible,
    wants_csv,
)
from remsguard.entrypoints.http.errors import ApiError
from remsguard.identity import Principal, Role

__all__ = ["alert_json", "record_json", "router"]

router = APIRouter(tags=["audit"])
READERS: Final = (Role.AUDITOR, Role.STAFF, Role.ADMIN)
Q = TypeVar("Q", AuditQuery, AlertQuery)
R = TypeVar("R", AuditRow, AlertRow)


def _id(description: str) -> Any:
    return Query(None, min_length=1, max_length=128, description=description)


class AuditRecordOut(BaseModel):
    log_index: int
    record_id: str
    kind: str
    subject_id: str
    session_id: str | None
    clinic_id: str | None
    occurred_at: datetime | None
    event_time: datetime
    appended_at: datetime
    rule: str | None
    severity: str | None
    detail: dict[str, Any]
    chain_id: str
    chain_seq: int
    prev_hash: str
    hash: str


class AuditRecordPage(BaseModel):
    records: list[AuditRecordOut]
    next_cursor: str | None


class AlertOut(BaseModel):
    alert_id: str
    rule: str
    severity: str
    session_id: str
    clinic_id: str
    triggered_at: datetime
    message: str
    evidence: list[str]
    protocol: str
    protocol_version: str
    status: str
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    resolved_by: str | None
    resolved_at: datetime | None


class AlertPage(BaseModel):
    alerts: list[AlertOut]
    next_cursor: str | None


class SignedHead(BaseModel):
    tree_size: int
    root_hash: str
    signed_at: datetime
    key_id: str
    signature: str


class InclusionProofOut(BaseModel):
    version: int
    entry: str = Field(description="The exact canonical entry whose SHA-256 is record_hash.")
    record_hash: str
    leaf_index: int
    tree_size: int
    path: list[str]
    head: SignedHead


class ConsistencyProofOut(BaseModel):
    old: SignedHead
    new: SignedHead
    path: list[str]


RECORD_COLUMNS: Final = list(AuditRecordOut.model_fields)
ALERT_COLUMNS: Final = list(AlertOut.model_fields)


def record_json(row: AuditRow) -> dict[str, Any]:
    """A stored record as `AuditRecordOut` lists it: its times in UTC, its detail parsed."""
    item = {name: getattr(row, name) for name in RECORD_COLUMNS}
    item.update(
        occurred_at=None if row.occurred_at is None else utc(row.occurred_at),
        event_time=utc(row.event_time),
        appended_at=utc(row.appended_at),
        detail=orjson.loads(row.detail),
    )
    return item


_STAFF_ONLY: Final = frozenset(
    {"inhibited_by", "shelved_until", "shelved_by", "shelve_reason", "recorded_at"}
)


def alert_json(row: AlertRow) -> dict[str, Any]:
    """A stored alert as the auditor API lists it: the staff view (`alert_row_dict`) without
    the fields of the console's noise controls."""
    return {k: v for k, v in alert_row_dict(row).items() if k not in _STAFF_ONLY}


_PARAMETERS: Final = {"clinic_id": "clinic", "session_id": "session"}


def _filters(query: AuditQuery | AlertQuery) -> dict[str, Any]:
    """The query's filters by their parameter names, as its `api.query` record lists them."""
    return {
        _PARAMETERS.get(f.name, f.name): getattr(query, f.name)
        for f in fields(query)
        if f.name != "clinics"
    }


def _listing(
    request: Request,
    principal: Principal,
    query: Q,
    read: Callable[[Q], Page[R]],
    item: Callable[[R], dict[str, Any]],
    fmt: Format | None,
    columns: list[str],
    name: str,
) -> Response:
    """Read one page, audit the query, then answer the page as JSON or CSV (the cursor then in
    a header)."""
    with issued_cursor():
        page = read(query)
    items = [item(row) for row in page.items]
    next_cursor = page.next_cursor
    csv = wants_csv(request, fmt)
    log_query(request, principal, _filters(query), len(items), "csv" if csv else "json")
    if not csv:
        return json_response({name: items, "next_cursor": next_cursor})
    filename = "audit-records" if name == "records" else name
    response = csv_response(columns, (_csv_row(i, columns) for i in items), filename)
    if next_cursor is not None:
        response.headers["X-Next-Cursor"] = next_cursor
    return response


def _csv_row(item: dict[str, Any], columns: list[str]) -> list[Any]:
    return [
        orjson.dumps(item[c]).decode() if isinstance(item[c], dict | list) else item[c]
        for c in columns
    ]


_PAGE_DOC: Final = (
    "Filters combine with AND; `since` is inclusive and `until` exclusive (RFC 3339 with an "
    "offset). Oldest first, then by position in the log; pass `next_cursor` as `cursor` for "
    "the next page (same filters). `format=csv` or `Accept: text/csv` exports the page as CSV "
    "(the cursor is then in the `X-Next-Cursor` header)."
)


@router.get(
    "/v1/audit/records",
    summary="Audit records, filtered, in event-time order",
    description=_PAGE_DOC,
    response_model=AuditRecordPage,
    responses={**COMMON_ERRORS, 200: {"content": CSV_CONTENT}},
)
def get_records(
    request: Request,
    principal: Principal = Depends(require(*READERS)),
    clinic: str | None = _id("clinic id"),
    session: str | None = _id("session id"),
    patient_ref: str | None = _id("pseudonymous patient reference"),
    kind: str | None = Query(None, min_length=1, max_length=64, description="e.g. alert.raised"),
    rule: str | None = Query(None, min_length=1, max_length=64),
    severity: str | None = Query(None, min_length=1, max_length=16),
    since: Rfc3339 | None = Query(None, description="event time at or after (RFC 3339)"),
    until: Rfc3339 | None = Query(None, description="event time before (RFC 3339)"),
    cursor: str | None = Query(None, min_length=1, max_length=512),
    limit: int = Query(100, ge=1, le=MAX_LIMIT),
    format: Format | None = Query(None, description="json (default) or csv"),
) -> Response:
    check_clinic(principal, clinic)
    query = AuditQuery(
        clinics=principal.clinic_scope,
        clinic_id=clinic,
        session_id=session,
        patient_ref=patient_ref,
        kind=kind,
        rule=rule,
        severity=severity,
        since=aware("since", since),
        until=aware("until", until),
        cursor=cursor,
        limit=limit,
    )
    read = compliance(request).audit_records
    return _listing(request, principal, query, read, record_json, format, RECORD_COLUMNS, "records")


@router.get(
    "/v1/audit/alerts",
    summary="Alerts with their lifecycle, filtered, in trigger-time order",
    description=_PAGE_DOC,
    response_model=AlertPage,
    responses={**COMMON_ERRORS, 200: {"content": CSV_CONTENT}},
)
def get_audit_alerts(
    request: Request,
    principal: Principal = Depends(require(*READERS)),
    clinic: str | None = _id("clinic id"),
    session: str | None = _id("session id"),
    patient_ref: str | None = _id("pseudonymous patient reference"),
    rule: str | None = Query(None, min_length=1, max_length=64),
    severity: str | None = Query(None, min_length=1, max_length=16),
    status: str | None = Query(None, min_length=1, max_length=16),
    since: Rfc3339 | None = Query(None, description="triggered at or after (RFC 3339)"),
    until: Rfc3339 | None = Query(None, description="triggered before (RFC 3339)"),
    cursor: str | None = Query(None, min_length=1, max_length=512),
    limit: int = Query(100, ge=1, le=MAX_LIMIT),
    format: Format | None = Query(None, description="json (default) or csv"),
) -> Response:
    check_clinic(principal, clinic)
    query = AlertQuery(
        clinics=principal.clinic_scope,
        clinic_id=clinic,
        session_id=session,
        patient_ref=patient_ref,
        rule=rule,
        severity=severity,
        status=status,
        since=aware("since", since),
        until=aware("until", until),
        cursor=cursor,
        limit=limit,
    )
    read = compliance(request).alerts
    return _listing(request, principal, query, read, alert_json, format, ALERT_COLUMNS, "alerts")


@router.get(
    "/v1/audit/records/{record_id}/proof",
    summary="Inclusion proof of one record against the latest signed tree head",
    description=(
        "What `remsguard audit check-proof PROOF --public-key KEY` checks offline. 404 when "
        "the record is unknown (or in a clinic this principal may not see) or not yet under "
        "a signed head."
    ),
    response_model=InclusionProofOut,
    responses={**COMMON_ERRORS, 404: {"description": "No such record, or no signed head yet."}},
)
def get_proof(
    request: Request,
    principal: Principal = Depends(require(*READERS)),
    record_id: str = Path(min_length=1, max_length=64),
) -> Response:
    log = compliance(request)
    row = log.get_record(record_id)
    if row is None or not visible(principal, row.clinic_id):
        log_query(request, principal, {"record_id": record_id}, 0)
        raise ApiError(404, "not_found", f"no audit record {record_id!r}")
    proof = log.inclusion_proof(record_id)
    log_query(request, principal, {"record_id": record_id}, 0 if proof is None else 1)
    if proof is None:
        raise ApiError(404, "not_signed", "the record is not yet under a signed tree head")
    return Response(proof.to_json(), media_type="application/json")


@router.get(
    "/v1/audit/heads/latest",
    summary="The latest signed tree head",
    response_model=SignedHead,
    responses={**COMMON_ERRORS, 404: {"description": "No head signed yet."}},
)
def get_latest_head(
    request: Request, principal: Principal = Depends(require(*READERS))
) -> Response:
    head = compliance(request).latest_head()
    log_query(request, principal, {}, 0 if head is None else 1)
    if head is None:
        raise ApiError(404, "not_found", "no tree head has been signed yet")
    return json_response(head_json(head))


@router.get(
    "/v1/audit/consistency",
    summary="Consistency proof between two signed tree heads",
    description=(
        "RFC 9162 consistency proof that the tree of the signed head of size `first` is a "
        "prefix of the tree of the signed head of size `second` (default: the latest)."
    ),
    response_model=ConsistencyProofOut,
    responses={
        **COMMON_ERRORS,
        404: {"description": "No signed head of that size."},
        422: {"description": "Sizes out of order or malformed."},
    },
)
def get_consistency(
    request: Request,
    principal: Principal = Depends(require(*READERS)),
    first: int = Query(ge=1, le=2**62, description="tree size of the older signed head"),
    second: int | None = Query(None, ge=1, le=2**62, description="newer head (default latest)"),
) -> Response:
    log = compliance(request)
    filters = {"first": first, "second": second}
    old = log.head(first)
    new = log.latest_head() if second is None else log.head(second)
    if old is None or new is None:
        log_query(request, principal, filters, 0)
        raise ApiError(404, "not_found", "no signed tree head of that size")
    if new.tree_size < old.tree_size:
        log_query(request, principal, filters, 0)
        raise ApiError(422, "invalid_range", "second must not be smaller than first")
    path = log.consistency_proof(old.tree_size, new.tree_size)
    log_query(request, principal, filters, 1)
    return json_response({"old": head_json(old), "new": head_json(new), "path": path})
