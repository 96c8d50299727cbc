"""The SQLite fast path of appending audit rows (`audit_log._insert_audit_rows`: tuples to the
driver, each value through its column's bind processor) stores exactly the text that
SQLAlchemy's own `AUDIT.insert()` stores, times included."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from remsguard.adapters.storage import ComplianceLog
from remsguard.adapters.storage.audit_log import _AUDIT_COLUMNS
from remsguard.adapters.storage.tables import AUDIT
from remsguard.domain.decisions import AuditKind, AuditRecord

APPENDED = datetime(2026, 12, 6, 14, 0, 1, 250_000, tzinfo=UTC)


def _rows(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(f"SELECT {', '.join(_AUDIT_COLUMNS)} FROM audit_records").fetchall()


def test_the_fast_path_stores_what_sqlalchemy_stores(tmp_path: Path) -> None:
    records = [
        AuditRecord("r1", AuditKind.EVENT_ACCEPTED, "e1", "s1", "c1", APPENDED, {"n": 1}),
        AuditRecord("r2", AuditKind.EVENT_ACCEPTED, "e2", None, None, None, {}),  # no times
    ]
    fast = ComplianceLog.open(f"sqlite:///{tmp_path / 'fast.db'}")
    fast._now = lambda: APPENDED
    fast.append_audit(records)
    stored = _rows(tmp_path / "fast.db")
    assert len(stored) == 2

    generic = ComplianceLog.open(f"sqlite:///{tmp_path / 'generic.db'}")
    with generic.engine.begin() as conn:
        conn.execute(
            AUDIT.insert(),
            [dict(zip(_AUDIT_COLUMNS, row, strict=True)) for row in stored_as_values(fast)],
        )
    assert _rows(tmp_path / "generic.db") == stored


def stored_as_values(log: ComplianceLog) -> list[tuple[object, ...]]:
    """The fast-path rows read back through SQLAlchemy (times as datetimes again)."""
    with log.engine.connect() as conn:
        query = select(*(AUDIT.c[name] for name in _AUDIT_COLUMNS)).order_by(AUDIT.c.log_index)
        return [tuple(row) for row in conn.execute(query)]
