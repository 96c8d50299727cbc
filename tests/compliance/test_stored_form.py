"""The append path serialises each record once (``stored_form``); what it stores and hashes
must be byte for byte what ``normalise`` + ``canonical_entry`` (and so verify) give."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest

from remsguard.adapters.storage import AuditQuery, ComplianceLog, verify_log
from remsguard.adapters.storage.chain import (
    GENESIS,
    canonical_entry,
    chain_of,
    entry_hash,
    entry_of,
    normalise,
    stored_form,
)
from remsguard.contract.outbound import audit_record_to_json
from remsguard.domain.decisions import AuditKind, AuditRecord

from .factories import record

AWKWARD_DETAILS: list[dict[object, object]] = [
    {},
    {"type": "vitals.recorded"},
    {"z": 1.5, "a": [1, "x", None], "é": {"n": True, "b": {"y": 2, "x": 1}}},
    {"rule": "BP_HIGH", "severity": "critical"},
    {"tags": {"b", "a", "c"}, "frozen": frozenset({3, 1})},
    {2: "two", 10: "ten", "1": "one-str"},
    {1: "int key", "1": "str key"},  # the same key twice in the wire form
    {"at": datetime(2026, 1, 1, 12, 0), "aware": datetime(2026, 1, 1, tzinfo=UTC)},
    {"quote": 'a "detail": b', "nested": {"detail": {"detail": 1}}, ',"detail":': "key"},
    {"text": "tab\tnew\nline\rback\\slash \u2028 \U0001f600", "neg": -0.0, "big": 2**63 - 1},
    {"obj": Path("/x/y"), "float": 1e-300, "list": [{"b": 1, "a": 2}]},
]


def awkward_records() -> list[AuditRecord]:
    out = [record(i, detail=d) for i, d in enumerate(AWKWARD_DETAILS)]  # type: ignore[arg-type]
    n = len(out)
    out += [
        replace(record(n), clinic_id=None, session_id=None, occurred_at=None),
        replace(record(n + 1), occurred_at=datetime(2026, 3, 1, 9, 30, 0, 123456)),  # naive
        replace(
            record(n + 2),
            occurred_at=datetime(2026, 3, 1, 9, 30, tzinfo=timezone(timedelta(hours=-5))),
        ),
        replace(record(n + 3), subject_id='ev-"detail":\\', clinic_id='c,"detail":1'),
        replace(
            record(n + 4, kind=AuditKind.ALERT_RAISED, detail={"severity": "warning", "rule": 7}),
        ),
        replace(record(n + 5), kind="api.query"),  # type: ignore[arg-type]
    ]
    return out


@pytest.mark.parametrize("rec", awkward_records(), ids=lambda r: r.subject_id)
def test_stored_form_is_normalise_then_wire_json(rec: AuditRecord) -> None:
    normal, text = normalise(rec)
    record_json, detail_text, detail, occurred = stored_form(rec)
    assert record_json == audit_record_to_json(normal)
    assert detail_text == text
    assert detail == normal.detail == orjson.loads(text)
    assert occurred == normal.occurred_at
    at = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
    fields = {
        "log_index": 7,
        "chain_id": chain_of(rec),
        "chain_seq": 3,
        "prev_hash": GENESIS,
        "appended_at": at,
    }
    assert entry_of(**fields, record_json=record_json) == canonical_entry(**fields, record=normal)


@pytest.fixture(params=["sqlite", "postgres"])
def log(
    request: pytest.FixtureRequest, tmp_path: Path, pg_database_factory: Callable[[], str]
) -> Iterator[ComplianceLog]:
    url = f"sqlite:///{tmp_path / 'log.db'}" if request.param == "sqlite" else pg_database_factory()
    log = ComplianceLog.open(url)
    yield log
    log.close()


def test_appended_rows_hash_as_the_reference_algorithm(log: ComplianceLog) -> None:
    """Every stored row: its hash is the SHA-256 of ``canonical_entry`` over the normalised
    record at its position and chain link, and its derived columns are what they were."""
    records = awkward_records()
    half = len(records) // 2
    log.append_audit(records[:half])
    log.append_audit(records)  # the first half again: duplicates skipped
    rows = {r.record_id: r for r in log.audit_records(AuditQuery(limit=1000)).items}
    assert len(rows) == len(records)
    heads: dict[str, tuple[int, str]] = {}
    for index, rec in enumerate(records):
        row = rows[rec.record_id]
        normal, text = normalise(rec)
        chain = chain_of(rec)
        seq, prev = heads.get(chain, (-1, GENESIS))
        expected = entry_hash(
            canonical_entry(
                log_index=index,
                chain_id=chain,
                chain_seq=seq + 1,
                prev_hash=prev,
                appended_at=row.appended_at,
                record=normal,
            )
        )
        assert (row.log_index, row.chain_id, row.chain_seq, row.prev_hash) == (
            index,
            chain,
            seq + 1,
            prev,
        )
        assert row.hash == expected
        assert row.detail == text
        assert row.kind == str(rec.kind)
        if rec.kind == AuditKind.ALERT_RAISED:
            assert (row.rule, row.severity) == ("7", "warning")
        else:
            assert (row.rule, row.severity) == (None, None)
        heads[chain] = (seq + 1, row.hash)
    report = verify_log(log.engine, tables=False)  # alert records without alert rows
    assert report.ok, report.problem
