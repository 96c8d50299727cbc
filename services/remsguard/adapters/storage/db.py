"""Engines and migrations: one code path for PostgreSQL (production) and SQLite (embedded).

SQLite runs in WAL mode with ``synchronous=FULL`` (a committed audit record survives power
loss) and every transaction starts ``BEGIN IMMEDIATE``, so writers serialise up front instead
of failing on lock upgrade. Writers of one process queue on a lock of the engine before
their BEGIN IMMEDIATE, so they take turns as soon as the previous one is done instead of in
SQLite's busy handler, which sleeps up to 100 ms between tries. Reads that never write go
through ``reader(engine)``: their transactions begin deferred, and a WAL reader never waits
for the writer, so token checks and auditor queries do not queue behind ingest's writes.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, Select, create_engine, event, text

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Every writer of the log takes this PostgreSQL advisory lock (transaction-scoped).
APPEND_LOCK = 0x72656D73  # "rems"
MIGRATE_LOCK = APPEND_LOCK + 1
_READS_ONLY = "remsguard_reads_only"
_WRITER_WAIT = 30.0  # seconds a SQLite writer waits for the one before it
_WRITING = "remsguard_writing"  # in a connection's info while it holds the writers' lock


def make_engine(url: str, **kwargs: Any) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": _WRITER_WAIT}, **kwargs)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_connection.cursor()
            if not url.endswith(":memory:") and url not in ("sqlite://", "sqlite+pysqlite://"):
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        writers = threading.Lock()

        @event.listens_for(engine, "begin")
        def _begin(connection: Any) -> None:
            if connection.get_execution_options().get(_READS_ONLY, False):
                connection.exec_driver_sql("BEGIN")
                return
            if not writers.acquire(timeout=_WRITER_WAIT):  # as SQLite's own busy timeout
                raise TimeoutError(f"another writer held {url} for {_WRITER_WAIT:.0f} s")
            connection.info[_WRITING] = True
            try:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            except BaseException:
                _done(connection)
                raise

        # Released just before COMMIT or ROLLBACK: the next writer's BEGIN IMMEDIATE waits
        # only for that (in the busy handler's first, millisecond sleeps).
        @event.listens_for(engine, "commit")
        @event.listens_for(engine, "rollback")
        def _done(connection: Any) -> None:
            if connection.info.pop(_WRITING, False):
                writers.release()

        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def reader(engine: Engine) -> Engine:
    """The same database and pool for reads only: on SQLite a transaction begun through it
    is deferred (takes no write lock, so it never waits for a writer in WAL mode); a write
    through it could fail on lock upgrade, so nothing that writes may use it."""
    return engine.execution_options(**{_READS_ONLY: True})


class OneRow:
    """A SELECT of at most one row, compiled once for `engine`'s dialect.

    On SQLite it runs on a DBAPI connection outside a transaction (one statement is its own
    snapshot, so it sees every commit before it), each column through its type's own result
    processor, so the values are what `Connection.execute` gives. For a statement run on
    every request this pays: the token lookup spent about 70 µs in SQLAlchemy's per-execute
    work against 20 µs in SQLite (bench.embedded_ingest). The first thread to run it on a
    SQLite file (the event loop, which authenticates every request) keeps a connection of
    its own, taken out of the pool; other threads borrow a pooled one each time. Taking the
    pool's checkout and reset out of every request: 8 connections 1,781-1,805 -> 1,876-1,976
    requests/s with the cached principal rows (`principals.PrincipalStore`). On PostgreSQL
    it is `Connection.execute`."""

    def __init__(self, engine: Engine, stmt: Select[Any]) -> None:
        self._engine = engine
        self._stmt = stmt
        dialect = engine.dialect
        self._direct = dialect.name == "sqlite"
        database = engine.url.database
        # An in-memory database lives in its connection: the pool's, never one of our own.
        self._may_keep = self._direct and database not in (None, "", ":memory:")
        self._kept: tuple[int, Any] | None = None  # (thread id, DBAPI connection)
        self._keeping = threading.Lock()  # two first callers at once keep one connection
        compiled = stmt.compile(dialect=dialect)
        self._sql = str(compiled)
        self._order = list(compiled.positiontup or ())
        self._convert = [
            column.type.dialect_impl(dialect).result_processor(dialect, None)
            for column in stmt.selected_columns
        ]

    def first(self, params: dict[str, Any]) -> tuple[Any, ...] | None:
        if not self._direct:
            with self._engine.connect() as conn:
                row = conn.execute(self._stmt, params).first()
            return None if row is None else tuple(row)
        args = [params[name] for name in self._order]
        kept = self._kept
        if kept is None and self._may_keep:
            kept = self._keep()
        if kept is not None and kept[0] == threading.get_ident():
            found = self._fetch(kept[1], args)
        else:
            raw = self._engine.raw_connection()
            try:
                found = self._fetch(raw, args)
            finally:
                raw.close()  # back to the pool
        if found is None:
            return None
        return tuple(v if f is None else f(v) for f, v in zip(self._convert, found, strict=True))

    def _keep(self) -> tuple[int, Any]:
        with self._keeping:
            if self._kept is None:
                pooled = self._engine.raw_connection()
                pooled.detach()  # ours from now on: `close` closes it
                self._kept = (threading.get_ident(), pooled.dbapi_connection)
            return self._kept

    def _fetch(self, connection: Any, args: list[Any]) -> Any:
        cursor = connection.cursor()
        try:
            return cursor.execute(self._sql, args).fetchone()
        finally:
            cursor.close()

    def close(self) -> None:
        """Close the connection kept for the first thread, if any (the pool's are the
        engine's to dispose of)."""
        kept, self._kept = self._kept, None
        if kept is not None:
            kept[1].close()


def forward_only() -> None:
    """Every migration's ``downgrade`` (``from ...db import forward_only as downgrade``): the
    compliance log is append-only and evidence, so its schema only ever moves forward."""
    raise NotImplementedError("the compliance log is never downgraded")


def migrate(url_or_engine: str | Engine) -> None:
    """Bring the schema to the latest revision (idempotent; safe from concurrent start-ups)."""
    engine = make_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATE_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    if isinstance(url_or_engine, str):
        engine.dispose()
