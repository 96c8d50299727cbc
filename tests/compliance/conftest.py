"""Compliance-log fixtures: a fresh PostgreSQL database per test (other engineers share the
server), a fresh SQLite file per test, and record factories."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError


@pytest.fixture(scope="module")
def pg_database_factory(database_url: str) -> Iterator[Callable[[], str]]:
    """Creates throwaway databases on the shared server; drops them when the module ends."""
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
    created: list[str] = []

    def make() -> str:
        name = f"rg_log_{uuid.uuid4().hex[:16]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        created.append(name)
        return make_url(database_url).set(database=name).render_as_string(hide_password=False)

    yield make
    for name in created:
        for attempt in range(30):  # no FORCE: we may not terminate an autovacuum worker
            try:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
                break
            except DBAPIError:
                if attempt == 29:
                    raise
                time.sleep(1)
    admin.dispose()
