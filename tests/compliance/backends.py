"""The two databases every storage contract suite runs on (the eventsourcing library's style
of abstract persistence tests): a contract class holds the tests, and ``TestSQLite`` /
``TestPostgres`` in each suite mix in one of these backends.

A backend says how to get a fresh, migrated database and how an attacker with database access
bypasses the append-only triggers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, text

from remsguard.adapters.storage import AuditLog, make_engine, migrate


class Backend(ABC):
    @abstractmethod
    def url(self) -> str: ...

    @abstractmethod
    def bypass_triggers(self, conn: Connection) -> None:
        """What an attacker with database access does before editing audit rows."""

    @pytest.fixture
    def engine(self) -> Iterator[Engine]:
        engine = make_engine(self.url())
        migrate(engine)
        yield engine
        engine.dispose()

    @pytest.fixture
    def audit(self, engine: Engine) -> AuditLog:
        return AuditLog(engine)

    def tamper(self, engine: Engine, *statements: str) -> None:
        with engine.begin() as conn:
            self.bypass_triggers(conn)
            for sql in statements:
                conn.execute(text(sql))


class SQLiteBackend(Backend):
    @pytest.fixture(autouse=True)
    def _path(self, tmp_path: Path) -> None:
        self._file = tmp_path / "log.db"

    def url(self) -> str:
        return f"sqlite:///{self._file}"

    def bypass_triggers(self, conn: Connection) -> None:
        for name in (
            "audit_records_no_update",
            "audit_records_no_delete",
            "audit_tree_heads_no_update",
            "audit_tree_heads_no_delete",
        ):
            conn.execute(text(f"DROP TRIGGER IF EXISTS {name}"))


class PostgresBackend(Backend):
    @pytest.fixture(autouse=True)
    def _database(self, pg_database_factory) -> None:  # type: ignore[no-untyped-def]
        self._url = pg_database_factory()

    def url(self) -> str:
        return self._url

    def bypass_triggers(self, conn: Connection) -> None:
        # The table owner can do this; a superuser could also SET session_replication_role.
        conn.execute(text("ALTER TABLE audit_records DISABLE TRIGGER USER"))
        conn.execute(text("ALTER TABLE audit_tree_heads DISABLE TRIGGER USER"))
