"""`GET /v1/alerts`: alerts from the compliance log, oldest first, with cursor pagination.

Filters: `session`, `clinic`, `rule`, `since` (RFC 3339, inclusive, on `triggered_at`);
`limit` up to 10,000 per page; `cursor` from the previous page's `next_cursor`. A principal
bound to clinics sees only those. Each alert is the outbound alert JSON (as `remsguard
replay` prints it) followed by its lifecycle fields (`status`, `acknowledged_by`, ...).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Final

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from remsguard.adapters.storage import AlertQuery, AlertRow, ComplianceLog
from remsguard.adapters.storage.log import MAX_LIMIT as STORAGE_PAGE
from remsguard.adapters.storage.models import utc
from remsguard.contract.outbound import alert_to_json
from remsguard.entrypoints.http.auth import auth_errors, require
from remsguard.entrypoints.http.common import aware, check_clinic, compliance, issued_cursor
from remsguard.identity import Principal, Role

__all__ = ["MAX_PAGE", "alert_row_json", "router"]

router = APIRouter(tags=["alerts"])
MAX_PAGE: Final = 10_000
_OPTS: Final = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC


def alert_row_json(row: AlertRow) -> bytes:
    """The outbound alert JSON of a stored alert, plus its lifecycle fields."""
    alert = row.to_alert()
    lifecycle = orjson.dumps(
        {
            "status": row.status,
            "acknowledged_by": row.acknowledged_by,
            "acknowledged_at": None if row.acknowledged_at is None else utc(row.acknowledged_at),
            "resolved_by": row.resolved_by,
            "resolved_at": None if row.resolved_at is None else utc(row.resolved_at),
        },
        option=_OPTS,
    )
    return alert_to_json(alert)[:-1] + b"," + lifecycle[1:]


def query_alerts(
    log: ComplianceLog, query: AlertQuery, limit: int
) -> tuple[list[AlertRow], str | None]:
    """Up to `limit` alerts, in storage pages; the cursor continues after the last one."""
    rows: list[AlertRow] = []
    cursor = query.cursor
    while True:
        want = min(limit - len(rows), STORAGE_PAGE)
        page = log.alerts(replace(query, cursor=cursor, limit=want))
        rows.extend(page.items)
        cursor = page.next_cursor
        if cursor is None or len(rows) >= limit:
            return rows, cursor


@router.get(
    "/v1/alerts",
    summary="Alerts, filtered, oldest first",
    responses={
        200: {"description": '`{"alerts": [...], "next_cursor": str | null}`'},
        400: {"description": "Bad cursor or a time without an offset."},
        **auth_errors("A device token, or a clinic this principal may not see."),
    },
)
def get_alerts(
    request: Request,
    principal: Principal = Depends(require(Role.AUDITOR, Role.STAFF, Role.ADMIN)),
    session: str | None = Query(None, min_length=1, max_length=128, description="session id"),
    clinic: str | None = Query(None, min_length=1, max_length=128, description="clinic id"),
    rule: str | None = Query(None, min_length=1, max_length=64, description="rule, e.g. BP_CRISIS"),
    since: datetime | None = Query(None, description="RFC 3339; triggered at or after"),
    limit: int = Query(1000, ge=1, le=MAX_PAGE),
    cursor: str | None = Query(None, min_length=1, max_length=512),
) -> Response:
    since = aware("since", since)
    check_clinic(principal, clinic)
    query = AlertQuery(
        clinics=principal.clinic_scope,
        clinic_id=clinic,
        session_id=session,
        rule=rule,
        since=since,
        cursor=cursor,
    )
    with issued_cursor():
        rows, next_cursor = query_alerts(compliance(request), query, limit)
    body = b'{"alerts":[' + b",".join(alert_row_json(row) for row in rows) + b'],"next_cursor":'
    body += orjson.dumps(next_cursor) + b"}"
    return Response(body, media_type="application/json")
