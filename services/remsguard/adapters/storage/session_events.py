"""``SessionEvents``: the accepted events stored in wire form (``session_events``), for the
monitoring form, the session timeline and the chart; and the chained ``event.stored`` records
that vouch for their content (``events.py``).

Only rows the chain vouches for are shown as evidence: a row edited, or written around the
log, is reported by id and never used.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, select
from sqlmodel import Session

from remsguard.adapters.storage.audit_log import AuditLog, RecordedChange
from remsguard.adapters.storage.chain import EVENT_STORED, hash_holds
from remsguard.adapters.storage.events import (
    StoredEvent,
    content_digest,
    content_records,
    digests_of,
    event_to_json,
)
from remsguard.adapters.storage.models import AuditRow, SessionEventRow, utc
from remsguard.adapters.storage.tables import AUDIT, CHUNK, EVENTS, dialect_insert
from remsguard.domain.decisions import AuditKind, AuditRecord
from remsguard.domain.events import Event

__all__ = ["SessionEvents", "VouchedEvents", "unvouched_event_records"]


@dataclass(frozen=True, slots=True)
class VouchedEvents:
    events: list[SessionEventRow]  # stored content the chain vouches for
    unvouched: list[str]  # event ids of stored rows it does not (never shown as evidence)


class SessionEvents:
    """The stored events of one compliance log; their content records go to ``audit``."""

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit

    def save(self, events: Iterable[Event]) -> int:
        """Store accepted events in wire form (first write of a (session, event id) wins);
        returns how many were new. The new rows' ``event.stored`` records (their content
        digests, ``events.py``) are appended in the same transaction."""
        # The lock comes before the insert: a concurrent writer of the same rows waits.
        with self.audit.recorded_change() as change:
            return self.save_in(change, events)

    @staticmethod
    def save_in(change: RecordedChange, events: Iterable[Event]) -> int:
        """``save`` inside a transaction that holds the append lock."""
        unique = list({(e.session_id, e.event_id): e for e in reversed(list(events))}.values())
        if not unique:
            return 0
        stored = [
            StoredEvent(e.session_id, e.event_id, e.clinic_id, utc(e.occurred_at), payload)
            for e in unique
            for payload in (event_to_json(e).decode(),)
        ]
        types = {(e.session_id, e.event_id): e.type for e in unique}
        new: set[tuple[str, str]] = set()
        conn = change.conn
        for start in range(0, len(stored), CHUNK):
            result = conn.execute(
                _insert_new(conn.dialect.name),
                [
                    {
                        "session_id": row.session_id,
                        "event_id": row.event_id,
                        "clinic_id": row.clinic_id,
                        "type": types[(row.session_id, row.event_id)],
                        "occurred_at": row.occurred_at,
                        "payload": row.payload,
                    }
                    for row in stored[start : start + CHUNK]
                ],
            )
            new.update((sid, eid) for sid, eid in result)
        if new:
            change.append(content_records(r for r in stored if (r.session_id, r.event_id) in new))
        return len(new)

    def of_session(self, session_id: str) -> list[SessionEventRow]:
        """The session's stored events that the log records as accepted and whose content
        the chain vouches for (``vouched``), in event-time order."""
        return self.vouched(session_id).events

    def vouched(self, session_id: str) -> VouchedEvents:
        """The session's stored events, split: those recorded as accepted whose payload
        hashes to the digest in an ``event.stored`` record whose own hash checks out, in
        event-time order (then event id); and the ids of stored rows that fail that check
        (edited, or written around the log)."""
        accepted = select(AUDIT.c.subject_id).where(
            AUDIT.c.session_id == session_id, AUDIT.c.kind == AuditKind.EVENT_ACCEPTED.value
        )
        with Session(self.audit.reader) as s:
            vouchers = s.scalars(
                select(AuditRow).where(
                    AUDIT.c.session_id == session_id, AUDIT.c.kind == EVENT_STORED
                )
            )
            digests: dict[str, str] = {}
            for voucher in vouchers:
                if hash_holds(voucher):
                    digests.update(digests_of(orjson.loads(voucher.detail)))
            rows = list(
                s.scalars(
                    select(SessionEventRow)
                    .where(EVENTS.c.session_id == session_id, EVENTS.c.event_id.in_(accepted))
                    .order_by(EVENTS.c.occurred_at, EVENTS.c.event_id)
                )
            )
        good = [r for r in rows if digests.get(r.event_id) == content_digest(r.payload)]
        bad = sorted({r.event_id for r in rows} - {r.event_id for r in good})
        return VouchedEvents(good, bad)


@functools.lru_cache(maxsize=2)
def _insert_new(dialect: str) -> Any:
    """Insert of events not stored yet, returning the keys of those inserted (built once a
    dialect: `tables.py` says why)."""
    insert = dialect_insert(dialect)(EVENTS)
    keys = (EVENTS.c.session_id, EVENTS.c.event_id)
    return insert.on_conflict_do_nothing(index_elements=list(keys)).returning(*keys)


def unvouched_event_records(conn: Connection) -> list[AuditRecord]:
    """The ``event.stored`` records for rows stored before the log chained them (migration
    0005), vouching for the rows as they are now."""
    vouched = {
        (sid, event_id)
        for sid, detail in conn.execute(
            select(AUDIT.c.session_id, AUDIT.c.detail).where(AUDIT.c.kind == EVENT_STORED)
        )
        for event_id in digests_of(orjson.loads(detail))
    }
    events = [
        StoredEvent(r.session_id, r.event_id, r.clinic_id, utc(r.occurred_at), r.payload)
        for r in conn.execute(
            select(
                EVENTS.c.session_id,
                EVENTS.c.event_id,
                EVENTS.c.clinic_id,
                EVENTS.c.occurred_at,
                EVENTS.c.payload,
            ).order_by(EVENTS.c.session_id, EVENTS.c.event_id)
        )
        if (r.session_id, r.event_id) not in vouched
    ]
    return content_records(events)
