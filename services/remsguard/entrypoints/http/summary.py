"""`GET /v1/compliance/summary`: per clinic and day, sessions, sessions with violations by
rule, the share fully compliant, forms submitted and overdue (JSON or CSV)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Final

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel

from remsguard.auditing.summary import daily_summary
from remsguard.entrypoints.http.audit import READERS
from remsguard.entrypoints.http.auth import require
from remsguard.entrypoints.http.common import (
    COMMON_ERRORS,
    CSV_CONTENT,
    Format,
    IsoDate,
    check_clinic,
    compliance,
    csv_response,
    log_query,
    now,
    wants_csv,
)
from remsguard.entrypoints.http.errors import ApiError
from remsguard.identity import Principal

__all__ = ["router"]

router = APIRouter(tags=["compliance"])
MAX_DAYS: Final = 366


class ClinicDayOut(BaseModel):
    clinic_id: str
    day: date
    sessions: int
    sessions_with_violations: int
    violations_by_rule: dict[str, int]
    fully_compliant_share: float | None
    forms_submitted: int
    forms_overdue: int


class SummaryOut(BaseModel):
    since: date
    until: date
    days: list[ClinicDayOut]


@router.get(
    "/v1/compliance/summary",
    summary="Compliance per clinic and day",
    description=(
        "Days in [`since`, `until`) (UTC dates; default: the last 7 days up to today), at "
        f"most {MAX_DAYS}. A session counts on the day it opened; it has a violation when it "
        "has any alert (MONITORING_FORM_OVERDUE included) and is fully compliant otherwise."
    ),
    response_model=SummaryOut,
    responses={**COMMON_ERRORS, 200: {"content": CSV_CONTENT}},
)
def get_summary(
    request: Request,
    principal: Principal = Depends(require(*READERS)),
    clinic: str | None = Query(None, min_length=1, max_length=128),
    since: IsoDate | None = Query(None, description="first day, YYYY-MM-DD"),
    until: IsoDate | None = Query(None, description="day after the last, YYYY-MM-DD"),
    format: Format | None = Query(None, description="json (default) or csv"),
) -> Response:
    check_clinic(principal, clinic)
    at = now(request)
    end = until or (at.date() + timedelta(days=1))
    start = since or (end - timedelta(days=7))
    if start >= end or (end - start).days > MAX_DAYS:
        raise ApiError(400, "invalid_range", f"need since < until, at most {MAX_DAYS} days")
    if start.year < 1900 or end.year > 9000:
        raise ApiError(400, "invalid_range", "dates out of range")
    days = daily_summary(
        compliance(request),
        since=start,
        until=end,
        now=at,
        clinics=principal.clinic_scope,
        clinic_id=clinic,
    )
    csv = wants_csv(request, format)
    log_query(
        request,
        principal,
        {"clinic": clinic, "since": start, "until": end},
        len(days),
        "csv" if csv else "json",
    )
    if csv:
        header = [
            "clinic_id",
            "day",
            "sessions",
            "sessions_with_violations",
            "fully_compliant_share",
            "forms_submitted",
            "forms_overdue",
            "violations_by_rule",
        ]
        rows = [
            [
                d.clinic_id,
                d.day.isoformat(),
                d.sessions,
                d.sessions_with_violations,
                "" if d.fully_compliant_share is None else d.fully_compliant_share,
                d.forms_submitted,
                d.forms_overdue,
                ";".join(f"{r}={n}" for r, n in sorted(d.violations_by_rule.items())),
            ]
            for d in days
        ]
        return csv_response(header, rows, "compliance-summary")
    payload = {
        "since": start.isoformat(),
        "until": end.isoformat(),
        "days": [d.to_json() for d in days],
    }
    return Response(orjson.dumps(payload), media_type="application/json")
