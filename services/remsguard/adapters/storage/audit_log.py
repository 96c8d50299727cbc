"""``AuditLog``: the hash-chained audit records, their signed Merkle tree heads and proofs.

Writers (``replay --db``, the audit sink, embedded mode) ``append`` records; the head signer
calls ``sign_head``; the auditor API reads records, heads and proofs. Every record gets the
next gapless ``log_index`` and extends its clinic's chain, so appends are serialised: on
PostgreSQL every transaction that appends takes the advisory lock (``lock``) before anything
else, on SQLite every transaction is ``BEGIN IMMEDIATE``. The other repositories change their
own table and append the record that vouches for it in one such transaction
(``recorded_change``, or ``lock`` + ``append_in`` inside theirs). The application never
updates or deletes an audit record; the database refuses it anyway.

One table change belongs to appending itself: an ``alert.withdrawn`` record closes its alert
row in the same transaction (``close_withdrawn``), whichever path carries the record.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import orjson
from sqlalchemy import Connection, Dialect, Engine, Row, bindparam, func, select, text, update
from sqlmodel import Session

from remsguard.adapters.storage.chain import (
    GENESIS,
    chain_of,
    entry_hash,
    entry_of,
    row_entry,
    stored_form,
)
from remsguard.adapters.storage.db import APPEND_LOCK, reader
from remsguard.adapters.storage.models import AlertStatus, AuditRow, TreeHead, utc
from remsguard.adapters.storage.queries import AuditQuery, Page, audit_page
from remsguard.adapters.storage.signing import HeadSigner
from remsguard.adapters.storage.tables import (
    ALERTS,
    AUDIT,
    CHUNK,
    HEADS,
    NODES,
    TREE_HEADS,
    dialect_insert,
    existing,
    insert_for,
    rows_where_in,
)
from remsguard.domain import merkle
from remsguard.domain.decisions import AuditKind, AuditRecord

__all__ = [
    "AppendResult",
    "AuditLog",
    "InclusionProof",
    "RecordedChange",
    "RecordsChanges",
    "close_withdrawn",
    "head_json",
]

NODE_LEVEL: Final = 8  # interior nodes of >= 256 leaves are cached in audit_merkle_nodes
_WITHDRAWN: Final = AuditKind.ALERT_WITHDRAWN


def _wall_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class AppendResult:
    inserted: int
    duplicates: int
    tree_size: int  # records in the log after this append
    withdrawn: int = 0  # alert rows closed by the `alert.withdrawn` records appended


@dataclass(frozen=True, slots=True)
class RecordedChange:
    """A table change and its chained records in one transaction (`recorded_change`)."""

    conn: Connection
    append: Callable[[Iterable[AuditRecord]], AppendResult]


class RecordsChanges(Protocol):
    """What a repository of a vouched-for table needs from the log (``PrincipalStore``,
    ``RegistryStore``): its engine, and one transaction for a change and its records."""

    @property
    def engine(self) -> Engine: ...

    @property
    def reader(self) -> Engine: ...

    def recorded_change(self) -> AbstractContextManager[RecordedChange]: ...


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


class AuditLog:
    """The audit chain over one database (PostgreSQL or SQLite); ``now`` stamps appends
    (``appended_at``) and signed heads, and is the clock the repositories built on it use."""

    def __init__(self, engine: Engine, *, now: Callable[[], datetime] = _wall_clock) -> None:
        self.engine = engine
        self.reader = reader(engine)  # reads only: never waits for a writer
        self._now = now

    def now(self) -> datetime:
        return utc(self._now())

    # -- appending ------------------------------------------------------------------------

    @staticmethod
    def lock(conn: Connection) -> None:
        """Take the append lock: first, in every transaction that appends records."""
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": APPEND_LOCK})

    def append(self, records: Iterable[AuditRecord]) -> AppendResult:
        """Append records in order; ones already in the log (by ``record_id``) are skipped."""
        with self.engine.begin() as conn:
            self.lock(conn)
            return self.append_in(conn, records)

    @contextmanager
    def recorded_change(self) -> Iterator[RecordedChange]:
        """One transaction holding the append lock: change a table with `.conn`, and append
        the records that vouch for the change with `.append`; both commit, or neither."""
        with self.engine.begin() as conn:
            self.lock(conn)
            yield RecordedChange(conn, lambda records: self.append_in(conn, records))

    def append_in(self, conn: Connection, records: Iterable[AuditRecord]) -> AppendResult:
        """``append`` inside a transaction that holds the append lock (``lock``), so a
        table change and the record that vouches for it commit together."""
        unique: dict[str, AuditRecord] = {}
        given = 0
        for record in records:
            given += 1
            unique.setdefault(record.record_id, record)
        for found in existing(conn, AUDIT.c.record_id, list(unique)):
            del unique[found]
        next_index = self.size_in(conn)
        if not unique:
            return AppendResult(0, given, next_index)
        chains = list({chain_of(r) for r in unique.values()})
        heads: dict[str, tuple[int, str]] = {
            chain_id: (seq, hash_)
            for chain_id, seq, hash_ in rows_where_in(conn, _HEADS, HEADS.c.chain_id, chains)
        }
        # The rows are built while they are copied (PostgreSQL inserts one batch while
        # the next is hashed); ``heads`` ends at each chain's last record.
        _insert_audit_rows(conn, _audit_rows(unique.values(), next_index, heads, self.now()))
        conn.execute(
            _move_heads(conn.dialect.name),
            [{"chain_id": c, "chain_seq": heads[c][0], "hash": heads[c][1]} for c in chains],
        )
        # A withdrawal is a lifecycle step: the row closes with its record, in this transaction.
        withdrawn = [r.subject_id for r in unique.values() if r.kind == _WITHDRAWN]
        closed = close_withdrawn(conn, withdrawn) if withdrawn else 0
        return AppendResult(len(unique), given - len(unique), next_index + len(unique), closed)

    # -- reading --------------------------------------------------------------------------

    def size(self) -> int:
        with self.reader.connect() as conn:
            return self.size_in(conn)

    @staticmethod
    def size_in(conn: Connection) -> int:
        return int(conn.execute(_SIZE).scalar_one())

    def record(self, record_id: str) -> AuditRow | None:
        with Session(self.reader) as s:
            return s.scalars(select(AuditRow).where(AUDIT.c.record_id == record_id)).first()

    def stored_ids(self, record_ids: Sequence[str]) -> set[str]:
        """Which of these records the log holds."""
        with self.reader.connect() as conn:
            return set(existing(conn, AUDIT.c.record_id, list(record_ids)))

    def records(self, q: AuditQuery) -> Page[AuditRow]:
        return audit_page(self.reader, q)

    # -- signed tree heads and proofs -----------------------------------------------------

    def latest_head(self) -> TreeHead | None:
        with Session(self.reader) as s:
            return s.scalars(
                select(TreeHead).order_by(TREE_HEADS.c.tree_size.desc()).limit(1)
            ).first()

    def head(self, tree_size: int) -> TreeHead | None:
        with Session(self.reader) as s:
            return s.get(TreeHead, tree_size)

    def heads(self) -> list[TreeHead]:
        with Session(self.reader) as s:
            return list(s.scalars(select(TreeHead).order_by(TREE_HEADS.c.tree_size)))

    def sign_head(self, signer: HeadSigner) -> TreeHead:
        """Sign a head over every record in the log when it is called (returns the latest if
        nothing is new).

        Only the records since the previous head are read: its stored frontier resumes the
        tree, and the interior nodes completed on the way are cached for proofs. They are
        read outside the writers' lock (records never change once appended), which is taken
        only to store the head: a burst of 100,000 records had held every writer, ingest's
        recorder and each auditor query's access record among them, for ~350 ms. If another
        head was stored meanwhile, it starts again from that one."""
        for _ in range(_SIGN_ATTEMPTS):
            with self.reader.connect() as conn, conn.begin():  # one snapshot of the log
                last = _latest_head(conn)
                size = self.size_in(conn)
                if last is not None and last.tree_size == size:
                    return TreeHead.model_validate(last._asdict())
                acc, nodes = _extend_tree(conn, last, size)
            with self.engine.begin() as conn:
                self.lock(conn)
                latest = _latest_head(conn)
                if _size_of(latest) != _size_of(last):
                    continue  # another signer stored a head meanwhile
                if nodes:
                    conn.execute(
                        insert_for(conn)(NODES).on_conflict_do_nothing(
                            index_elements=[NODES.c.level, NODES.c.index]
                        ),
                        nodes,
                    )
                root = acc.root().hex()
                signed_at = self.now()
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
        raise RuntimeError(f"no head stored: other signers stored one {_SIGN_ATTEMPTS} times")

    def inclusion_proof(
        self, record_id: str, tree_size: int | None = None
    ) -> InclusionProof | None:
        """Proof that the record is in the tree of the given signed head (default: latest).

        None if the record is unknown or not yet covered by that head."""
        row = self.record(record_id)
        head = self.latest_head() if tree_size is None else self.head(tree_size)
        if row is None or head is None or row.log_index >= head.tree_size:
            return None
        with self.reader.connect() as conn:
            path = merkle.inclusion_proof(row.log_index, head.tree_size, _subtree(conn))
        return InclusionProof(
            entry=row_entry(row),
            record_hash=row.hash,
            leaf_index=row.log_index,
            tree_size=head.tree_size,
            path=[p.hex() for p in path],
            head=head,
        )

    def consistency_proof(self, old_size: int, new_size: int) -> list[str]:
        with self.reader.connect() as conn:
            return [p.hex() for p in merkle.consistency_proof(old_size, new_size, _subtree(conn))]


_WITHDRAWABLE = [AlertStatus.OPEN.value, AlertStatus.ACKNOWLEDGED.value, AlertStatus.SHELVED.value]
# Built once (`tables.py` says why): every recorded step runs these.
_SIZE: Final = select(func.coalesce(func.max(AUDIT.c.log_index) + 1, 0))


_SIGN_ATTEMPTS: Final = 5


def _latest_head(conn: Connection) -> Row[Any] | None:
    return conn.execute(select(TREE_HEADS).order_by(TREE_HEADS.c.tree_size.desc()).limit(1)).first()


def _size_of(head: Row[Any] | None) -> int | None:
    return None if head is None else int(head.tree_size)


def _extend_tree(
    conn: Connection, last: Row[Any] | None, size: int
) -> tuple[merkle.CompactRange, list[dict[str, Any]]]:
    """The tree of the first `size` records, from `last`'s frontier, and the interior nodes
    completed on the way (to cache for proofs)."""
    acc = (
        merkle.CompactRange(last.tree_size, [bytes.fromhex(h) for h in orjson.loads(last.frontier)])
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
    return acc, nodes


_HEADS: Final = select(HEADS.c.chain_id, HEADS.c.chain_seq, HEADS.c.hash)
_CLOSE_WITHDRAWN: Final = (
    update(ALERTS)
    .where(
        ALERTS.c.alert_id.in_(bindparam("alert_ids", expanding=True)),
        ALERTS.c.status.in_(_WITHDRAWABLE),
    )
    .values(
        status=AlertStatus.WITHDRAWN.value,
        shelved_until=None,
        shelved_by=None,
        shelve_reason=None,
    )
)


@functools.lru_cache(maxsize=2)
def _move_heads(dialect: str) -> Any:
    """Upsert of chain heads (`chain_id`, `chain_seq`, `hash`) in `dialect`."""
    insert = dialect_insert(dialect)(HEADS)
    return insert.on_conflict_do_update(
        index_elements=[HEADS.c.chain_id],
        set_={"chain_seq": insert.excluded.chain_seq, "hash": insert.excluded.hash},
    )


def close_withdrawn(conn: Connection, alert_ids: list[str]) -> int:
    """open/acknowledged/shelved -> withdrawn for these alerts (a shelf is cleared: its
    expiry must not reopen what the engine withdrew); a resolved one stays resolved."""
    closed = 0
    for start in range(0, len(alert_ids), CHUNK):
        chunk = alert_ids[start : start + CHUNK]
        closed += conn.execute(_CLOSE_WITHDRAWN, {"alert_ids": chunk}).rowcount
    return closed


def _subtree(conn: Connection) -> merkle.Subtree:
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


_SQLITE_INSERT: Final = (
    f"INSERT INTO audit_records ({', '.join(_AUDIT_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_AUDIT_COLUMNS))})"
)


@functools.lru_cache(maxsize=4)
def _bind_processors(dialect: Dialect) -> tuple[Callable[[Any], Any] | None, ...]:
    """Each audit column's own conversion to what the driver stores (times to text on
    SQLite), in `_AUDIT_COLUMNS` order."""
    types = (AUDIT.c[name].type.dialect_impl(dialect) for name in _AUDIT_COLUMNS)
    return tuple(column_type.bind_processor(dialect) for column_type in types)


def _insert_audit_rows(conn: Connection, rows: Iterable[tuple[Any, ...]]) -> None:
    if conn.dialect.name != "postgresql":
        # Tuples straight to the driver, each value through its column's own bind processor
        # (the stored text is what `AUDIT.insert()` stores): SQLAlchemy's per-row parameter
        # handling was about half of a recorded step's CPU (bench.embedded_ingest).
        convert = _bind_processors(conn.dialect)
        stored = [
            tuple(v if f is None else f(v) for f, v in zip(convert, row, strict=True))
            for row in rows
        ]
        if stored:
            conn.exec_driver_sql(_SQLITE_INSERT, stored)
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


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)
