"""Embedded mode's `record_access` (an auditor query's access record): from a worker thread it
is journaled by the runtime before it returns; on the event loop it refuses at once (it would
wait for the loop it blocks, for its whole timeout)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import pytest

from remsguard.config import Settings
from remsguard.domain.decisions import AuditKind, AuditRecord
from remsguard.embedded.container import EmbeddedContainer


def test_an_access_record_is_journaled_from_a_thread_and_refused_on_the_event_loop(
    tmp_path: Path,
) -> None:
    container = EmbeddedContainer.open(Settings(), tmp_path / "data")
    kind = cast(AuditKind, "api.query")
    record = AuditRecord("q1", kind, "principal-1", None, None, datetime.now(UTC), {"rows": 2})

    async def run() -> None:
        await container.start()
        try:
            with pytest.raises(RuntimeError, match="worker thread"):
                container.record_access(record)
            assert container.journal.service_records() == []
            await asyncio.to_thread(container.record_access, record)
            assert container.journal.service_records() == [record]
        finally:
            await container.stop()

    asyncio.run(run())
