"""``ComplianceLog``: the repository of the compliance log, for every writer and reader.

Writers (``replay --db``, the audit sink, the API) call ``append_audit`` / ``save_alerts`` /
``refresh_sessions``; all are idempotent, so re-delivery inserts nothing twice. Appends are
serialised (a PostgreSQL advisory lock, ``BEGIN IMMEDIATE`` on SQLite) because every record
gets the next gapless ``log_index`` and extends its clinic's chain. The application never
updates or deletes an audit record; the database refuses it anyway.

Readers use the ``*Query`` dataclasses and get a ``Page`` with an opaque cursor; the order
is stable: event time, then ``log_index`` (audit records) or ``alert_id`` (alerts).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Generic, TypeVar, cast

import orjson
from sqlalchemy import (
    Connection,
    Engine,
    Select,
    Table,
    any_,
    case,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session

from remsguard.adapters.storage.chain import (
    EVENT_STORED,
    FORM_SUBMITTED,
    GENESIS,
    chain_of,
    entry_hash,
    entry_of,
    hash_holds,
    row_entry,
    stored_form,
)
from remsguard.adapters.storage.db import APPEND_LOCK, make_engine, migrate
from remsguard.adapters.storage.events import (
    StoredEvent,
    content_digest,
    content_records,
    digests_of,
    event_to_json,
)
from remsguard.adapters.storage.models import (
    AlertRow,
    AlertStatus,
    ApiPrincipal,
    AuditRow,
    ChainHead,
    MerkleNode,
    MonitoringForm,
    PrincipalRole,
    SessionEventRow,
    SessionSummary,
    TreeHead,
    utc,
    utc_text,
)
from remsguard.adapters.storage.signing import HeadSigner
from remsguard.domain import merkle
from remsguard.domain.decisions import (
    Alert,
    AuditKind,
    AuditRecord,
    Withdrawal,
    alert_withdrawn,
    stable_id,
)
from remsguard.domain.events import Event

__all__ = [
    "AlertQuery",
    "AppendResult",
    "AuditQuery",
    "ComplianceLog",
    "InclusionProof",
    "Page",
]

T = TypeVar("T")
MAX_LIMIT: Final = 1000
NODE_LEVEL: Final = 8  # interior nodes of >= 256 leaves are cached in audit_merkle_nodes
_CHUNK: Final = 5000
FORM_DEADLINE: Final = timedelta(days=7)

AUDIT: Final[Table] = AuditRow.__table__  # type: ignore[attr-defined]
ALERTS: Final[Table] = AlertRow.__table__  # type: ignore[attr-defined]
HEADS: Final[Table] = ChainHead.__table__  # type: ignore[attr-defined]
TREE_HEADS: Final[Table] = TreeHead.__table__  # type: ignore[attr-defined]
NODES: Final[Table] = MerkleNode.__table__  # type: ignore[attr-defined]
SUMMARIES: Final[Table] = SessionSummary.__table__  # type: ignore[attr-defined]
FORMS: Final[Table] = MonitoringForm.__table__  # type: ignore[attr-defined]
PRINCIPALS: Final[Table] = ApiPrincipal.__table__  # type: ignore[attr-defined]
EVENTS: Final[Table] = SessionEventRow.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class AppendResult:
    inserted: int
    duplicates: int
    tree_size: int  # records in the log after this append
    withdrawn: int = 0  # alert rows closed by the `alert.withdrawn` records appended


@dataclass(frozen=True, slots=True)
class VouchedEvents:
    events: list[SessionEventRow]  # stored content the chain vouches for
    unvouched: list[str]  # event ids of stored rows it does not (never shown as evidence)


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


@dataclass(frozen=True, slots=True)
class InclusionProof:
    """Everything an auditor needs offline: the exact hashed entry, its position, the audit
    path, and the signed head it leads to. ``to_json`` is what ``audit check-proof`` reads."""

    entry: bytes
    record_hash: str
    leaf_index: int
    tree_size: int
    path: list[str]
    head: TreeHead

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "version": 1,
                "entry": self.entry.decode(),
                "record_hash": self.record_hash,
                "leaf_index": self.leaf_index,
                "tree_size": self.tree_size,
                "path": self.path,
                "head": head_json(self.head),
            },
            option=orjson.OPT_UTC_Z | orjson.OPT_INDENT_2,
        )


def head_json(head: TreeHead) -> dict[str, Any]:
    return {
        "tree_size": head.tree_size,
        "root_hash": head.root_hash,
        "signed_at": utc(head.signed_at),
        "key_id": head.key_id,
        "signature": head.signature,
    }


class CursorError(ValueError):
    """A cursor that this log did not issue (or for another order)."""


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


def _insert(conn: Connection) -> Callable[[Table], Any]:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def _utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else utc(value)


@dataclass(frozen=True, slots=True)
class RecordedChange:
    """A table change and its chained records in one transaction (`recorded_change`)."""

    conn: Connection
    append: Callable[[Iterable[AuditRecord]], AppendResult]


class ComplianceLog:
    """The compliance log over one database (PostgreSQL or SQLite)."""

    def __init__(self, engine: Engine, *, now: Callable[[], datetime] | None = None) -> None:
        self.engine = engine
        self._now = now or (lambda: datetime.now(UTC))

    @classmethod
    def open(cls, url: str, *, run_migrations: bool = True, **engine_kwargs: Any) -> ComplianceLog:
        engine = make_engine(url, **engine_kwargs)
        if run_migrations:
            migrate(engine)
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> ComplianceLog:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- writing --------------------------------------------------------------------------

    def _lock(self, conn: Connection) -> None:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": APPEND_LOCK})

    def append_audit(self, records: Iterable[AuditRecord]) -> AppendResult:
        """Append records in order; ones already in the log (by ``record_id``) are skipped."""
        with self.engine.begin() as conn:
            self._lock(conn)
            return self._append(conn, records)

    @contextmanager
    def recorded_change(self) -> Iterator[RecordedChange]:
        """One transaction holding the append lock: change a table with `.conn`, and append
        the records that vouch for the change with `.append`; both commit, or neither."""
        with self.engine.begin() as conn:
            self._lock(conn)
            yield RecordedChange(conn, lambda records: self._append(conn, records))

    def _append(self, conn: Connection, records: Iterable[AuditRecord]) -> AppendResult:
        """``append_audit`` inside a transaction that holds the append lock (``_lock``), so a
        table change and the record that vouches for it commit together."""
        unique: dict[str, AuditRecord] = {}
        given = 0
        for record in records:
            given += 1
            unique.setdefault(record.record_id, record)
        for found in _existing(conn, AUDIT.c.record_id, list(unique)):
            del unique[found]
        next_index = self._size(conn)
        if not unique:
            return AppendResult(0, given, next_index)
        chains = list({chain_of(r) for r in unique.values()})
        heads: dict[str, tuple[int, str]] = {
            chain_id: (seq, hash_)
            for chain_id, seq, hash_ in _rows_where_in(
                conn,
                select(HEADS.c.chain_id, HEADS.c.chain_seq, HEADS.c.hash),
                HEADS.c.chain_id,
                chains,
            )
        }
        # The rows are built while they are copied (PostgreSQL inserts one batch while
        # the next is hashed); ``heads`` ends at each chain's last record.
        self._insert_audit_rows(
            conn, _audit_rows(unique.values(), next_index, heads, utc(self._now()))
        )
        insert = _insert(conn)(HEADS)
        conn.execute(
            insert.on_conflict_do_update(
                index_elements=[HEADS.c.chain_id],
                set_={"chain_seq": insert.excluded.chain_seq, "hash": insert.excluded.hash},
            ),
            [{"chain_id": c, "chain_seq": heads[c][0], "hash": heads[c][1]} for c in chains],
        )
        # A withdrawal is a lifecycle step: the row closes with its record, in this transaction.
        withdrawn = [r.subject_id for r in unique.values() if r.kind == _WITHDRAWN]
        closed = _close_withdrawn(conn, withdrawn) if withdrawn else 0
        return AppendResult(len(unique), given - len(unique), next_index + len(unique), closed)

    def _insert_audit_rows(self, conn: Connection, rows: Iterable[tuple[Any, ...]]) -> None:
        if conn.dialect.name != "postgresql":
            conn.execute(
                AUDIT.insert(), [dict(zip(_AUDIT_COLUMNS, row, strict=True)) for row in rows]
            )
            return
        raw = conn.connection.driver_connection
        assert raw is not None
        with (
            raw.cursor() as cursor,
            cursor.copy(
                f"COPY audit_records ({', '.join(_AUDIT_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
            ) as copy,
        ):
            copy.set_types(_AUDIT_PG_TYPES)
            write = copy.write_row
            for row in rows:
                write(row)

    def save_alerts(self, alerts: Iterable[Alert]) -> int:
        """Insert alerts not yet stored (by ``alert_id``); returns how many were new.

        A re-delivered alert never resets its lifecycle (status, acknowledgement)."""
        now = utc(self._now())
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
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                json_rows = orjson.dumps(rows, option=orjson.OPT_UTC_Z).decode()
                found = conn.execute(_INSERT_ALERTS_JSON, {"rows": json_rows}).all()
                inserted = [row.alert_id for row in found]
            else:
                for start in range(0, len(rows), _CHUNK):
                    stmt = _insert(conn)(ALERTS).on_conflict_do_nothing(
                        index_elements=[ALERTS.c.alert_id]
                    )
                    result = conn.execute(
                        stmt.returning(ALERTS.c.alert_id), rows[start : start + _CHUNK]
                    )
                    inserted += [row.alert_id for row in result]
            # Withdrawn before its row was stored (the audit sink and `replay --db` append
            # the records first): it is stored closed, as its chained record says.
            by_record = {stable_id(AuditKind.ALERT_WITHDRAWN, a): a for a in inserted}
            withdrawn = list(_existing(conn, AUDIT.c.record_id, list(by_record)))
            if withdrawn:
                _close_withdrawn(conn, [by_record[record_id] for record_id in withdrawn])
        return len(inserted)

    def withdraw_alerts(self, withdrawals: Iterable[Withdrawal]) -> int:
        """Close the engine's withdrawn alerts: open or acknowledged -> withdrawn, each with
        its chained ``alert.withdrawn`` record (the reason and the contradicting events), in
        one transaction; never a delete. Idempotent; returns how many rows were closed.

        ``append_audit`` does the same for ``alert.withdrawn`` records it is given (a path
        that only carries audit records, e.g. the audit topic, applies withdrawals too); a
        resolved alert stays resolved (its record is still chained)."""
        with self.engine.begin() as conn:
            self._lock(conn)
            return self._append(conn, [alert_withdrawn(w) for w in withdrawals]).withdrawn

    def acknowledge_alert(
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
        when = utc(at or self._now())
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

    def resolve_alert(
        self,
        alert_id: str,
        by: str,
        at: datetime | None = None,
        *,
        detail: Mapping[str, object] | None = None,
    ) -> AlertRow | None:
        """open/acknowledged -> resolved (idempotent), with its chained ``alert.resolved``."""
        when = utc(at or self._now())
        return self._transition(
            alert_id,
            AuditKind.ALERT_RESOLVED,
            {AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED},
            {"status": AlertStatus.RESOLVED.value, "resolved_by": by, "resolved_at": when},
            {**(detail or {}), "by": by},
            when,
        )

    def shelve_alert(
        self, alert_id: str, by: str, until: datetime, reason: str, at: datetime | None = None
    ) -> AlertRow | None:
        """open/acknowledged -> shelved until `until`, with its chained ``alert.shelved``
        record (by, until, reason). Whether the alert may be shelved (not critical, a bounded
        time) is the alerting service's to decide."""
        when, until = utc(at or self._now()), utc(until)
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
        if it was), each with its chained ``alert.unshelved`` record; returns them."""
        now = utc(now)
        with self.engine.connect() as conn:
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
            )
            if row is not None and row.status == back.value:
                out.append(row)
        return out

    def inhibited_alerts(self, alert_id: str) -> list[AlertRow]:
        """The alerts this one inhibits (same reading, lower priority), oldest first."""
        query = select(AlertRow).where(ALERTS.c.inhibited_by == alert_id)
        with Session(self.engine) as session:
            return list(session.execute(query.order_by(ALERTS.c.alert_id)).scalars())

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
    ) -> AlertRow | None:
        """One lifecycle step, with its record (id from the kind and alert, and `occasion`
        for steps an alert can take more than once, e.g. each shelf)."""
        with self.engine.begin() as conn:
            self._lock(conn)
            changed = conn.execute(
                update(ALERTS)
                .where(ALERTS.c.alert_id == alert_id, ALERTS.c.status.in_([s.value for s in from_]))
                .values(**values)
                .returning(ALERTS.c.session_id, ALERTS.c.clinic_id)
            ).first()
            if changed is not None:
                self._append(
                    conn,
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
                    ],
                )
        return self.get_alert(alert_id)

    def refresh_sessions(
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
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
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
                # The session.opened event itself (stored by the writers for the forms) names
                # the patient and protocol when the audit record's detail does not.
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
                alerts: dict[str, list[tuple[str, str]]] = {}
                for sid, rule, severity in conn.execute(
                    select(ALERTS.c.session_id, ALERTS.c.rule, ALERTS.c.severity).where(
                        ALERTS.c.session_id.in_(chunk)
                    )
                ):
                    alerts.setdefault(sid, []).append((rule, severity))
                rows = []
                for sid in chunk:
                    st = stats.get(sid)
                    if st is None:
                        continue
                    s = st
                    kinds = s["kinds"]
                    found = alerts.get(sid, [])
                    rows.append(
                        {
                            "session_id": sid,
                            "clinic_id": s["clinic_id"] or "",
                            "patient_ref": patient_refs.get(sid) or s.get("patient_ref"),
                            "protocol": protocols.get(sid) or s.get("protocol"),
                            "opened_at": kinds.get(AuditKind.SESSION_OPENED, (None,))[0],
                            "first_dose_at": kinds.get(AuditKind.SESSION_DOSED, (None,))[0],
                            "discharged_at": kinds.get(AuditKind.SESSION_DISCHARGED, (None,))[0],
                            "last_event_at": s["last"],
                            "events_accepted": kinds.get(AuditKind.EVENT_ACCEPTED, (None, 0))[1],
                            "alerts_total": len(found),
                            "alerts_critical": sum(1 for _, sev in found if sev == "critical"),
                            "alerts_warning": sum(1 for _, sev in found if sev == "warning"),
                            "rules": orjson.dumps(sorted({r for r, _ in found})).decode(),
                            "updated_at": now,
                        }
                    )
                if not rows:
                    continue
                insert = _insert(conn)(SUMMARIES)
                keep = ("patient_ref", "protocol")
                conn.execute(
                    insert.on_conflict_do_update(
                        index_elements=[SUMMARIES.c.session_id],
                        set_={
                            c: (
                                func.coalesce(SUMMARIES.c[c], insert.excluded[c])
                                if c in keep
                                else insert.excluded[c]
                            )
                            for c in rows[0]
                            if c != "session_id"
                        },
                    ),
                    rows,
                )
                forms = [
                    {
                        "session_id": r["session_id"],
                        "clinic_id": r["clinic_id"],
                        "due_at": None
                        if r["discharged_at"] is None
                        else r["discharged_at"] + FORM_DEADLINE,
                    }
                    for r in rows
                ]
                finsert = _insert(conn)(FORMS)
                conn.execute(
                    finsert.on_conflict_do_update(
                        index_elements=[FORMS.c.session_id],
                        set_={"due_at": finsert.excluded.due_at},
                    ),
                    forms,
                )
                done += len(rows)
        return done

    def save_events(self, events: Iterable[Event]) -> int:
        """Store accepted events in wire form (first write of a (session, event id) wins);
        returns how many were new. The new rows' ``event.stored`` records (their content
        digests, ``events.py``) are appended in the same transaction."""
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
        with self.engine.begin() as conn:
            self._lock(conn)  # before the insert: a concurrent writer of the same rows waits
            for start in range(0, len(stored), _CHUNK):
                stmt = _insert(conn)(EVENTS).on_conflict_do_nothing(
                    index_elements=[EVENTS.c.session_id, EVENTS.c.event_id]
                )
                result = conn.execute(
                    stmt.returning(EVENTS.c.session_id, EVENTS.c.event_id),
                    [
                        {
                            "session_id": row.session_id,
                            "event_id": row.event_id,
                            "clinic_id": row.clinic_id,
                            "type": types[(row.session_id, row.event_id)],
                            "occurred_at": row.occurred_at,
                            "payload": row.payload,
                        }
                        for row in stored[start : start + _CHUNK]
                    ],
                )
                new.update((sid, eid) for sid, eid in result)
            if new:
                self._append(
                    conn, content_records(r for r in stored if (r.session_id, r.event_id) in new)
                )
        return len(new)

    def chain_unvouched_rows(self, conn: Connection) -> int:
        """Append the records that vouch for ``session_events`` and ``api_principals`` rows
        stored before the log chained them (migration 0005); returns how many were added.
        Rows are vouched for as they are now: the chain protects them from here on."""
        self._lock(conn)
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
        created = set(
            conn.execute(
                select(AUDIT.c.subject_id).where(AUDIT.c.kind == AuditKind.PRINCIPAL_CREATED)
            ).scalars()
        )
        principals = [
            principal_created(
                ApiPrincipal(
                    principal_id=r.principal_id,
                    name=r.name,
                    token_hash=r.token_hash,
                    role=r.role,
                    clinics=r.clinics,
                    created_at=utc(r.created_at),
                )
            )
            for r in conn.execute(
                select(
                    PRINCIPALS.c.principal_id,
                    PRINCIPALS.c.name,
                    PRINCIPALS.c.token_hash,
                    PRINCIPALS.c.role,
                    PRINCIPALS.c.clinics,
                    PRINCIPALS.c.created_at,
                ).order_by(PRINCIPALS.c.created_at, PRINCIPALS.c.principal_id)
            )
            if r.principal_id not in created
        ]
        return self._append(conn, [*content_records(events), *principals]).inserted

    def session_events(self, session_id: str) -> list[SessionEventRow]:
        """The session's stored events that the log records as accepted and whose content
        the chain vouches for (``vouched_session_events``), in event-time order."""
        return self.vouched_session_events(session_id).events

    def vouched_session_events(self, session_id: str) -> VouchedEvents:
        """The session's stored events, split: those recorded as accepted whose payload
        hashes to the digest in an ``event.stored`` record whose own hash checks out, in
        event-time order (then event id); and the ids of stored rows that fail that check
        (edited, or written around the log)."""
        accepted = select(AUDIT.c.subject_id).where(
            AUDIT.c.session_id == session_id, AUDIT.c.kind == AuditKind.EVENT_ACCEPTED.value
        )
        with Session(self.engine) as s:
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

    def sessions_since(self, log_index: int, limit: int = 10_000) -> tuple[list[str], int]:
        """Sessions with records at ``log_index`` or later (up to ``limit`` records read);
        returns them and the index to continue from. For processes that keep summaries
        following the log (embedded mode writes records but no summaries)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(AUDIT.c.log_index, AUDIT.c.session_id)
                .where(AUDIT.c.log_index >= log_index)
                .order_by(AUDIT.c.log_index)
                .limit(limit)
            ).all()
        if not rows:
            return [], log_index
        return sorted({sid for _, sid in rows if sid is not None}), rows[-1][0] + 1

    # -- monitoring forms -----------------------------------------------------------------

    def get_form(self, session_id: str) -> MonitoringForm | None:
        with Session(self.engine) as s:
            return s.get(MonitoringForm, session_id)

    def submit_form(
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
        when = utc(at or self._now())
        body = None if payload is None else orjson.dumps(payload).decode()
        with self.engine.begin() as conn:
            self._lock(conn)
            changed = conn.execute(
                update(FORMS)
                .where(FORMS.c.session_id == session_id, FORMS.c.submitted_at.is_(None))
                .values(submitted_at=when, submitted_by=by, payload=body)
                .returning(FORMS.c.clinic_id)
            ).first()
            if changed is not None:
                self._append(
                    conn, [form_submitted(session_id, changed.clinic_id, by, when, body, detail)]
                )
        return self.get_form(session_id)

    def overdue_forms(
        self, now: datetime, *, clinics: frozenset[str] | None = None
    ) -> list[MonitoringForm]:
        """Forms past due, not submitted, and not yet flagged (``mark_form_overdue``)."""
        with Session(self.engine) as s:
            stmt = select(MonitoringForm).where(
                FORMS.c.due_at < utc(now),
                FORMS.c.submitted_at.is_(None),
                FORMS.c.overdue_alert_id.is_(None),
            )
            if clinics is not None:
                stmt = stmt.where(FORMS.c.clinic_id.in_(sorted(clinics)))
            return list(s.scalars(stmt.order_by(FORMS.c.due_at, FORMS.c.session_id)))

    def forms_overdue_by_clinic(self, now: datetime) -> dict[str, int]:
        """Per clinic with monitoring forms: how many are past due and not submitted (flagged
        or not); 0 for a clinic whose forms are all in time."""
        overdue = case((FORMS.c.submitted_at.is_(None) & (FORMS.c.due_at < utc(now)), 1), else_=0)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(FORMS.c.clinic_id, func.sum(overdue)).group_by(FORMS.c.clinic_id)
            ).all()
        return {clinic: int(count or 0) for clinic, count in rows}

    def mark_form_overdue(self, session_id: str, alert_id: str) -> bool:
        """Record that MONITORING_FORM_OVERDUE was raised (once: False if already marked)."""
        with self.engine.begin() as conn:
            result = conn.execute(
                update(FORMS)
                .where(FORMS.c.session_id == session_id, FORMS.c.overdue_alert_id.is_(None))
                .values(overdue_alert_id=alert_id)
            )
            return bool(result.rowcount)

    # -- principals -----------------------------------------------------------------------

    def create_principal(
        self, name: str, role: PrincipalRole, clinics: Sequence[str] = ()
    ) -> tuple[ApiPrincipal, str]:
        """Create a principal; returns it and its token (shown once; only a hash is kept).

        Its chained ``principal.created`` record (name, role, clinics, the token's hash)
        commits with the row, so ``audit verify`` catches a row added or altered around it."""
        token = "rg_" + secrets.token_urlsafe(32)
        principal = ApiPrincipal(
            principal_id=uuid.uuid4().hex,
            name=name,
            token_hash=hash_token(token),
            role=PrincipalRole(role).value,
            clinics=orjson.dumps(sorted(set(clinics))).decode(),
            created_at=utc(self._now()),
        )
        with self.engine.begin() as conn:
            self._lock(conn)
            conn.execute(PRINCIPALS.insert(), [principal.model_dump()])
            self._append(conn, [principal_created(principal)])
        return principal, token

    def principal_for_token(self, token: str) -> ApiPrincipal | None:
        with Session(self.engine) as s:
            found = s.scalars(
                select(ApiPrincipal).where(
                    PRINCIPALS.c.token_hash == hash_token(token),
                    PRINCIPALS.c.revoked_at.is_(None),
                )
            ).first()
            return found

    # -- reading --------------------------------------------------------------------------

    def size(self) -> int:
        with self.engine.connect() as conn:
            return self._size(conn)

    @staticmethod
    def _size(conn: Connection) -> int:
        return int(
            conn.execute(select(func.coalesce(func.max(AUDIT.c.log_index) + 1, 0))).scalar_one()
        )

    def get_record(self, record_id: str) -> AuditRow | None:
        with Session(self.engine) as s:
            return s.scalars(select(AuditRow).where(AUDIT.c.record_id == record_id)).first()

    def alert_statuses(self, alert_ids: Sequence[str]) -> dict[str, str]:
        """The status of each of these alerts that exists."""
        out: dict[str, str] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(alert_ids), _CHUNK):
                chunk = list(alert_ids[start : start + _CHUNK])
                for alert_id, status in conn.execute(
                    select(ALERTS.c.alert_id, ALERTS.c.status).where(ALERTS.c.alert_id.in_(chunk))
                ):
                    out[alert_id] = status
        return out

    def open_alert_counts(self) -> dict[tuple[str, str], int]:
        """Open alerts by (clinic, severity), whoever changed their status."""
        query = (
            select(ALERTS.c.clinic_id, ALERTS.c.severity, func.count())
            .where(ALERTS.c.status == AlertStatus.OPEN.value)
            .group_by(ALERTS.c.clinic_id, ALERTS.c.severity)
        )
        with self.engine.connect() as conn:
            return {(clinic, severity): n for clinic, severity, n in conn.execute(query)}

    def get_alert(self, alert_id: str) -> AlertRow | None:
        with Session(self.engine) as s:
            return s.get(AlertRow, alert_id)

    def session_summary(self, session_id: str) -> SessionSummary | None:
        with Session(self.engine) as s:
            return s.get(SessionSummary, session_id)

    def session_summaries(
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
        with Session(self.engine) as s:
            return list(s.scalars(stmt.order_by(c.opened_at, c.session_id)))

    def audit_records(self, q: AuditQuery) -> Page[AuditRow]:
        c = AUDIT.c
        where = _scoped(c, q, (c.kind, q.kind))
        return self._page(AuditRow, c.event_time, c.log_index, int, where, q)

    def alerts(self, q: AlertQuery) -> Page[AlertRow]:
        c = ALERTS.c
        where = _scoped(c, q, (c.status, q.status))
        return self._page(AlertRow, c.triggered_at, c.alert_id, str, where, q)

    def _page(
        self,
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
        with Session(self.engine) as s:
            rows = list(s.scalars(stmt))
        more = len(rows) > limit
        rows = rows[:limit]
        cursor = None
        if more:
            last = rows[-1]
            cursor = _encode_cursor(getattr(last, time_col.key), getattr(last, tie_col.key))
        return Page(rows, cursor)

    def session_timeline(self, session_id: str) -> tuple[list[AuditRow], list[AlertRow]]:
        """Every audit record and alert of a session, each in event-time order (the API
        merges them; records and alerts share the ``event_time``/``triggered_at`` clock)."""
        records: list[AuditRow] = []
        cursor: str | None = None
        while True:
            page = self.audit_records(
                AuditQuery(session_id=session_id, cursor=cursor, limit=MAX_LIMIT)
            )
            records.extend(page.items)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        alerts: list[AlertRow] = []
        cursor = None
        while True:
            apage = self.alerts(AlertQuery(session_id=session_id, cursor=cursor, limit=MAX_LIMIT))
            alerts.extend(apage.items)
            if apage.next_cursor is None:
                break
            cursor = apage.next_cursor
        return records, alerts

    # -- tamper evidence ------------------------------------------------------------------

    def latest_head(self) -> TreeHead | None:
        with Session(self.engine) as s:
            return s.scalars(
                select(TreeHead).order_by(TREE_HEADS.c.tree_size.desc()).limit(1)
            ).first()

    def head(self, tree_size: int) -> TreeHead | None:
        with Session(self.engine) as s:
            return s.get(TreeHead, tree_size)

    def heads(self) -> list[TreeHead]:
        with Session(self.engine) as s:
            return list(s.scalars(select(TreeHead).order_by(TREE_HEADS.c.tree_size)))

    def sign_head(self, signer: HeadSigner) -> TreeHead:
        """Sign a head over every record now in the log (returns the latest if nothing new).

        Only the records since the previous head are read: its stored frontier resumes the
        tree, and the interior nodes completed on the way are cached for proofs."""
        with self.engine.begin() as conn:
            self._lock(conn)
            size = self._size(conn)
            last = conn.execute(
                select(TREE_HEADS).order_by(TREE_HEADS.c.tree_size.desc()).limit(1)
            ).first()
            if last is not None and last.tree_size == size:
                return TreeHead.model_validate(last._asdict())
            acc = (
                merkle.CompactRange(
                    last.tree_size, [bytes.fromhex(h) for h in orjson.loads(last.frontier)]
                )
                if last is not None
                else merkle.CompactRange()
            )
            nodes: list[dict[str, Any]] = []
            result = conn.execute(
                select(AUDIT.c.hash)
                .where(AUDIT.c.log_index >= acc.size, AUDIT.c.log_index < size)
                .order_by(AUDIT.c.log_index)
                .execution_options(yield_per=20_000)
            )
            for (hash_,) in result:
                for level, index, node in acc.append(merkle.leaf_hash(bytes.fromhex(hash_))):
                    if level >= NODE_LEVEL:
                        nodes.append({"level": level, "index": index, "hash": node})
            if acc.size != size:
                raise RuntimeError(f"log_index is not gapless: {acc.size} records below {size}")
            if nodes:
                conn.execute(
                    _insert(conn)(NODES).on_conflict_do_nothing(
                        index_elements=[NODES.c.level, NODES.c.index]
                    ),
                    nodes,
                )
            root = acc.root().hex()
            signed_at = utc(self._now())
            head = {
                "tree_size": size,
                "root_hash": root,
                "signed_at": signed_at,
                "key_id": signer.key_id,
                "signature": signer.sign(size, root, signed_at),
                "frontier": orjson.dumps([h.hex() for h in acc.stack]).decode(),
            }
            conn.execute(TREE_HEADS.insert(), [head])
        return TreeHead.model_validate(head)

    def _subtree(self, conn: Connection) -> merkle.Subtree:
        def leaves(lo: int, hi: int) -> list[bytes]:
            got = [
                merkle.leaf_hash(bytes.fromhex(h))
                for (h,) in conn.execute(
                    select(AUDIT.c.hash)
                    .where(AUDIT.c.log_index >= lo, AUDIT.c.log_index < hi)
                    .order_by(AUDIT.c.log_index)
                )
            ]
            if len(got) != hi - lo:
                raise RuntimeError(f"records missing in [{lo}, {hi})")
            return got

        def subtree(lo: int, hi: int) -> bytes:
            n = hi - lo
            if n <= 1 << NODE_LEVEL:
                return merkle.root_of(leaves(lo, hi))
            if n & (n - 1) == 0:
                level = n.bit_length() - 1
                cached = conn.execute(
                    select(NODES.c.hash).where(NODES.c.level == level, NODES.c.index == lo >> level)
                ).scalar()
                if cached is not None:
                    return bytes(cached)
            k = 1 << ((n - 1).bit_length() - 1)
            return merkle.node_hash(subtree(lo, lo + k), subtree(lo + k, hi))

        return subtree

    def inclusion_proof(
        self, record_id: str, tree_size: int | None = None
    ) -> InclusionProof | None:
        """Proof that the record is in the tree of the given signed head (default: latest).

        None if the record is unknown or not yet covered by that head."""
        row = self.get_record(record_id)
        head = self.latest_head() if tree_size is None else self.head(tree_size)
        if row is None or head is None or row.log_index >= head.tree_size:
            return None
        with self.engine.connect() as conn:
            path = merkle.inclusion_proof(row.log_index, head.tree_size, self._subtree(conn))
        return InclusionProof(
            entry=row_entry(row),
            record_hash=row.hash,
            leaf_index=row.log_index,
            tree_size=head.tree_size,
            path=[p.hex() for p in path],
            head=head,
        )

    def consistency_proof(self, old_size: int, new_size: int) -> list[str]:
        with self.engine.connect() as conn:
            return [
                p.hex() for p in merkle.consistency_proof(old_size, new_size, self._subtree(conn))
            ]


# The audit_records columns in the order ``_audit_rows`` builds them, with their PostgreSQL
# types for the binary COPY.
_AUDIT_COPY: Final = (
    ("log_index", "int8"),
    ("record_id", "varchar"),
    ("chain_id", "varchar"),
    ("chain_seq", "int8"),
    ("prev_hash", "varchar"),
    ("hash", "varchar"),
    ("kind", "varchar"),
    ("subject_id", "text"),
    ("session_id", "varchar"),
    ("clinic_id", "varchar"),
    ("occurred_at", "timestamptz"),
    ("detail", "text"),
    ("appended_at", "timestamptz"),
    ("event_time", "timestamptz"),
    ("rule", "varchar"),
    ("severity", "varchar"),
)
_AUDIT_COLUMNS: Final = tuple(name for name, _ in _AUDIT_COPY)
_AUDIT_PG_TYPES: Final = [pg_type for _, pg_type in _AUDIT_COPY]
assert set(_AUDIT_COLUMNS) == {c.name for c in AUDIT.columns}


def _audit_rows(
    records: Iterable[AuditRecord],
    next_index: int,
    heads: dict[str, tuple[int, str]],
    appended_at: datetime,
) -> Iterator[tuple[Any, ...]]:
    """The stored rows of new records from ``next_index`` on, chained onto ``heads`` (which
    this advances), in ``_AUDIT_COLUMNS`` order. Each record is serialised once
    (``stored_form``) and its canonical entry hashed once."""
    alert_raised = AuditKind.ALERT_RAISED
    for log_index, record in enumerate(records, next_index):
        record_json, detail_text, detail, occurred = stored_form(record)
        chain_id = chain_of(record)
        seq, prev = heads.get(chain_id, (-1, GENESIS))
        seq += 1
        hash_ = entry_hash(
            entry_of(
                log_index=log_index,
                chain_id=chain_id,
                chain_seq=seq,
                prev_hash=prev,
                appended_at=appended_at,
                record_json=record_json,
            )
        )
        heads[chain_id] = (seq, hash_)
        if record.kind == alert_raised:
            rule, severity = _str_or_none(detail.get("rule")), _str_or_none(detail.get("severity"))
        else:
            rule = severity = None
        yield (
            log_index,
            record.record_id,
            chain_id,
            seq,
            prev,
            hash_,
            str(record.kind),
            record.subject_id,
            record.session_id,
            record.clinic_id,
            occurred,
            detail_text,
            appended_at,
            occurred or appended_at,
            rule,
            severity,
        )


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
_INSERT_ALERTS_JSON: Final = text(
    f"INSERT INTO alerts ({', '.join(_ALERT_COLUMNS)}) "
    f"SELECT {', '.join(_ALERT_COLUMNS)} FROM json_populate_recordset(NULL::alerts, :rows) "
    "ON CONFLICT (alert_id) DO NOTHING RETURNING alert_id"
)


_WITHDRAWN: Final = AuditKind.ALERT_WITHDRAWN


def _by_alert_id(alert: Alert) -> str:
    return alert.alert_id


def _close_withdrawn(conn: Connection, alert_ids: list[str]) -> int:
    """open/acknowledged -> withdrawn for these alerts; a resolved one stays resolved."""
    closed = 0
    for start in range(0, len(alert_ids), _CHUNK):
        result = conn.execute(
            update(ALERTS)
            .where(
                ALERTS.c.alert_id.in_(alert_ids[start : start + _CHUNK]),
                ALERTS.c.status.in_([AlertStatus.OPEN.value, AlertStatus.ACKNOWLEDGED.value]),
            )
            .values(status=AlertStatus.WITHDRAWN.value)
        )
        closed += result.rowcount
    return closed


def _rows_where_in(
    conn: Connection, stmt: Select[Any], column: Any, values: list[str]
) -> Iterator[Any]:
    """``stmt`` filtered to ``column`` in ``values``: on PostgreSQL one JSON array parameter
    (a statement with thousands of placeholders, or an array parameter, costs more to build in
    Python than to run), on SQLite chunks of ``IN`` lists."""
    if not values:
        return
    if conn.dialect.name == "postgresql":
        given = text("(ARRAY(SELECT json_array_elements_text(CAST(:values AS json))))")
        yield from conn.execute(
            stmt.where(column == any_(given.bindparams(values=orjson.dumps(values).decode())))
        )
        return
    for start in range(0, len(values), _CHUNK):
        yield from conn.execute(stmt.where(column.in_(values[start : start + _CHUNK])))


def _existing(conn: Connection, column: Any, values: list[str]) -> Iterator[str]:
    """Which of ``values`` are already stored in ``column``."""
    for (found,) in _rows_where_in(conn, select(column), column, values):
        yield found


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


def principal_created(principal: ApiPrincipal) -> AuditRecord:
    """The chained record of a new principal (what verify holds the principal row to)."""
    return AuditRecord(
        record_id=stable_id(AuditKind.PRINCIPAL_CREATED, principal.principal_id),
        kind=AuditKind.PRINCIPAL_CREATED,
        subject_id=principal.principal_id,
        session_id=None,
        clinic_id=None,
        occurred_at=utc(principal.created_at),
        detail={
            "principal_id": principal.principal_id,
            "name": principal.name,
            "role": principal.role,
            "clinics": orjson.loads(principal.clinics),
            "token_sha256": principal.token_hash,
            "expires_at": utc_text(principal.expires_at),
        },
    )


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


__all__ += ["CursorError", "hash_token", "head_json"]
_ = field
