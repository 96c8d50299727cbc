"""Shared by the auditor API's routers: the clock, protocols, CSV negotiation, scoping, JSON
answers, and the audit record every API query leaves in the compliance log."""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Annotated, Any, Final, cast

import orjson
from fastapi import Request
from fastapi.responses import Response
from pydantic import BeforeValidator

from remsguard.adapters.storage import ComplianceLog, CursorError
from remsguard.adapters.storage.chain import API_QUERY
from remsguard.domain.decisions import AuditKind, AuditRecord
from remsguard.domain.protocol import MonitoringProtocol
from remsguard.embedded.runtime import Unavailable
from remsguard.entrypoints.http.auth import auth_errors
from remsguard.entrypoints.http.capabilities import ServedProcess
from remsguard.entrypoints.http.errors import ApiError
from remsguard.identity import Principal

__all__ = [
    "CSV_CONTENT",
    "PDF",
    "Format",
    "IsoDate",
    "Rfc3339",
    "aware",
    "compliance",
    "csv_response",
    "issued_cursor",
    "json_response",
    "log_query",
    "now",
    "protocols",
    "wants_csv",
]

CSV_CONTENT: Final = {"text/csv": {"schema": {"type": "string"}}}
PDF: Final = "application/pdf"
COMMON_ERRORS: Final[dict[int | str, dict[str, Any]]] = {  # responses= of every route
    400: {"description": "A bad cursor or a time without an offset."},
    **auth_errors("This role may not do this, or a clinic this principal may not see."),
}


_RFC3339: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})"
)
_DATE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")


def _rfc3339(value: object) -> object:
    if isinstance(value, str) and _RFC3339.fullmatch(value):
        return value
    raise ValueError("an RFC 3339 time with an offset, e.g. 2026-11-23T09:00:00Z")


def _iso_date(value: object) -> object:
    if isinstance(value, str) and _DATE.fullmatch(value):
        return value
    raise ValueError("a date, YYYY-MM-DD")


# Query parameter types: only the text forms (pydantic would also take Unix timestamps).
Rfc3339 = Annotated[datetime, BeforeValidator(_rfc3339)]
IsoDate = Annotated[date, BeforeValidator(_iso_date)]


class Format(StrEnum):
    JSON = "json"
    CSV = "csv"


def _process(request: Request) -> ServedProcess:
    process: ServedProcess = request.app.state.container
    return process


def compliance(request: Request) -> ComplianceLog:
    return _process(request).compliance


def now(request: Request) -> datetime:
    """The process's time for the API (the API container's clock; embedded: the wall clock)."""
    return _process(request).now()


def protocols(request: Request) -> tuple[Mapping[str, MonitoringProtocol], str]:
    """The protocols forms are judged by, and the default protocol."""
    process = _process(request)
    return process.protocols, process.settings.default_protocol


def aware(name: str, value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ApiError(400, "invalid_time", f"{name} needs an offset, e.g. 2026-11-23T09:00:00Z")
    return value


@contextmanager
def issued_cursor() -> Iterator[None]:
    """Around a paged read: a cursor the log refuses is a 400, not a server error."""
    try:
        yield
    except CursorError:
        raise ApiError(400, "invalid_cursor", "the cursor is not one this service issued") from None


def wants_csv(request: Request, fmt: Format | None) -> bool:
    if fmt is not None:
        return fmt is Format.CSV
    accept = request.headers.get("accept", "")
    return "text/csv" in accept.lower()


def check_clinic(principal: Principal, clinic: str | None) -> None:
    if clinic is not None and not principal.may_see(clinic):
        raise ApiError(403, "forbidden", f"this token may not see clinic {clinic!r}")


def visible(principal: Principal, clinic: str | None) -> bool:
    """Records without a clinic are visible only to principals bound to no clinic."""
    if clinic is None:
        return not principal.clinics
    return principal.may_see(clinic)


def json_response(payload: Any, headers: Mapping[str, str] | None = None) -> Response:
    """`payload` as JSON, datetimes in UTC with a `Z` (naive ones taken as UTC)."""
    return Response(
        orjson.dumps(payload, option=orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC),
        media_type="application/json",
        headers=headers,
    )


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def csv_response(header: Sequence[str], rows: Iterable[Sequence[Any]], name: str) -> Response:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([_cell(v) for v in row])
    return Response(
        out.getvalue().encode(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
    )


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, StrEnum):
        return value.value
    return value


def log_query(
    request: Request,
    principal: Principal,
    filters: Mapping[str, Any],
    rows: int,
    fmt: str = "json",
) -> None:
    """Append the API query to the compliance log: who, what, when, how many rows; durable
    before the answer goes out (503 if it cannot be)."""
    at = now(request)
    try:
        _process(request).record_access(
            AuditRecord(
                record_id=uuid.uuid4().hex,
                kind=cast(AuditKind, API_QUERY),  # a service kind (see storage.chain)
                subject_id=principal.principal_id,
                session_id=None,
                clinic_id=None,
                occurred_at=at,
                detail={
                    "principal": principal.name,
                    "role": principal.role.value,
                    "method": request.method,
                    "endpoint": request.url.path,
                    "filters": {k: _plain(v) for k, v in filters.items() if v is not None},
                    "rows": rows,
                    "format": fmt,
                },
            )
        )
    except Unavailable as exc:
        raise ApiError(503, "unavailable", f"the query could not be recorded: {exc}") from None
