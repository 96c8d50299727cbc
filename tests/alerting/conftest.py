"""Per test: a driven clock, a fresh SQLite compliance log on it, a recording channel."""

from __future__ import annotations

from pathlib import Path

import pytest

from remsguard.adapters.storage import ComplianceLog

from .support import Clock, Recorder, open_log


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def log(tmp_path: Path, clock: Clock) -> ComplianceLog:
    """At `tmp_path / "log.db"` (a test may open it again, as a second process would)."""
    return open_log(tmp_path / "log.db", clock)


@pytest.fixture
def rec() -> Recorder:
    return Recorder()
