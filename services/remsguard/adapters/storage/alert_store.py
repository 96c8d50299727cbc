"""``AlertStore``: the ``alerts`` table and its lifecycle, for the alerting service, the
notifier, the audit sink and the staff console.

Saving is idempotent by ``alert_id`` and never resets a stored alert's lifecycle. Every
lifecycle step (acknowledge, resolve, withdraw, shelve, unshelve) changes the row and appends
its chained record in one transaction that takes the append lock first, so ``audit verify``
can hold the row to its records. Writers insert alerts in ``alert_id`` order, so two writers
of overlapping batches (the audit sink and the notifier) never wait on each other in a cycle.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

import orjson
from sqlalchemy import Connection, func, select, text, update
from sqlalchemy.dialects import sqlite
from sqlmodel import Session

from remsguard.adapters.storage.audit_log import AuditLog, close_withdrawn
from remsguard.adapters.storage.models import AlertRow, AlertStatus, utc
from remsguard.adapters.storage.queries import AlertQuery, Page, alert_page
from remsguard.adapters.storage.tables import ALERTS, AUDIT, CHUNK, existing, rows_where_in
from remsguard.domain.decisions import (
    Alert,
    AuditKind,
    AuditRecord,
    Withdrawal,
    alert_withdrawn,
    stable_id,
)

__all__ = ["AlertStore"]


class AlertStore:
    """The alerts of one compliance log; lifecycle records go to ``audit``, whose clock
    stamps them."""

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit

    # -- writing --------------------------------------------------------------------------

    def save(self, alerts: Iterable[Alert]) -> int:
        """Insert alerts not yet stored (by ``alert_id``); returns how many were new.

        A re-delivered alert never resets its lifecycle (status, acknowledgement)."""
        with self.audit.engine.begin() as conn:
            return self.save_in(conn, alerts)

    def save_in(self, conn: Connection, alerts: Iterable[Alert]) -> int:
        """``save`` inside a transaction (one that also appends records holds the append
        lock first)."""
        now = self.audit.now()
        rows = [
            {
                "alert_id": a.alert_id,
                "rule": a.rule,
                "severity": str(a.severity),
                "session_id": a.session_id,
                "clinic_id": a.clinic_id,
                "triggered_at": utc(a.triggered_at),
                "message": a.message,
                "evidence": orjson.dumps(list(a.evidence)).decode(),
                "protocol": a.protocol,
                "protocol_version": a.protocol_version,
                "recorded_at": now,
                "status": AlertStatus.OPEN.value,
                "inhibited_by": a.inhibited_by,
            }
            # By id: every writer locks the rows it inserts in one order, so two writers of
            # overlapping batches (the audit sink and the notifier) never wait in a cycle.
            for a in sorted({a.alert_id: a for a in alerts}.values(), key=_by_alert_id)
        ]
        if not rows:
            return 0
        inserted: list[str] = []
        if conn.dialect.name == "postgresql":
            json_rows = orjson.dumps(rows, option=orjson.OPT_UTC_Z).decode()
            found = conn.execute(_INSERT_ALERTS_JSON, {"rows": json_rows}).all()
            inserted = [row.alert_id for row in found]
        else:
            for start in range(0, len(rows), CHUNK):
                result = conn.execute(_INSERT_NEW_SQLITE, rows[start : start + CHUNK])
                inserted += [row.alert_id for row in result]
        # Withdrawn before its row was stored (the audit sink and `replay --db` append
        # the records first): it is stored closed, as its chained record says.
        by_record = {stable_id(AuditKind.ALERT_WITHDRAWN, a): a for a in inserted}
        withdrawn = list(existing(conn, AUDIT.c.record_id, list(by_record)))
        if withdrawn:
            close_withdrawn(conn, [by_record[record_id] for record_id in withdrawn])
        return len(inserted)

    def withdraw(self, withdrawals: Iterable[Withdrawal]) -> int:
        """Close the engine's withdrawn alerts: open, acknowledged or shelved -> withdrawn
        (a shelf is cleared), each with its chained ``alert.withdrawn`` record (the reason and
        the contradicting events), in one transaction; never a delete. Idempotent; returns
        how many rows were closed.

        ``AuditLog.append`` does the same for ``alert.withdrawn`` records it is given (a path
        that only carries audit records, e.g. the audit topic, applies withdrawals too); a
        resolved alert stays resolved (its record is still chained)."""
        with self.audit.recorded_change() as change:
            return change.append([alert_withdrawn(w) for w in withdrawals]).withdrawn

    def acknowledge(
        self,
        alert_id: str,
        by: str,
        at: datetime | None = None,
        *,
        detail: Mapping[str, object] | None = None,
    ) -> AlertRow | None:
        """open -> acknowledged (idempotent: an acknowledged or resolved alert is unchanged).

        The change and its chained ``alert.acknowledged`` record (``by``, the time, and
        ``detail``) commit together, so ``audit verify`` can hold the row to the record."""
        when = self._when(at)
        return self._transition(
            alert_id,
            AuditKind.ALERT_ACKNOWLEDGED,
            {AlertStatus.OPEN},
            {
                "status": AlertStatus.ACKNOWLEDGED.value,
                "acknowledged_by": by,
                "acknowledged_at": when,
            },
            {**(detail or {}), "by": by},
            when,
        )

    def resolve(
        self,
        alert_id: str,
        by: str,
        at: datetime | None = None,
        *,
        detail: Mapping[str, object] | None = None,
    ) -> AlertRow | None:
        """open/acknowledged -> resolved (idempotent), with its chained ``alert.resolved``."""
        when = self._when(at)
        return self._transition(
            alert_id,
            AuditKind.ALERT_RESOLVED,
            {AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED},
            {"status": AlertStatus.RESOLVED.value, "resolved_by": by, "resolved_at": when},
            {**(detail or {}), "by": by},
            when,
        )

    def shelve(
        self, alert_id: str, by: str, until: datetime, reason: str, at: datetime | None = None
    ) -> AlertRow | None:
        """open/acknowledged -> shelved until `until`, with its chained ``alert.shelved``
        record (by, until, reason). Whether the alert may be shelved (not critical, a bounded
        time) is the alerting service's to decide."""
        when, until = self._when(at), utc(until)
        return self._transition(
            alert_id,
            AuditKind.ALERT_SHELVED,
            {AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED},
            {
                "status": AlertStatus.SHELVED.value,
                "shelved_until": until,
                "shelved_by": by,
                "shelve_reason": reason,
            },
            {"by": by, "until": until, "reason": reason},
            when,
            occasion=until.isoformat(),
        )

    def unshelve_due(self, now: datetime) -> list[AlertRow]:
        """Every shelved alert whose shelf has expired by `now`, back to open (acknowledged
        if it was), each with its chained ``alert.unshelved`` record; returns the ones this
        call changed (when two processes' timers find the same shelf due, only the one that
        unshelves it gets it back, so the alert is notified again once)."""
        now = utc(now)
        with self.audit.reader.connect() as conn:
            due = conn.execute(
                select(ALERTS.c.alert_id, ALERTS.c.acknowledged_by, ALERTS.c.shelved_until)
                .where(ALERTS.c.status == AlertStatus.SHELVED.value, ALERTS.c.shelved_until <= now)
                .order_by(ALERTS.c.alert_id)
            ).all()
        out: list[AlertRow] = []
        for alert_id, acknowledged_by, until in due:
            back = AlertStatus.OPEN if acknowledged_by is None else AlertStatus.ACKNOWLEDGED
            row = self._transition(
                alert_id,
                AuditKind.ALERT_UNSHELVED,
                {AlertStatus.SHELVED},
                {
                    "status": back.value,
                    "shelved_until": None,
                    "shelved_by": None,
                    "shelve_reason": None,
                },
                {"until": utc(until), "status": back.value},
                utc(until),
                occasion=utc(until).isoformat(),
                changed_only=True,
            )
            if row is not None:
                out.append(row)
        return out

    def _when(self, at: datetime | None) -> datetime:
        return self.audit.now() if at is None else utc(at)

    def _transition(
        self,
        alert_id: str,
        kind: AuditKind,
        from_: set[AlertStatus],
        values: dict[str, Any],
        detail: dict[str, object],
        at: datetime,
        *,
        occasion: str | None = None,
        changed_only: bool = False,
    ) -> AlertRow | None:
        """One lifecycle step, with its record (id from the kind and alert, and `occasion`
        for steps an alert can take more than once, e.g. each shelf); the row after it, or
        with `changed_only` None unless this call changed it."""
        with self.audit.recorded_change() as change:
            changed = change.conn.execute(
                update(ALERTS)
                .where(ALERTS.c.alert_id == alert_id, ALERTS.c.status.in_([s.value for s in from_]))
                .values(**values)
                .returning(ALERTS.c.session_id, ALERTS.c.clinic_id)
            ).first()
            if changed is not None:
                change.append(
                    [
                        AuditRecord(
                            record_id=stable_id(kind, alert_id)
                            if occasion is None
                            else stable_id(kind, alert_id, occasion),
                            kind=kind,
                            subject_id=alert_id,
                            session_id=changed.session_id,
                            clinic_id=changed.clinic_id,
                            occurred_at=at,
                            detail=detail,
                        )
                    ]
                )
        return None if changed_only and changed is None else self.get(alert_id)

    # -- reading --------------------------------------------------------------------------

    def get(self, alert_id: str) -> AlertRow | None:
        with Session(self.audit.reader) as s:
            return s.get(AlertRow, alert_id)

    def rows(self, alert_ids: Sequence[str]) -> dict[str, AlertRow]:
        """Each of these alerts that is stored, by id: a query a chunk, not one an alert."""
        out: dict[str, AlertRow] = {}
        with Session(self.audit.reader) as s:
            for start in range(0, len(alert_ids), CHUNK):
                chunk = list(alert_ids[start : start + CHUNK])
                out.update(
                    (r.alert_id, r)
                    for r in s.scalars(select(AlertRow).where(ALERTS.c.alert_id.in_(chunk)))
                )
        return out

    def page(self, q: AlertQuery) -> Page[AlertRow]:
        return alert_page(self.audit.reader, q)

    def inhibited_by(self, alert_id: str) -> list[AlertRow]:
        """The alerts this one inhibits (same reading, lower priority), oldest first."""
        query = select(AlertRow).where(ALERTS.c.inhibited_by == alert_id)
        with Session(self.audit.reader) as session:
            return list(session.execute(query.order_by(ALERTS.c.alert_id)).scalars())

    def statuses(self, alert_ids: Sequence[str]) -> dict[str, str]:
        """The status of each of these alerts that exists (two columns, not whole rows)."""
        with self.audit.reader.connect() as conn:
            found = rows_where_in(conn, _STATUSES, ALERTS.c.alert_id, list(alert_ids))
            return {alert_id: status for alert_id, status in found}

    def open_counts(self) -> dict[tuple[str, str], int]:
        """Open alerts by (clinic, severity), whoever changed their status."""
        query = (
            select(ALERTS.c.clinic_id, ALERTS.c.severity, func.count())
            .where(ALERTS.c.status == AlertStatus.OPEN.value)
            .group_by(ALERTS.c.clinic_id, ALERTS.c.severity)
        )
        with self.audit.reader.connect() as conn:
            return {(clinic, severity): n for clinic, severity, n in conn.execute(query)}


_STATUSES: Final = select(ALERTS.c.alert_id, ALERTS.c.status)  # built once (`rows_where_in`)


def _by_alert_id(alert: Alert) -> str:
    return alert.alert_id


_ALERT_COLUMNS: Final = (
    "alert_id",
    "rule",
    "severity",
    "session_id",
    "clinic_id",
    "triggered_at",
    "message",
    "evidence",
    "protocol",
    "protocol_version",
    "recorded_at",
    "status",
    "inhibited_by",
)
# The whole batch as one JSON parameter: a multi-row VALUES of thousands of placeholders (or
# a dozen arrays) costs more to build in Python than the statement costs to run.
# Built once (`tables.py` says why): SQLite's insert of alerts not stored yet, returning ids.
_INSERT_NEW_SQLITE: Final = (
    sqlite.insert(ALERTS)
    .on_conflict_do_nothing(index_elements=[ALERTS.c.alert_id])
    .returning(ALERTS.c.alert_id)
)
_INSERT_ALERTS_JSON: Final = text(
    f"INSERT INTO alerts ({', '.join(_ALERT_COLUMNS)}) "
    f"SELECT {', '.join(_ALERT_COLUMNS)} FROM json_populate_recordset(NULL::alerts, :rows) "
    "ON CONFLICT (alert_id) DO NOTHING RETURNING alert_id"
)
