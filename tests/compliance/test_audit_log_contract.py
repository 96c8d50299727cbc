"""``AuditLog``'s contract, on SQLite (embedded) and PostgreSQL (production): the schema,
appends and chains, what ``audit verify`` catches, signed heads and proofs, paged queries of
records, and a table change committed with its record or not at all."""

from __future__ import annotations

import itertools
import random
import threading
import time
from dataclasses import replace
from datetime import timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, MetaData, event, text
from sqlalchemy.exc import DatabaseError
from sqlmodel import SQLModel

from remsguard.adapters.storage import (
    AuditLog,
    AuditQuery,
    CursorError,
    HeadSigner,
    make_engine,
    migrate,
    verify_log,
)
from remsguard.adapters.storage.chain import GENESIS
from remsguard.domain import merkle
from remsguard.domain.decisions import AuditKind

from .backends import Backend, PostgresBackend, SQLiteBackend
from .factories import T0, alert, alert_record, record

MY_TABLES = {
    "audit_records",
    "audit_chain_heads",
    "audit_tree_heads",
    "audit_merkle_nodes",
    "alerts",
    "session_summaries",
    "monitoring_forms",
    "api_principals",
    "rems_certifications",
    "rems_enrollments",
}


class AuditLogContract(Backend):
    @pytest.fixture
    def signer(self) -> HeadSigner:
        return HeadSigner(Ed25519PrivateKey.generate())

    # -- schema ---------------------------------------------------------------------------

    def test_migrations_match_the_models_and_are_idempotent(self, engine: Engine) -> None:
        migrate(engine)  # second run: nothing to do
        mine = MetaData()
        for table in SQLModel.metadata.tables.values():
            if table.name in MY_TABLES:
                table.to_metadata(mine)
        with engine.connect() as conn:
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": False}), mine
            )
        diff = [d for d in diff if not (d[0] == "remove_table" and d[1].name not in MY_TABLES)]
        diff = [d for d in diff if d[0] != "remove_table" or d[1].name != "alembic_version"]
        assert diff == []

    def test_database_refuses_update_and_delete_of_audit_records(self, audit: AuditLog) -> None:
        audit.append([record(i) for i in range(3)])
        for sql in (
            "UPDATE audit_records SET subject_id = 'x' WHERE log_index = 1",
            "DELETE FROM audit_records WHERE log_index = 1",
        ):
            with pytest.raises(DatabaseError, match="append-only"), audit.engine.begin() as conn:
                conn.execute(text(sql))
        assert audit.size() == 3
        assert verify_log(audit.engine).ok

    # -- appending ------------------------------------------------------------------------

    def test_append_is_idempotent_and_chains_continue(self, audit: AuditLog) -> None:
        first = [record(i) for i in range(10)]
        again = [record(i) for i in range(5, 20)]
        assert audit.append(first).inserted == 10
        result = audit.append([*again, *again])
        assert (result.inserted, result.duplicates, result.tree_size) == (10, 20, 20)
        assert audit.append(first).inserted == 0
        assert audit.size() == 20
        rows = audit.records(AuditQuery(limit=1000)).items
        assert sorted(r.log_index for r in rows) == list(range(20))
        for chain in {r.chain_id for r in rows}:
            mine = sorted((r for r in rows if r.chain_id == chain), key=lambda r: r.chain_seq)
            assert [r.chain_seq for r in mine] == list(range(len(mine)))
            assert mine[0].prev_hash == GENESIS
            assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(mine))
        assert audit.record(first[3].record_id) is not None
        assert audit.record("nope") is None
        assert verify_log(audit.engine).ok

    def test_records_without_clinic_and_odd_detail_round_trip(self, audit: AuditLog) -> None:
        audit.append(
            [
                replace(record(1), clinic_id=None, session_id=None),
                record(2, detail={"z": 1.5, "a": [1, "x", None], "é": {"n": True}}),
                record(3, kind=AuditKind.EVENT_REJECTED, detail={"reason": "bad_json"}),
            ]
        )
        report = verify_log(audit.engine)
        assert report.ok, report.problem
        assert report.chains == 3
        assert audit.records(AuditQuery(limit=5)).items[0].chain_id == ""

    def test_a_recorded_change_commits_with_its_records_or_not_at_all(
        self, audit: AuditLog
    ) -> None:
        """What PrincipalStore, RegistryStore and the lifecycle steps rely on."""
        sql = "UPDATE monitoring_forms SET submitted_by = 'x'"  # a table change (no rows)
        with audit.recorded_change() as change:
            change.conn.execute(text(sql))
            assert change.append([record(1)]).inserted == 1
        with pytest.raises(RuntimeError), audit.recorded_change() as change:
            change.append([record(2)])
            raise RuntimeError("the change failed")
        assert audit.size() == 1 and audit.record(record(2).record_id) is None
        assert verify_log(audit.engine).ok

    # -- tamper evidence ------------------------------------------------------------------

    def test_verify_catches_an_edited_row(self, audit: AuditLog) -> None:
        audit.append([record(i) for i in range(30)])
        victim = audit.records(AuditQuery(limit=1000)).items[12]
        self.tamper(
            audit.engine,
            f'UPDATE audit_records SET detail = \'{{"type":"dose.administered"}}\' '
            f"WHERE record_id = '{victim.record_id}'",
        )
        report = verify_log(audit.engine)
        assert not report.ok
        assert report.record_id == victim.record_id
        assert "hash mismatch" in (report.problem or "")

    def test_verify_catches_an_edited_index_column(self, audit: AuditLog) -> None:
        a = alert(1)
        audit.append([record(0), alert_record(a)])
        self.tamper(audit.engine, "UPDATE audit_records SET severity = 'info' WHERE log_index = 1")
        report = verify_log(audit.engine)
        assert report.log_index == 1 and "severity" in (report.problem or "")

    def test_verify_catches_a_deleted_row(self, audit: AuditLog) -> None:
        audit.append([record(i) for i in range(30)])
        self.tamper(audit.engine, "DELETE FROM audit_records WHERE log_index = 17")
        report = verify_log(audit.engine)
        assert not report.ok
        assert report.log_index == 18
        assert "missing" in (report.problem or "")

    def test_verify_catches_two_rows_reordered(self, audit: AuditLog) -> None:
        audit.append([record(i, clinic="clinic-0") for i in range(30)])
        self.tamper(
            audit.engine,
            "UPDATE audit_records SET log_index = -1 WHERE log_index = 10",
            "UPDATE audit_records SET log_index = 10 WHERE log_index = 20",
            "UPDATE audit_records SET log_index = 20 WHERE log_index = -1",
        )
        report = verify_log(audit.engine)
        assert not report.ok
        assert report.log_index == 10
        assert "chain seq" in (report.problem or "")

    def test_verify_catches_a_reorder_that_rewrites_positions(self, audit: AuditLog) -> None:
        """An attacker who also swaps the chain fields still breaks the hashes."""
        audit.append([record(i, clinic="clinic-0") for i in range(10)])
        rows = {r.log_index: r for r in audit.records(AuditQuery(limit=100)).items}
        a, b = rows[3], rows[6]
        self.tamper(
            audit.engine,
            "UPDATE audit_records SET record_id = 'tmp' WHERE log_index = 3",
            f"UPDATE audit_records SET record_id = '{a.record_id}', subject_id = "
            f"'{a.subject_id}' WHERE log_index = 6",
            f"UPDATE audit_records SET record_id = '{b.record_id}', subject_id = "
            f"'{b.subject_id}' WHERE log_index = 3",
        )
        report = verify_log(audit.engine)
        assert report.log_index == 3 and "hash mismatch" in (report.problem or "")

    def test_verify_catches_tail_truncation_and_forged_heads(
        self, audit: AuditLog, signer: HeadSigner
    ) -> None:
        audit.append([record(i) for i in range(20)])
        audit.sign_head(signer)
        assert verify_log(audit.engine, signer.public_key).ok
        other = HeadSigner(Ed25519PrivateKey.generate())
        assert "bad signature" in (verify_log(audit.engine, other.public_key).problem or "")
        self.tamper(audit.engine, "DELETE FROM audit_records WHERE log_index = 19")
        report = verify_log(audit.engine, signer.public_key)
        assert "covers more records" in (report.problem or "")
        self.tamper(audit.engine, "DELETE FROM audit_tree_heads")
        report = verify_log(audit.engine, signer.public_key)
        assert "deleted" in (report.problem or ""), report

    def test_signing_a_head_reads_the_records_without_holding_the_writers(
        self, audit: AuditLog, signer: HeadSigner
    ) -> None:
        """While one signer reads the records since the last head, another process (another
        engine on the database) appends records and signs a head of its own: the append
        does not wait for the first signer, and the first signer then starts again from the
        new head. Every head verifies."""
        audit.append([record(i) for i in range(300)])
        audit.sign_head(signer)
        audit.append([record(i) for i in range(300, 600)])
        elsewhere_engine = make_engine(self.url())
        elsewhere = AuditLog(elsewhere_engine)
        meanwhile: list[float] = []

        def during_the_read(conn: object, cursor: object, statement: str, *_: object) -> None:
            if meanwhile or "FROM audit_records" not in statement or "hash" not in statement:
                return
            started = time.monotonic()
            worker = threading.Thread(
                target=lambda: (
                    elsewhere.append([record(i) for i in range(600, 650)]),
                    elsewhere.sign_head(signer),
                )
            )
            worker.start()
            worker.join(timeout=10)
            meanwhile.append(time.monotonic() - started if not worker.is_alive() else 999.0)

        event.listen(audit.engine, "after_cursor_execute", during_the_read)
        try:
            head = audit.sign_head(signer)
        finally:
            event.remove(audit.engine, "after_cursor_execute", during_the_read)
            elsewhere_engine.dispose()
        assert meanwhile and meanwhile[0] < 5.0, meanwhile  # the other writer never waited
        assert [h.tree_size for h in audit.heads()] == [300, 650]
        assert head.tree_size == 650 and head == audit.latest_head()
        report = verify_log(audit.engine, signer.public_key)
        assert report.ok and report.heads == 2, report

    def test_signed_heads_inclusion_and_consistency_proofs(
        self, audit: AuditLog, signer: HeadSigner
    ) -> None:
        rng = random.Random(7)
        sizes = [1, 2, 3, 255, 256, 257, 600, 1100]
        heads = []
        for size in sizes:
            audit.append([record(i) for i in range(audit.size(), size)])
            heads.append(audit.sign_head(signer))
        assert audit.sign_head(signer).tree_size == 1100  # nothing new: same head
        assert [h.tree_size for h in audit.heads()] == sizes
        latest = audit.latest_head()
        assert latest is not None and latest.tree_size == 1100
        at_257 = audit.head(257)
        assert at_257 is not None and at_257.root_hash == heads[5].root_hash
        assert audit.head(258) is None
        report = verify_log(audit.engine, signer.public_key)
        assert report.ok and report.heads == len(sizes), report
        all_rows = audit.records(AuditQuery(limit=1000)).items
        for head in heads:
            for row in rng.sample(
                [r for r in all_rows if r.log_index < head.tree_size], min(5, head.tree_size)
            ):
                proof = audit.inclusion_proof(row.record_id, head.tree_size)
                assert proof is not None
                assert merkle.verify_inclusion(
                    merkle.leaf_hash(bytes.fromhex(proof.record_hash)),
                    proof.leaf_index,
                    proof.tree_size,
                    [bytes.fromhex(p) for p in proof.path],
                    bytes.fromhex(head.root_hash),
                )
        for old in heads:
            for new in heads:
                if old.tree_size <= new.tree_size:
                    proof = audit.consistency_proof(old.tree_size, new.tree_size)
                    assert merkle.verify_consistency(
                        old.tree_size,
                        new.tree_size,
                        bytes.fromhex(old.root_hash),
                        bytes.fromhex(new.root_hash),
                        [bytes.fromhex(p) for p in proof],
                    )
        audit.append([record(5000)])
        assert audit.inclusion_proof(record(5000).record_id) is None  # not yet under a head

    # -- queries --------------------------------------------------------------------------

    def test_queries_filter_and_paginate_in_a_stable_order(self, audit: AuditLog) -> None:
        recs = [record(i, at=T0 + timedelta(minutes=i // 3)) for i in range(200)]  # ties
        alerts = [
            alert(i, rule="BP_HIGH" if i % 2 else "SPO2_LOW", clinic=f"clinic-{i % 3}")
            for i in range(60)
        ]
        audit.append(recs[:100])
        audit.append([*(alert_record(a) for a in alerts), *recs[100:]])

        def walk(q: AuditQuery) -> list[str]:
            out, cursor = [], None
            while True:
                page = audit.records(replace(q, cursor=cursor))
                out.extend(r.record_id for r in page.items)
                if page.next_cursor is None:
                    return out
                cursor = page.next_cursor

        everything = walk(AuditQuery(limit=7))
        assert len(everything) == len(set(everything)) == 260
        full = audit.records(AuditQuery(limit=1000)).items
        assert [r.record_id for r in full] == everything
        keys = [(r.event_time, r.log_index) for r in full]
        assert keys == sorted(keys)
        c1 = walk(AuditQuery(clinic_id="clinic-1", limit=9))
        assert set(c1) == {r.record_id for r in full if r.clinic_id == "clinic-1"}
        scoped = walk(AuditQuery(clinics=frozenset({"clinic-2"}), session_id="clinic-2-sess-2"))
        assert set(scoped) == {r.record_id for r in full if r.session_id == "clinic-2-sess-2"}
        since, until = T0 + timedelta(minutes=10), T0 + timedelta(minutes=20)
        window = walk(AuditQuery(since=since, until=until, limit=4))
        assert set(window) == {
            r.record_id for r in full if since <= r.event_time.replace(tzinfo=since.tzinfo) < until
        }
        spo2 = walk(AuditQuery(rule="SPO2_LOW", severity="warning"))
        assert len(spo2) == len([a for a in alerts if a.rule == "SPO2_LOW"]) > 0
        assert walk(AuditQuery(kind="alert.raised", clinics=frozenset())) == []
        with pytest.raises(CursorError):
            audit.records(AuditQuery(cursor="garbage!"))


class TestSQLite(SQLiteBackend, AuditLogContract):
    def test_embedded_mode_is_wal_with_full_sync(self, engine: Engine) -> None:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL


@pytest.mark.postgres
class TestPostgres(PostgresBackend, AuditLogContract):
    def test_truncate_is_refused(self, audit: AuditLog) -> None:
        audit.append([record(1)])
        with pytest.raises(DatabaseError, match="append-only"), audit.engine.begin() as conn:
            conn.execute(text("TRUNCATE audit_records"))
