"""The compliance log's tables as SQLAlchemy ``Table`` handles, and the two places where
PostgreSQL and SQLite differ for every repository here: the upsert statement and long
``IN`` lists."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any, Final

import orjson
from sqlalchemy import Connection, Select, Table, any_, bindparam, select, text
from sqlalchemy.dialects import postgresql, sqlite

from remsguard.adapters.storage.models import (
    AlertRow,
    ApiPrincipal,
    AuditRow,
    ChainHead,
    MerkleNode,
    MonitoringForm,
    SessionEventRow,
    SessionSummary,
    TreeHead,
)

__all__ = [
    "ALERTS",
    "AUDIT",
    "CHUNK",
    "EVENTS",
    "FORMS",
    "HEADS",
    "NODES",
    "PRINCIPALS",
    "SUMMARIES",
    "TREE_HEADS",
    "dialect_insert",
    "existing",
    "insert_for",
    "rows_where_in",
]

CHUNK: Final = 5000  # rows per statement where SQLite needs a bound on parameters

AUDIT: Final[Table] = AuditRow.__table__  # type: ignore[attr-defined]
ALERTS: Final[Table] = AlertRow.__table__  # type: ignore[attr-defined]
HEADS: Final[Table] = ChainHead.__table__  # type: ignore[attr-defined]
TREE_HEADS: Final[Table] = TreeHead.__table__  # type: ignore[attr-defined]
NODES: Final[Table] = MerkleNode.__table__  # type: ignore[attr-defined]
SUMMARIES: Final[Table] = SessionSummary.__table__  # type: ignore[attr-defined]
FORMS: Final[Table] = MonitoringForm.__table__  # type: ignore[attr-defined]
PRINCIPALS: Final[Table] = ApiPrincipal.__table__  # type: ignore[attr-defined]
EVENTS: Final[Table] = SessionEventRow.__table__  # type: ignore[attr-defined]


def insert_for(conn: Connection) -> Callable[[Table], Any]:
    """The connection's dialect's ``insert`` (the one with ``on_conflict_do_*``)."""
    return dialect_insert(conn.dialect.name)


def dialect_insert(dialect: str) -> Callable[[Table], Any]:
    """The ``insert`` with ``on_conflict_do_*`` of `dialect` (``conn.dialect.name``)."""
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


# Statements are built once per shape and dialect, then run with parameters: the recorder and
# the token check run them on every step or request, and on SQLite building a statement
# costs more than running it (bench.embedded_ingest; docs/PERFORMANCE.md).
_IN_JSON: Final = "(ARRAY(SELECT json_array_elements_text(CAST(:values AS json))))"


@functools.lru_cache(maxsize=64)
def _where_in(stmt: Select[Any], column: Any, dialect: str) -> Select[Any]:
    if dialect == "postgresql":
        return stmt.where(column == any_(text(_IN_JSON)))
    return stmt.where(column.in_(bindparam("values", expanding=True)))


@functools.lru_cache(maxsize=64)
def _select_of(column: Any) -> Select[Any]:
    return select(column)


def rows_where_in(
    conn: Connection, stmt: Select[Any], column: Any, values: list[str]
) -> Iterator[Any]:
    """``stmt`` filtered to ``column`` in ``values``: on PostgreSQL one JSON array parameter
    (a statement with thousands of placeholders, or an array parameter, costs more to build in
    Python than to run), on SQLite chunks of ``IN`` lists. Pass a ``stmt`` built once (a
    module constant): the filtered statement is then built once too."""
    if not values:
        return
    dialect = conn.dialect.name
    filtered = _where_in(stmt, column, dialect)
    if dialect == "postgresql":
        yield from conn.execute(filtered, {"values": orjson.dumps(values).decode()})
        return
    for start in range(0, len(values), CHUNK):
        yield from conn.execute(filtered, {"values": values[start : start + CHUNK]})


def existing(conn: Connection, column: Any, values: list[str]) -> Iterator[str]:
    """Which of ``values`` are already stored in ``column``."""
    for (found,) in rows_where_in(conn, _select_of(column), column, values):
        yield found
