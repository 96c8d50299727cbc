"""Paged, filtered reads of audit records and alerts (the auditor API, the staff console, the
compliance report): the query types, the page, and its opaque cursor.

Filters combine with AND; the order is stable: event time, then ``log_index`` (audit records)
or ``alert_id`` (alerts), so a cursor resumes exactly after the last row it was issued for.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Generic, TypeVar

import orjson
from sqlalchemy import Engine, or_, select
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session

from remsguard.adapters.storage.models import AlertRow, AuditRow, utc
from remsguard.adapters.storage.tables import ALERTS, AUDIT, SUMMARIES

__all__ = [
    "MAX_LIMIT",
    "AlertQuery",
    "AuditQuery",
    "CursorError",
    "Page",
    "alert_page",
    "audit_page",
    "session_timeline",
]

T = TypeVar("T")
MAX_LIMIT: Final = 1000


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None  # None: no more rows


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditQuery:
    """Filters combine with AND. ``clinics`` scopes a principal (None = every clinic);
    ``since`` is inclusive and ``until`` exclusive, on the record's event time."""

    clinics: frozenset[str] | None = None
    clinic_id: str | None = None
    session_id: str | None = None
    patient_ref: str | None = None
    kind: str | None = None
    rule: str | None = None
    severity: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    cursor: str | None = None
    limit: int = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertQuery:
    clinics: frozenset[str] | None = None
    clinic_id: str | None = None
    session_id: str | None = None
    patient_ref: str | None = None
    rule: str | None = None
    severity: str | None = None
    status: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    cursor: str | None = None
    limit: int = 100


class CursorError(ValueError):
    """A cursor that this log did not issue (or for another order)."""


def audit_page(engine: Engine, q: AuditQuery) -> Page[AuditRow]:
    c = AUDIT.c
    where = _scoped(c, q, (c.kind, q.kind))
    return _page(engine, AuditRow, c.event_time, c.log_index, int, where, q)


def alert_page(engine: Engine, q: AlertQuery) -> Page[AlertRow]:
    c = ALERTS.c
    where = _scoped(c, q, (c.status, q.status))
    return _page(engine, AlertRow, c.triggered_at, c.alert_id, str, where, q)


def session_timeline(engine: Engine, session_id: str) -> tuple[list[AuditRow], list[AlertRow]]:
    """Every audit record and alert of a session, each in event-time order (the API
    merges them; records and alerts share the ``event_time``/``triggered_at`` clock)."""
    records: list[AuditRow] = []
    cursor: str | None = None
    while True:
        page = audit_page(engine, AuditQuery(session_id=session_id, cursor=cursor, limit=MAX_LIMIT))
        records.extend(page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    alerts: list[AlertRow] = []
    cursor = None
    while True:
        apage = alert_page(
            engine, AlertQuery(session_id=session_id, cursor=cursor, limit=MAX_LIMIT)
        )
        alerts.extend(apage.items)
        if apage.next_cursor is None:
            break
        cursor = apage.next_cursor
    return records, alerts


def _page(
    engine: Engine,
    model: type[T],
    time_col: Any,
    tie_col: Any,
    tie_type: type,
    where: list[ColumnElement[bool]],
    q: AuditQuery | AlertQuery,
) -> Page[T]:
    limit = max(1, min(q.limit, MAX_LIMIT))
    if q.since is not None:
        where.append(time_col >= utc(q.since))
    if q.until is not None:
        where.append(time_col < utc(q.until))
    if q.cursor is not None:
        at, tie = _decode_cursor(q.cursor, tie_type)
        where.append(or_(time_col > at, (time_col == at) & (tie_col > tie)))
    stmt = select(model).where(*where).order_by(time_col, tie_col).limit(limit + 1)
    with Session(engine) as s:
        rows = list(s.scalars(stmt))
    more = len(rows) > limit
    rows = rows[:limit]
    cursor = None
    if more:
        last = rows[-1]
        cursor = _encode_cursor(getattr(last, time_col.key), getattr(last, tie_col.key))
    return Page(rows, cursor)


def _scoped(
    c: Any, q: AuditQuery | AlertQuery, own: tuple[Any, str | None]
) -> list[ColumnElement[bool]]:
    """The WHERE clauses both queries share: the principal's clinics, the equality filters
    (plus the query's `own`: kind or status), and a patient's sessions."""
    where: list[ColumnElement[bool]] = []
    if q.clinics is not None:
        where.append(c.clinic_id.in_(sorted(q.clinics)))
    equal = [
        (c.clinic_id, q.clinic_id),
        (c.session_id, q.session_id),
        own,
        (c.rule, q.rule),
        (c.severity, q.severity),
    ]
    where += [column == value for column, value in equal if value is not None]
    if q.patient_ref is not None:
        where.append(c.session_id.in_(_sessions_of_patient(q.patient_ref)))
    return where


def _sessions_of_patient(patient_ref: str) -> Any:
    return select(SUMMARIES.c.session_id).where(SUMMARIES.c.patient_ref == patient_ref)


def _encode_cursor(at: datetime, tie: int | str) -> str:
    raw = orjson.dumps([utc(at).isoformat(), tie])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, tie_type: type) -> tuple[datetime, Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at_text, tie = orjson.loads(raw)
        at = datetime.fromisoformat(at_text)
    except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
        raise CursorError(f"bad cursor: {cursor!r}") from exc
    if not isinstance(tie, tie_type) or isinstance(tie, bool):
        raise CursorError(f"bad cursor: {cursor!r}")
    return utc(at), tie
