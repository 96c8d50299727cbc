"""``MonitoringForms``: the ``monitoring_forms`` rows (one per session, due 7 days after
discharge), for the form API, the overdue-form check and the compliance report.

A session's row is opened by ``SessionSummaries.refresh`` (``open_forms``); submitting it
appends its chained ``form.submitted`` record in the same transaction, which ``audit verify``
holds the row to.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Final, cast

import orjson
from sqlalchemy import Connection, case, func, select, update
from sqlmodel import Session

from remsguard.adapters.storage.audit_log import AuditLog
from remsguard.adapters.storage.chain import FORM_SUBMITTED
from remsguard.adapters.storage.events import content_digest
from remsguard.adapters.storage.models import MonitoringForm, utc
from remsguard.adapters.storage.tables import FORMS, insert_for
from remsguard.domain.decisions import AuditKind, AuditRecord, stable_id

__all__ = ["FORM_DEADLINE", "MonitoringForms", "form_submitted", "open_forms"]

FORM_DEADLINE: Final = timedelta(days=7)


class MonitoringForms:
    """The monitoring forms of one compliance log; submissions are chained in ``audit``."""

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit

    def get(self, session_id: str) -> MonitoringForm | None:
        with Session(self.audit.reader) as s:
            return s.get(MonitoringForm, session_id)

    def submit(
        self,
        session_id: str,
        by: str,
        payload: Mapping[str, Any] | None = None,
        at: datetime | None = None,
        *,
        detail: Mapping[str, object] | None = None,
    ) -> MonitoringForm | None:
        """Mark a session's form submitted (first submission wins; later ones are no-ops).

        The change and its chained ``form.submitted`` record (``by``, the time, the SHA-256 of
        the submitted body, and ``detail``) commit together."""
        when = self.audit.now() if at is None else utc(at)
        body = None if payload is None else orjson.dumps(payload).decode()
        with self.audit.recorded_change() as change:
            changed = change.conn.execute(
                update(FORMS)
                .where(FORMS.c.session_id == session_id, FORMS.c.submitted_at.is_(None))
                .values(submitted_at=when, submitted_by=by, payload=body)
                .returning(FORMS.c.clinic_id)
            ).first()
            if changed is not None:
                change.append(
                    [form_submitted(session_id, changed.clinic_id, by, when, body, detail)]
                )
        return self.get(session_id)

    def overdue(
        self, now: datetime, *, clinics: frozenset[str] | None = None
    ) -> list[MonitoringForm]:
        """Forms past due, not submitted, and not yet flagged (``mark_overdue``)."""
        with Session(self.audit.reader) as s:
            stmt = select(MonitoringForm).where(
                FORMS.c.due_at < utc(now),
                FORMS.c.submitted_at.is_(None),
                FORMS.c.overdue_alert_id.is_(None),
            )
            if clinics is not None:
                stmt = stmt.where(FORMS.c.clinic_id.in_(sorted(clinics)))
            return list(s.scalars(stmt.order_by(FORMS.c.due_at, FORMS.c.session_id)))

    def overdue_by_clinic(self, now: datetime) -> dict[str, int]:
        """Per clinic with monitoring forms: how many are past due and not submitted (flagged
        or not); 0 for a clinic whose forms are all in time."""
        overdue = case((FORMS.c.submitted_at.is_(None) & (FORMS.c.due_at < utc(now)), 1), else_=0)
        with self.audit.reader.connect() as conn:
            rows = conn.execute(
                select(FORMS.c.clinic_id, func.sum(overdue)).group_by(FORMS.c.clinic_id)
            ).all()
        return {clinic: int(count or 0) for clinic, count in rows}

    def mark_overdue(self, session_id: str, alert_id: str) -> bool:
        """Record that MONITORING_FORM_OVERDUE was raised (once: False if already marked)."""
        with self.audit.engine.begin() as conn:
            result = conn.execute(
                update(FORMS)
                .where(FORMS.c.session_id == session_id, FORMS.c.overdue_alert_id.is_(None))
                .values(overdue_alert_id=alert_id)
            )
            return bool(result.rowcount)


def open_forms(conn: Connection, sessions: Iterable[tuple[str, str, datetime | None]]) -> None:
    """Create (or move the due time of) the forms of these (session, clinic, discharged at)
    rows: due ``FORM_DEADLINE`` after discharge, no due time before one."""
    rows = [
        {
            "session_id": session_id,
            "clinic_id": clinic_id,
            "due_at": None if discharged_at is None else discharged_at + FORM_DEADLINE,
        }
        for session_id, clinic_id, discharged_at in sessions
    ]
    insert = insert_for(conn)(FORMS)
    conn.execute(
        insert.on_conflict_do_update(
            index_elements=[FORMS.c.session_id],
            set_={"due_at": insert.excluded.due_at},
        ),
        rows,
    )


def form_submitted(
    session_id: str,
    clinic_id: str,
    by: str,
    at: datetime,
    body: str | None,
    detail: Mapping[str, object] | None = None,
) -> AuditRecord:
    """The chained record of a form submission (what verify holds the form row to)."""
    return AuditRecord(
        record_id=stable_id(FORM_SUBMITTED, session_id),
        kind=cast(AuditKind, FORM_SUBMITTED),
        subject_id=session_id,
        session_id=session_id,
        clinic_id=clinic_id,
        occurred_at=at,
        detail={
            **(detail or {}),
            "by": by,
            "payload_sha256": None if body is None else content_digest(body),
        },
    )
