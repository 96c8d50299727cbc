"""The compliance log's tables as SQLAlchemy ``Table`` handles, and the two places where
PostgreSQL and SQLite differ for every repository here: the upsert statement and long
``IN`` lists."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Final

import orjson
from sqlalchemy import Connection, Select, Table, any_, select, text
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
    """The dialect's ``insert`` (the one with ``on_conflict_do_*``)."""
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def rows_where_in(
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
    for start in range(0, len(values), CHUNK):
        yield from conn.execute(stmt.where(column.in_(values[start : start + CHUNK])))


def existing(conn: Connection, column: Any, values: list[str]) -> Iterator[str]:
    """Which of ``values`` are already stored in ``column``."""
    for (found,) in rows_where_in(conn, select(column), column, values):
        yield found
