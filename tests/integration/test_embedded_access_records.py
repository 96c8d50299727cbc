"""An auditor's query leaves its access record (`api.query`) in the compliance log before the
answer goes out, without waiting for the log's writer (issue 19: auditor queries during
ingest waited behind the recorder's transactions). The record is journaled with the
runtime's next group and written to the log just behind, like ingest's decisions; a crash
in between loses nothing: recovery writes it from the journal.

Real `remsguard up` processes on 127.0.0.1; the log's writer is held by a second SQLite
connection, as a long transaction of the recorder would hold it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from .embedded_support import Up, remsguard, start_up


def _auditor(data: Path) -> dict[str, str]:
    made = remsguard(
        "principals", "create", "--role", "auditor", "--name", "auditor-1", "--data-dir", str(data)
    )
    assert made.returncode == 0, made.stdout + made.stderr
    token = next(word for word in made.stdout.split() if word.startswith("rg_"))
    return {"Authorization": f"Bearer {token}"}


def _access_records(up: Up, auditor: dict[str, str]) -> list[dict[str, object]]:
    response = up.client.get(
        f"{up.base}/v1/audit/records", params={"kind": "api.query"}, headers=auditor, timeout=10.0
    )
    assert response.status_code == 200, response.text
    records: list[dict[str, object]] = response.json()["records"]
    return records


def _journaled(data: Path) -> list[str]:
    with sqlite3.connect(f"file:{data / 'journal.db'}?mode=ro", uri=True) as journal:
        rows = journal.execute("SELECT record_id FROM service_records ORDER BY seq").fetchall()
    return [str(row[0]) for row in rows]


def test_a_query_is_answered_while_the_log_writer_is_held_and_its_record_survives_kill_9(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    up = start_up(data)
    auditor = _auditor(data)
    writer = sqlite3.connect(data / "remsguard.db", timeout=1.0, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")  # the log's writer is busy for as long as we like
        # Answered, with its access record durable in the journal; the log cannot have it.
        assert _access_records(up, auditor) == []
        journaled = _journaled(data)
        assert len(journaled) == 1
    finally:
        up.kill()  # before the writer is let go: only the journal holds the record
        writer.execute("ROLLBACK")
        writer.close()

    again = start_up(data)
    try:
        records = _access_records(again, auditor)
        assert [r["record_id"] for r in records] == journaled  # recorded at recovery
        detail = records[0]["detail"]
        assert isinstance(detail, dict)
        assert detail["endpoint"] == "/v1/audit/records" and detail["role"] == "auditor"
        assert detail["filters"] == {"kind": "api.query", "limit": 100}
        assert detail["rows"] == 0
    finally:
        assert again.stop() == 0, again.log
    verified = remsguard("audit", "verify", "--db", f"sqlite:///{data / 'remsguard.db'}")
    assert verified.returncode == 0, verified.stdout + verified.stderr
