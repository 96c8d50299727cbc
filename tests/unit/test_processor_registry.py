"""The processor's REMS registry: read from REMSGUARD_DATABASE_URL and re-read on refresh;
without a database (or with the gate off) the engine runs without the gate."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from remsguard.adapters.kafka.processor import _rems_gate
from remsguard.adapters.storage import ComplianceLog
from remsguard.adapters.storage.registry import RegistryStore
from remsguard.bootstrap import build_engine
from remsguard.config import Settings


def test_the_registry_comes_from_the_database_and_refreshes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = ComplianceLog.open(url)
    store = RegistryStore(log)
    store.certify("c1", "CERT-1", date(2026, 1, 1), None, by="test")
    engine = build_engine("spravato-rems")
    refresh = _rems_gate(Settings(database_url=url), engine)
    assert refresh is not None and engine.registry is not None
    assert engine.registry.certification_of("c1") is not None
    assert engine.registry.enrollment_of("c1", "p1") is None
    store.enroll("c1", "p1", date(2026, 2, 1), by="test")
    refresh()
    assert engine.registry.enrollment_of("c1", "p1") is not None
    log.close()


def test_no_database_or_gate_off_means_no_gate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REMSGUARD_DATABASE_URL", raising=False)
    engine = build_engine("spravato-rems")
    assert _rems_gate(Settings(), engine) is None  # REMSGUARD_DATABASE_URL unset
    url = f"sqlite:///{tmp_path / 'log.db'}"
    assert _rems_gate(Settings(database_url=url, rems_gate=False), engine) is None
    assert engine.registry is None
