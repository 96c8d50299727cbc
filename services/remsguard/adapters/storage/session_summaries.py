"""``SessionSummaries``: the ``session_summaries`` read model (one row per session: its
clinic, patient, protocol, milestones, counts of events and alerts), for the auditor API, the
compliance report and the summary follower of embedded mode.

Writers (the audit sink, ``replay --db``, embedded mode's follower) call ``refresh`` with the
sessions they touched; it recomputes each summary from the stored records and alerts, so it
is idempotent and order-independent, and opens each session's monitoring form row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from sqlalchemy import Connection, Engine, func, select
from sqlmodel import Session

from remsguard.adapters.storage.db import reader
from remsguard.adapters.storage.models import AlertRow, AuditRow, SessionSummary, utc
from remsguard.adapters.storage.monitoring_forms import open_forms
from remsguard.adapters.storage.queries import session_timeline
from remsguard.adapters.storage.tables import ALERTS, AUDIT, EVENTS, SUMMARIES, insert_for
from remsguard.domain.decisions import AuditKind

__all__ = ["SessionSummaries"]

_REFRESH_CHUNK: Final = 500
_KEPT: Final = ("patient_ref", "protocol")  # once known, a refresh never clears them


def _wall_clock() -> datetime:
    return datetime.now(UTC)


class SessionSummaries:
    """Session summaries over one database; ``now`` stamps ``updated_at``."""

    def __init__(self, engine: Engine, *, now: Callable[[], datetime] = _wall_clock) -> None:
        self.engine = engine
        self.reader = reader(engine)  # reads only: never waits for a writer
        self._now = now

    def refresh(
        self,
        session_ids: Iterable[str],
        *,
        patient_refs: Mapping[str, str | None] | None = None,
        protocols: Mapping[str, str | None] | None = None,
    ) -> int:
        """Recompute the summaries of these sessions from the stored records and alerts.

        Idempotent and order-independent, so the sink and ``replay --db`` agree. A known
        ``patient_ref``/``protocol`` (from the engine's state, or a ``session.opened``
        record's detail) is kept once set. Also creates each session's monitoring form row,
        due 7 days after discharge."""
        ids = sorted(set(session_ids))
        patient_refs = patient_refs or {}
        protocols = protocols or {}
        now = utc(self._now())
        done = 0
        with self.engine.begin() as conn:
            for start in range(0, len(ids), _REFRESH_CHUNK):
                chunk = ids[start : start + _REFRESH_CHUNK]
                stats = _record_stats(conn, chunk)
                _name_sessions(conn, chunk, stats)
                alerts = _alerts_of(conn, chunk)
                rows = [
                    _summary_row(
                        sid, st, alerts.get(sid, []), patient_refs.get(sid), protocols.get(sid), now
                    )
                    for sid in chunk
                    if (st := stats.get(sid)) is not None
                ]
                if not rows:
                    continue
                insert = insert_for(conn)(SUMMARIES)
                conn.execute(
                    insert.on_conflict_do_update(
                        index_elements=[SUMMARIES.c.session_id],
                        set_={
                            c: (
                                func.coalesce(SUMMARIES.c[c], insert.excluded[c])
                                if c in _KEPT
                                else insert.excluded[c]
                            )
                            for c in rows[0]
                            if c != "session_id"
                        },
                    ),
                    rows,
                )
                open_forms(
                    conn, ((r["session_id"], r["clinic_id"], r["discharged_at"]) for r in rows)
                )
                done += len(rows)
        return done

    def get(self, session_id: str) -> SessionSummary | None:
        with Session(self.reader) as s:
            return s.get(SessionSummary, session_id)

    def opened_between(
        self,
        *,
        clinics: frozenset[str] | None = None,
        clinic_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[SessionSummary]:
        """Summaries of sessions opened in [since, until), by opening time then id."""
        stmt = select(SessionSummary)
        c = SUMMARIES.c
        if clinics is not None:
            stmt = stmt.where(c.clinic_id.in_(sorted(clinics)))
        if clinic_id is not None:
            stmt = stmt.where(c.clinic_id == clinic_id)
        if since is not None:
            stmt = stmt.where(c.opened_at >= utc(since))
        if until is not None:
            stmt = stmt.where(c.opened_at < utc(until))
        with Session(self.reader) as s:
            return list(s.scalars(stmt.order_by(c.opened_at, c.session_id)))

    def sessions_since(self, log_index: int, limit: int = 10_000) -> tuple[list[str], int]:
        """Sessions with records at ``log_index`` or later (up to ``limit`` records read);
        returns them and the index to continue from. For processes that keep summaries
        following the log (embedded mode writes records but no summaries)."""
        with self.reader.connect() as conn:
            rows = conn.execute(
                select(AUDIT.c.log_index, AUDIT.c.session_id)
                .where(AUDIT.c.log_index >= log_index)
                .order_by(AUDIT.c.log_index)
                .limit(limit)
            ).all()
        if not rows:
            return [], log_index
        return sorted({sid for _, sid in rows if sid is not None}), rows[-1][0] + 1

    def timeline(self, session_id: str) -> tuple[list[AuditRow], list[AlertRow]]:
        """Every audit record and alert of a session, each in event-time order."""
        return session_timeline(self.reader, session_id)


def _record_stats(conn: Connection, chunk: list[str]) -> dict[str, dict[str, Any]]:
    """Per session: its clinic, per record kind (first time, count), the last accepted
    event's time, and the patient and protocol its ``session.opened`` record names."""
    stats: dict[str, dict[str, Any]] = {}
    for row in conn.execute(
        select(
            AUDIT.c.session_id,
            AUDIT.c.kind,
            func.min(AUDIT.c.occurred_at),
            func.max(AUDIT.c.occurred_at),
            func.count(),
            func.min(AUDIT.c.clinic_id),
        )
        .where(AUDIT.c.session_id.in_(chunk))
        .group_by(AUDIT.c.session_id, AUDIT.c.kind)
    ):
        sid, kind, first, last, count, clinic = row
        s = stats.setdefault(sid, {"clinic_id": clinic, "kinds": {}, "last": None})
        s["kinds"][kind] = (_utc_or_none(first), count)
        if kind == AuditKind.EVENT_ACCEPTED and last is not None:
            s["last"] = utc(last)
    for sid, detail in conn.execute(
        select(AUDIT.c.session_id, AUDIT.c.detail).where(
            AUDIT.c.session_id.in_(chunk), AUDIT.c.kind == AuditKind.SESSION_OPENED
        )
    ):
        opened = orjson.loads(detail)
        found_stats = stats.get(sid)
        if found_stats is not None:
            found_stats.setdefault("patient_ref", opened.get("patient_ref"))
            found_stats.setdefault("protocol", opened.get("protocol"))
    return stats


def _name_sessions(conn: Connection, chunk: list[str], stats: dict[str, dict[str, Any]]) -> None:
    """The session.opened event itself (stored by the writers for the forms) names the
    patient and protocol when the audit record's detail does not."""
    for sid, payload in conn.execute(
        select(EVENTS.c.session_id, EVENTS.c.payload)
        .where(EVENTS.c.session_id.in_(chunk), EVENTS.c.type == "session.opened")
        .order_by(EVENTS.c.session_id, EVENTS.c.occurred_at, EVENTS.c.event_id)
    ):
        data = orjson.loads(payload).get("data") or {}
        found_stats = stats.get(sid)
        if found_stats is not None:
            if found_stats.get("patient_ref") is None:
                found_stats["patient_ref"] = data.get("patient_ref")
            if found_stats.get("protocol") is None:
                found_stats["protocol"] = data.get("protocol")


def _alerts_of(conn: Connection, chunk: list[str]) -> dict[str, list[tuple[str, str]]]:
    """Per session: (rule, severity) of each of its alerts."""
    alerts: dict[str, list[tuple[str, str]]] = {}
    for sid, rule, severity in conn.execute(
        select(ALERTS.c.session_id, ALERTS.c.rule, ALERTS.c.severity).where(
            ALERTS.c.session_id.in_(chunk)
        )
    ):
        alerts.setdefault(sid, []).append((rule, severity))
    return alerts


def _summary_row(
    sid: str,
    st: dict[str, Any],
    found: list[tuple[str, str]],
    patient_ref: str | None,
    protocol: str | None,
    now: datetime,
) -> dict[str, Any]:
    """A summary row; a patient or protocol the caller knows wins over the records'."""
    kinds = st["kinds"]
    return {
        "session_id": sid,
        "clinic_id": st["clinic_id"] or "",
        "patient_ref": patient_ref or st.get("patient_ref"),
        "protocol": protocol or st.get("protocol"),
        "opened_at": kinds.get(AuditKind.SESSION_OPENED, (None,))[0],
        "first_dose_at": kinds.get(AuditKind.SESSION_DOSED, (None,))[0],
        "discharged_at": kinds.get(AuditKind.SESSION_DISCHARGED, (None,))[0],
        "last_event_at": st["last"],
        "events_accepted": kinds.get(AuditKind.EVENT_ACCEPTED, (None, 0))[1],
        "alerts_total": len(found),
        "alerts_critical": sum(1 for _, sev in found if sev == "critical"),
        "alerts_warning": sum(1 for _, sev in found if sev == "warning"),
        "rules": orjson.dumps(sorted({r for r, _ in found})).decode(),
        "updated_at": now,
    }


def _utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else utc(value)
