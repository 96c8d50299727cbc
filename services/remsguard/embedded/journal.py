"""The event journal: every accepted device event, durable before the HTTP response.

Why stdlib `sqlite3` and not the compliance log's sqlmodel/SQLAlchemy stack:
- The journal is the write-ahead record that the ingest path waits on, so it must be as short
  as possible: one `executemany` of raw bytes and one COMMIT per group of requests. An ORM
  session adds object construction and flush bookkeeping per row on that path and buys
  nothing (there is one table, no relations, no migrations to share with PostgreSQL).
- Durability must be explicit and visible: `journal_mode=WAL` with `synchronous=FULL` makes
  SQLite fsync the WAL on every COMMIT, so when `append` returns, the rows survive a crash
  or power loss. Those are per-connection PRAGMAs; owning the connection here makes sure
  nothing (a pool, a reconnect) silently drops them.
- It never leaves one machine: embedded mode's journal is a local file, not a shared
  database, so SQLite's single-writer model is exactly what is wanted.

The journal keeps the raw event bytes as received (re-decoded on recovery, so recovery goes
through the same contract code as live ingest), the engine clock just before the event was
applied (so recovery re-applies each event at the same clock, and deadline decisions come out
the same), and the arrival order (`seq`). Contract rejections are journaled as well, so the
compliance log's record of rejected input is as durable as the accepted events. So are the
records the service appends of its own accord (`service_records`: an auditor query's access
record), journaled with the next group instead of waiting for the compliance log's writer.

One writer: the runtime's ingest task calls `append` on the event loop (the commit's fsync
releases the GIL; a hop to a worker thread cost more than the append itself, see
`EmbeddedRuntime._ingest`) and journals eviction calls from a worker thread, one call at a
time; the connection is opened with `check_same_thread=False` for that reason.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final, cast

from remsguard.domain.decisions import AuditKind, AuditRecord

__all__ = [
    "Checkpoint",
    "EventJournal",
    "JournaledEvent",
    "JournaledEviction",
    "JournaledRecord",
    "JournaledRejection",
]

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS events (
    seq         INTEGER PRIMARY KEY,
    session_id  TEXT    NOT NULL,
    event_id    TEXT    NOT NULL,
    clock_us    INTEGER,
    received_us INTEGER NOT NULL,
    raw         BLOB    NOT NULL,
    UNIQUE (session_id, event_id)
);
CREATE TABLE IF NOT EXISTS rejections (
    seq         INTEGER PRIMARY KEY,
    source      TEXT    NOT NULL UNIQUE,
    reason      TEXT    NOT NULL,
    detail      TEXT    NOT NULL,
    event_id    TEXT,
    session_id  TEXT,
    clinic_id   TEXT,
    clock_us    INTEGER,
    received_us INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS service_records (
    seq         INTEGER PRIMARY KEY,
    record_id   TEXT    NOT NULL UNIQUE,
    kind        TEXT    NOT NULL,
    subject_id  TEXT    NOT NULL,
    session_id  TEXT,
    clinic_id   TEXT,
    occurred_us INTEGER,
    detail      TEXT    NOT NULL  -- JSON
);
CREATE TABLE IF NOT EXISTS quarantine (
    seq         INTEGER PRIMARY KEY,  -- the events row that could not be applied
    reason      TEXT    NOT NULL,
    detail      TEXT    NOT NULL,
    at_us       INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS evictions (
    seq         INTEGER PRIMARY KEY,
    after_event INTEGER NOT NULL,  -- applied after this events row (0: before any)
    clock_us    INTEGER NOT NULL,  -- the engine clock it was called with
    retention_s REAL    NOT NULL,
    forget_s    REAL    NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


def to_us(value: datetime | None) -> int | None:
    """Microseconds since the epoch (exact, unlike a float timestamp)."""
    if value is None:
        return None
    delta = value.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(value: int | None) -> datetime | None:
    """The instant, or None when there is none or it is not a representable time (a journal
    written by hand or by a faulty version must not stop recovery)."""
    if value is None:
        return None
    seconds, micros = divmod(value, 1_000_000)
    try:
        return datetime.fromtimestamp(seconds, UTC).replace(microsecond=micros)
    except (OverflowError, OSError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Sequence numbers in the journal: the last event, rejection and service record row."""

    events: int = 0
    rejections: int = 0
    service_records: int = 0


@dataclass(frozen=True, slots=True)
class JournaledEvent:
    """One accepted event: `clock` is the engine clock just before it was applied."""

    session_id: str
    event_id: str
    clock: datetime | None
    raw: bytes
    seq: int = 0


@dataclass(frozen=True, slots=True)
class JournaledRejection:
    """One input that broke the contract; `source` is unique and stable (its audit id)."""

    source: str
    reason: str
    detail: str
    event_id: str | None
    session_id: str | None
    clinic_id: str | None
    clock: datetime | None


@dataclass(frozen=True, slots=True)
class JournaledRecord:
    """An audit record the service appends of its own accord (an auditor query's access
    record), journaled so that it is durable before the query is answered. `detail` is the
    record's detail as JSON, encoded by `of` before the record joins a group (one that
    cannot be encoded fails alone, not its group)."""

    record: AuditRecord
    detail: str

    @classmethod
    def of(cls, record: AuditRecord) -> JournaledRecord:
        """`ValueError` for a detail that is not JSON."""
        try:
            detail = json.dumps(record.detail, separators=(",", ":"), allow_nan=False)
        except TypeError as exc:
            raise ValueError(f"the record's detail is not JSON: {exc}") from None
        return cls(record, detail)


@dataclass(frozen=True, slots=True)
class JournaledEviction:
    """One `MonitoringEngine.evict_finished` call, made after the events row `after_event`:
    eviction changes engine state, so recovery repeats it at the same point in the journal
    (a session evicted live is evicted after a full replay too)."""

    after_event: int
    clock: datetime
    retention: timedelta
    forget_after: timedelta
    seq: int = 0


class EventJournal:
    """An append-only SQLite file; `append` returns once the rows are fsync'd."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        mode = self._db.execute("PRAGMA journal_mode").fetchone()[0]
        sync = self._db.execute("PRAGMA synchronous").fetchone()[0]
        if mode != "wal" or sync != 2:  # 2 = FULL
            raise RuntimeError(f"{path}: journal needs WAL + synchronous=FULL, got {mode}/{sync}")
        self._db.executescript(_SCHEMA)

    def append(
        self,
        events: Sequence[JournaledEvent],
        rejections: Sequence[JournaledRejection] = (),
        checkpoint: Checkpoint | None = None,
        records: Sequence[JournaledRecord] = (),
    ) -> Checkpoint:
        """Append in order, in one transaction; durable on return.

        An event whose session/event id is already journaled is skipped (that happens only
        for events the engine rejected before). `checkpoint`, if given, is stored in the same
        transaction (see `recorded_through`). Returns the last sequence numbers in the journal.
        """
        received = to_us(datetime.now(UTC))
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(
                    "INSERT OR IGNORE INTO events "
                    "(session_id, event_id, clock_us, received_us, raw) VALUES (?,?,?,?,?)",
                    [(e.session_id, e.event_id, to_us(e.clock), received, e.raw) for e in events],
                )
                db.executemany(
                    "INSERT OR IGNORE INTO rejections (source, reason, detail, event_id, "
                    "session_id, clinic_id, clock_us, received_us) VALUES (?,?,?,?,?,?,?,?)",
                    [
                        (
                            r.source,
                            r.reason,
                            r.detail,
                            r.event_id,
                            r.session_id,
                            r.clinic_id,
                            to_us(r.clock),
                            received,
                        )
                        for r in rejections
                    ],
                )
                db.executemany(
                    "INSERT OR IGNORE INTO service_records (record_id, kind, subject_id, "
                    "session_id, clinic_id, occurred_us, detail) VALUES (?,?,?,?,?,?,?)",
                    [
                        (
                            r.record.record_id,
                            r.record.kind,
                            r.record.subject_id,
                            r.record.session_id,
                            r.record.clinic_id,
                            to_us(r.record.occurred_at),
                            r.detail,
                        )
                        for r in records
                    ],
                )
                if checkpoint is not None:
                    self._store_checkpoint(checkpoint)
                last = self._last()
                db.execute("COMMIT")  # synchronous=FULL: the WAL is fsync'd here
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return last

    def _last(self) -> Checkpoint:
        events, rejections, records = self._db.execute(
            "SELECT (SELECT coalesce(max(seq), 0) FROM events), "
            "(SELECT coalesce(max(seq), 0) FROM rejections), "
            "(SELECT coalesce(max(seq), 0) FROM service_records)"
        ).fetchone()
        return Checkpoint(int(events), int(rejections), int(records))

    def _store_checkpoint(self, checkpoint: Checkpoint) -> None:
        self._db.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [
                ("recorded_events", checkpoint.events),
                ("recorded_rejections", checkpoint.rejections),
                ("recorded_service_records", checkpoint.service_records),
            ],
        )

    def last(self) -> Checkpoint:
        with self._lock:
            return self._last()

    def set_recorded_through(self, checkpoint: Checkpoint) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._store_checkpoint(checkpoint)
            self._db.execute("COMMIT")

    def recorded_through(self) -> Checkpoint:
        """How far the compliance log is known to be complete: every decision made up to and
        including applying these journal rows was written to it. Recovery re-records only
        what comes after (re-recording more would be harmless, only slower)."""
        with self._lock:
            rows = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        return Checkpoint(
            rows.get("recorded_events", 0),
            rows.get("recorded_rejections", 0),
            rows.get("recorded_service_records", 0),
        )

    def events(self, batch: int = 10_000, after: int = 0) -> Iterator[JournaledEvent]:
        """Every journaled event after `after` in arrival order, except the quarantined ones."""
        last = after
        while True:
            with self._lock:
                rows = self._db.execute(
                    "SELECT seq, session_id, event_id, clock_us, raw FROM events "
                    "WHERE seq > ? AND seq NOT IN (SELECT seq FROM quarantine) "
                    "ORDER BY seq LIMIT ?",
                    (last, batch),
                ).fetchall()
            if not rows:
                return
            for seq, session_id, event_id, clock_us, raw in rows:
                yield JournaledEvent(
                    str(session_id), str(event_id), _clock(clock_us), _bytes(raw), seq
                )
            last = rows[-1][0]

    def append_eviction(self, eviction: JournaledEviction) -> int:
        """Journal one eviction call (durable on return, like `append`); its sequence number."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO evictions (after_event, clock_us, retention_s, forget_s) "
                    "VALUES (?,?,?,?)",
                    (
                        eviction.after_event,
                        to_us(eviction.clock),
                        eviction.retention.total_seconds(),
                        eviction.forget_after.total_seconds(),
                    ),
                )
                seq = self._db.execute("SELECT max(seq) FROM evictions").fetchone()[0]
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return int(seq)

    def evictions(self, after: int = 0) -> list[JournaledEviction]:
        """The eviction calls journaled after the evictions row `after`, in order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, after_event, clock_us, retention_s, forget_s FROM evictions "
                "WHERE seq > ? ORDER BY seq",
                (after,),
            ).fetchall()
        found: list[JournaledEviction] = []
        for seq, after_event, clock_us, retention_s, forget_s in rows:
            clock = _clock(clock_us)
            if clock is not None:
                found.append(
                    JournaledEviction(
                        int(after_event),
                        clock,
                        timedelta(seconds=retention_s),
                        timedelta(seconds=forget_s),
                        int(seq),
                    )
                )
        return found

    def last_eviction(self) -> int:
        """The sequence number of the last journaled eviction call (0: none)."""
        with self._lock:
            row = self._db.execute("SELECT coalesce(max(seq), 0) FROM evictions").fetchone()
        return int(row[0])

    def latest_clock(self) -> datetime | None:
        """The latest clock any journaled row was taken at (where a simulated run stopped)."""
        with self._lock:
            row = self._db.execute(
                "SELECT max(m) FROM (SELECT max(clock_us) AS m FROM events "
                "UNION ALL SELECT max(clock_us) FROM rejections)"
            ).fetchone()
        return _clock(row[0])

    def raw_event(self, session_id: str, event_id: str) -> bytes | None:
        """The raw bytes journaled for an event id of a session (to compare a duplicate)."""
        with self._lock:
            row = self._db.execute(
                "SELECT raw FROM events WHERE session_id = ? AND event_id = ?",
                (session_id, event_id),
            ).fetchone()
        return None if row is None else _bytes(row[0])

    def quarantine(self, seq: int, reason: str, detail: str) -> None:
        """Set a journaled event aside: recovery skips it from now on (the row stays)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT OR IGNORE INTO quarantine (seq, reason, detail, at_us) VALUES (?,?,?,?)",
                (seq, reason, detail[:500], to_us(datetime.now(UTC))),
            )
            self._db.execute("COMMIT")

    def quarantine_event(self, session_id: str, event_id: str, reason: str, detail: str) -> None:
        """`quarantine` the journaled row of an event, found by its ids."""
        with self._lock:
            row = self._db.execute(
                "SELECT seq FROM events WHERE session_id = ? AND event_id = ?",
                (session_id, event_id),
            ).fetchone()
        if row is not None:
            self.quarantine(int(row[0]), reason, detail)

    def quarantined(self) -> list[tuple[int, str, str]]:
        """(seq, reason, detail) of every quarantined event, in journal order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, reason, detail FROM quarantine ORDER BY seq"
            ).fetchall()
        return [(int(seq), str(reason), str(detail)) for seq, reason, detail in rows]

    def rejections(self, after: int = 0) -> list[JournaledRejection]:
        with self._lock:
            rows = self._db.execute(
                "SELECT source, reason, detail, event_id, session_id, clinic_id, clock_us "
                "FROM rejections WHERE seq > ? ORDER BY seq",
                (after,),
            ).fetchall()
        return [
            JournaledRejection(source, reason, detail, eid, sid, cid, from_us(clock))
            for source, reason, detail, eid, sid, cid, clock in rows
        ]

    def service_records(self, after: int = 0) -> list[AuditRecord]:
        """The service records journaled after the row `after`, in order. A detail that is
        not a JSON object (a journal edited by hand) is kept as text: recovery never stops
        on one record."""
        with self._lock:
            rows = self._db.execute(
                "SELECT record_id, kind, subject_id, session_id, clinic_id, occurred_us, detail "
                "FROM service_records WHERE seq > ? ORDER BY seq",
                (after,),
            ).fetchall()
        return [
            AuditRecord(
                str(record_id),
                cast(AuditKind, kind),  # a service kind (`storage.chain.SERVICE_KINDS`)
                str(subject),
                _text(session),
                _text(clinic),
                _clock(at),
                _detail(str(detail)),
            )
            for record_id, kind, subject, session, clinic, at, detail in rows
        ]

    def count(self) -> int:
        """Journaled events, quarantined ones included."""
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM events").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _clock(value: object) -> datetime | None:
    return from_us(value) if isinstance(value, int) else None


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _detail(text: str) -> dict[str, object]:
    try:
        detail = json.loads(text)
    except ValueError:
        detail = None
    return detail if isinstance(detail, dict) else {"unreadable_detail": text[:500]}


def _bytes(value: object) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return str(value).encode("utf-8", "surrogatepass")  # a row written as TEXT by hand
