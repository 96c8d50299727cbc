"""`GET /v1/reports/compliance?clinic=C&month=YYYY-MM`: a clinic's month of compliance as HTML
(default), PDF (`format=pdf` or `Accept: application/pdf`) or its numbers as JSON
(`format=json`), with charts rendered on the server (`auditing.report_document`). Auditor, staff
and admin roles, for a clinic the principal may see; each report is an `api.query` record.
Reads only the compliance log, so embedded mode and `remsguard api` answer alike."""

from __future__ import annotations

from enum import StrEnum

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from remsguard.auditing.report import compliance_report, month_of
from remsguard.auditing.report_document import REPORT_CSS, report_charts, report_html, report_pdf
from remsguard.entrypoints.http.audit import READERS
from remsguard.entrypoints.http.auth import require
from remsguard.entrypoints.http.common import (
    COMMON_ERRORS,
    PDF,
    check_clinic,
    compliance,
    json_response,
    log_query,
    now,
    protocols,
)
from remsguard.entrypoints.http.errors import ApiError
from remsguard.identity import Principal

__all__ = ["router"]

router = APIRouter(tags=["compliance"])


class ReportFormat(StrEnum):
    HTML = "html"
    PDF = "pdf"
    JSON = "json"


def _format(request: Request, fmt: ReportFormat | None) -> ReportFormat:
    if fmt is not None:
        return fmt
    accept = request.headers.get("accept", "").lower()
    return ReportFormat.PDF if PDF in accept else ReportFormat.HTML


@router.get("/v1/reports/report.css", include_in_schema=False)
async def report_css() -> Response:
    return Response(REPORT_CSS, media_type="text/css; charset=utf-8")


@router.get(
    "/v1/reports/compliance",
    summary="A clinic's compliance report for one month (HTML, PDF or JSON)",
    description=(
        "Sessions monitored, the share fully compliant, each rule's count and its trend by "
        "week (the same counts as `/v1/compliance/summary`), minutes from dose to the "
        "40-minute BP, time to acknowledge critical alerts (median, p90), forms submitted "
        "within 7 days, and the open items to fix."
    ),
    response_class=Response,
    responses={
        **COMMON_ERRORS,
        200: {"content": {"text/html": {}, PDF: {}, "application/json": {}}},
    },
)
def get_compliance_report(
    request: Request,
    principal: Principal = Depends(require(*READERS)),
    clinic: str = Query(min_length=1, max_length=128),
    month: str = Query(description="YYYY-MM", min_length=7, max_length=7),
    format: ReportFormat | None = Query(None, description="html (default), pdf or json"),
) -> Response:
    check_clinic(principal, clinic)
    try:
        first = month_of(month)
    except ValueError as exc:
        raise ApiError(400, "invalid_month", f"month {month!r}: {exc}") from None
    if not 2000 <= first.year <= 2099:
        raise ApiError(400, "invalid_month", "month out of range")
    fmt = _format(request, format)
    known, default = protocols(request)
    report = compliance_report(
        compliance(request),
        clinic,
        first,
        now=now(request),
        protocols=known,
        default_protocol=default,
    )
    log_query(request, principal, {"clinic": clinic, "month": month}, 1, fmt.value)
    name = f"compliance-{clinic}-{month}"
    if fmt is ReportFormat.JSON:
        return json_response(report.to_json())
    charts = report_charts(report)
    if fmt is ReportFormat.PDF:
        return Response(
            report_pdf(report, charts),
            media_type=PDF,
            headers={"Content-Disposition": f'inline; filename="{name}.pdf"'},
        )
    return Response(report_html(report, charts), media_type="text/html; charset=utf-8")
