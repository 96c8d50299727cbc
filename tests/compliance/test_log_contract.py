"""One repository test suite, run against SQLite (embedded) and PostgreSQL (production).

Each backend subclass says how to get a fresh database and how an attacker with database
access bypasses the append-only triggers; every test in ``ComplianceLogContract`` runs on
both (the eventsourcing library's style of abstract persistence tests).
"""

from __future__ import annotations

import itertools
import random
from abc import ABC, abstractmethod
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Connection, MetaData, text
from sqlalchemy.exc import DatabaseError
from sqlmodel import SQLModel

from remsguard.adapters.storage import (
    AlertQuery,
    AlertStatus,
    AuditQuery,
    ComplianceLog,
    CursorError,
    HeadSigner,
    PrincipalRole,
    verify_log,
)
from remsguard.adapters.storage.chain import GENESIS
from remsguard.domain import merkle
from remsguard.domain.decisions import AuditKind, Severity, alert_withdrawn

from .factories import T0, alert, alert_record, record, withdrawal

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


class ComplianceLogContract(ABC):
    @abstractmethod
    def url(self) -> str: ...

    @abstractmethod
    def bypass_triggers(self, conn: Connection) -> None:
        """What an attacker with database access does before editing audit rows."""

    @pytest.fixture
    def log(self) -> Iterator[ComplianceLog]:
        log = ComplianceLog.open(self.url())
        yield log
        log.close()

    @pytest.fixture
    def signer(self) -> HeadSigner:
        return HeadSigner(Ed25519PrivateKey.generate())

    def tamper(self, log: ComplianceLog, *statements: str) -> None:
        with log.engine.begin() as conn:
            self.bypass_triggers(conn)
            for sql in statements:
                conn.execute(text(sql))

    # -- schema ---------------------------------------------------------------------------

    def test_migrations_match_the_models_and_are_idempotent(self, log: ComplianceLog) -> None:
        from remsguard.adapters.storage import migrate

        migrate(log.engine)  # second run: nothing to do
        mine = MetaData()
        for table in SQLModel.metadata.tables.values():
            if table.name in MY_TABLES:
                table.to_metadata(mine)
        with log.engine.connect() as conn:
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": False}), mine
            )
        diff = [d for d in diff if not (d[0] == "remove_table" and d[1].name not in MY_TABLES)]
        diff = [d for d in diff if d[0] != "remove_table" or d[1].name != "alembic_version"]
        assert diff == []

    def test_database_refuses_update_and_delete_of_audit_records(self, log: ComplianceLog) -> None:
        log.append_audit([record(i) for i in range(3)])
        for sql in (
            "UPDATE audit_records SET subject_id = 'x' WHERE log_index = 1",
            "DELETE FROM audit_records WHERE log_index = 1",
        ):
            with pytest.raises(DatabaseError, match="append-only"), log.engine.begin() as conn:
                conn.execute(text(sql))
        assert log.size() == 3
        assert verify_log(log.engine).ok

    # -- appending ------------------------------------------------------------------------

    def test_append_is_idempotent_and_chains_continue(self, log: ComplianceLog) -> None:
        first = [record(i) for i in range(10)]
        again = [record(i) for i in range(5, 20)]
        assert log.append_audit(first).inserted == 10
        result = log.append_audit([*again, *again])
        assert (result.inserted, result.duplicates, result.tree_size) == (10, 20, 20)
        assert log.append_audit(first).inserted == 0
        assert log.size() == 20
        rows = log.audit_records(AuditQuery(limit=1000)).items
        assert sorted(r.log_index for r in rows) == list(range(20))
        for chain in {r.chain_id for r in rows}:
            mine = sorted((r for r in rows if r.chain_id == chain), key=lambda r: r.chain_seq)
            assert [r.chain_seq for r in mine] == list(range(len(mine)))
            assert mine[0].prev_hash == GENESIS
            assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(mine))
        assert verify_log(log.engine).ok

    def test_records_without_clinic_and_odd_detail_round_trip(self, log: ComplianceLog) -> None:
        log.append_audit(
            [
                replace(record(1), clinic_id=None, session_id=None),
                record(2, detail={"z": 1.5, "a": [1, "x", None], "é": {"n": True}}),
                record(3, kind=AuditKind.EVENT_REJECTED, detail={"reason": "bad_json"}),
            ]
        )
        report = verify_log(log.engine)
        assert report.ok, report.problem
        assert report.chains == 3
        assert log.audit_records(AuditQuery(limit=5)).items[0].chain_id == ""

    # -- tamper evidence ------------------------------------------------------------------

    def test_verify_catches_an_edited_row(self, log: ComplianceLog) -> None:
        log.append_audit([record(i) for i in range(30)])
        victim = log.audit_records(AuditQuery(limit=1000)).items[12]
        self.tamper(
            log,
            f'UPDATE audit_records SET detail = \'{{"type":"dose.administered"}}\' '
            f"WHERE record_id = '{victim.record_id}'",
        )
        report = verify_log(log.engine)
        assert not report.ok
        assert report.record_id == victim.record_id
        assert "hash mismatch" in (report.problem or "")

    def test_verify_catches_an_edited_index_column(self, log: ComplianceLog) -> None:
        a = alert(1)
        log.append_audit([record(0), alert_record(a)])
        self.tamper(log, "UPDATE audit_records SET severity = 'info' WHERE log_index = 1")
        report = verify_log(log.engine)
        assert report.log_index == 1 and "severity" in (report.problem or "")

    def test_verify_catches_a_deleted_row(self, log: ComplianceLog) -> None:
        log.append_audit([record(i) for i in range(30)])
        self.tamper(log, "DELETE FROM audit_records WHERE log_index = 17")
        report = verify_log(log.engine)
        assert not report.ok
        assert report.log_index == 18
        assert "missing" in (report.problem or "")

    def test_verify_catches_two_rows_reordered(self, log: ComplianceLog) -> None:
        log.append_audit([record(i, clinic="clinic-0") for i in range(30)])
        self.tamper(
            log,
            "UPDATE audit_records SET log_index = -1 WHERE log_index = 10",
            "UPDATE audit_records SET log_index = 10 WHERE log_index = 20",
            "UPDATE audit_records SET log_index = 20 WHERE log_index = -1",
        )
        report = verify_log(log.engine)
        assert not report.ok
        assert report.log_index == 10
        assert "chain seq" in (report.problem or "")

    def test_verify_catches_a_reorder_that_rewrites_positions(self, log: ComplianceLog) -> None:
        """An attacker who also swaps the chain fields still breaks the hashes."""
        log.append_audit([record(i, clinic="clinic-0") for i in range(10)])
        rows = {r.log_index: r for r in log.audit_records(AuditQuery(limit=100)).items}
        a, b = rows[3], rows[6]
        self.tamper(
            log,
            "UPDATE audit_records SET record_id = 'tmp' WHERE log_index = 3",
            f"UPDATE audit_records SET record_id = '{a.record_id}', subject_id = "
            f"'{a.subject_id}' WHERE log_index = 6",
            f"UPDATE audit_records SET record_id = '{b.record_id}', subject_id = "
            f"'{b.subject_id}' WHERE log_index = 3",
        )
        report = verify_log(log.engine)
        assert report.log_index == 3 and "hash mismatch" in (report.problem or "")

    def test_verify_catches_tail_truncation_and_forged_heads(
        self, log: ComplianceLog, signer: HeadSigner
    ) -> None:
        log.append_audit([record(i) for i in range(20)])
        log.sign_head(signer)
        assert verify_log(log.engine, signer.public_key).ok
        other = HeadSigner(Ed25519PrivateKey.generate())
        assert "bad signature" in (verify_log(log.engine, other.public_key).problem or "")
        self.tamper(log, "DELETE FROM audit_records WHERE log_index = 19")
        report = verify_log(log.engine, signer.public_key)
        assert "covers more records" in (report.problem or "")
        self.tamper(log, "DELETE FROM audit_tree_heads")
        report = verify_log(log.engine, signer.public_key)
        assert "deleted" in (report.problem or ""), report

    def test_signed_heads_inclusion_and_consistency_proofs(
        self, log: ComplianceLog, signer: HeadSigner
    ) -> None:
        rng = random.Random(7)
        sizes = [1, 2, 3, 255, 256, 257, 600, 1100]
        heads = []
        for size in sizes:
            log.append_audit([record(i) for i in range(log.size(), size)])
            heads.append(log.sign_head(signer))
        assert log.sign_head(signer).tree_size == 1100  # nothing new: same head
        assert [h.tree_size for h in log.heads()] == sizes
        report = verify_log(log.engine, signer.public_key)
        assert report.ok and report.heads == len(sizes), report
        all_rows = log.audit_records(AuditQuery(limit=1000)).items
        for head in heads:
            for row in rng.sample(
                [r for r in all_rows if r.log_index < head.tree_size], min(5, head.tree_size)
            ):
                proof = log.inclusion_proof(row.record_id, head.tree_size)
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
                    proof = log.consistency_proof(old.tree_size, new.tree_size)
                    assert merkle.verify_consistency(
                        old.tree_size,
                        new.tree_size,
                        bytes.fromhex(old.root_hash),
                        bytes.fromhex(new.root_hash),
                        [bytes.fromhex(p) for p in proof],
                    )
        log.append_audit([record(5000)])
        assert log.inclusion_proof(record(5000).record_id) is None  # not yet under a head

    # -- alerts, sessions, forms, principals ----------------------------------------------

    def test_alerts_idempotent_with_lifecycle(self, log: ComplianceLog) -> None:
        alerts = [alert(i) for i in range(5)]
        assert log.save_alerts(alerts) == 5
        acked = log.acknowledge_alert(alerts[0].alert_id, "rn-1")
        assert acked is not None and acked.status == AlertStatus.ACKNOWLEDGED
        assert log.save_alerts([*alerts, alert(9)]) == 1
        again = log.get_alert(alerts[0].alert_id)
        assert again is not None and again.acknowledged_by == "rn-1"
        resolved = log.resolve_alert(alerts[0].alert_id, "md-2")
        assert resolved is not None and resolved.status == AlertStatus.RESOLVED
        assert log.acknowledge_alert(alerts[0].alert_id, "x").status == AlertStatus.RESOLVED  # type: ignore[union-attr]
        assert log.acknowledge_alert("nope", "x") is None

    def test_withdrawn_alerts_close_with_a_chained_record(self, log: ComplianceLog) -> None:
        """Issue 14: the engine's withdrawal closes an open or acknowledged alert as
        `withdrawn` with its chained `alert.withdrawn` record, in one transaction; a resolved
        one stays resolved; nothing is deleted; doing it again changes nothing."""
        alerts = [alert(i) for i in range(4)]
        log.save_alerts(alerts)
        log.append_audit([alert_record(a) for a in alerts])
        log.acknowledge_alert(alerts[1].alert_id, "rn-1")
        log.resolve_alert(alerts[2].alert_id, "md-2")
        withdrawals = [withdrawal(a) for a in alerts[:3]]
        assert log.withdraw_alerts(withdrawals) == 2
        statuses = log.alert_statuses([a.alert_id for a in alerts])
        assert [statuses[a.alert_id] for a in alerts] == [
            AlertStatus.WITHDRAWN,
            AlertStatus.WITHDRAWN,
            AlertStatus.RESOLVED,
            AlertStatus.OPEN,
        ]
        records = {
            r.subject_id: r
            for r in log.audit_records(AuditQuery(kind=AuditKind.ALERT_WITHDRAWN)).items
        }
        assert set(records) == {a.alert_id for a in alerts[:3]}
        detail = orjson.loads(records[alerts[0].alert_id].detail)
        assert detail["reason"] == "discharge_arrived_late" and detail["evidence"] == ["dis"]
        assert log.withdraw_alerts(withdrawals) == 0  # idempotent
        assert log.size() == 4 + 2 + 3
        assert (alerts[0].clinic_id, "warning") in log.open_alert_counts()  # alerts[3] only
        assert log.open_alert_counts()[(alerts[0].clinic_id, "warning")] == 1

    def test_a_withdrawal_recorded_before_its_alert_is_stored_closes_it(
        self, log: ComplianceLog
    ) -> None:
        """The audit sink and `replay --db` append the records before saving the alerts."""
        a = alert(7)
        log.append_audit([alert_record(a), alert_withdrawn(withdrawal(a))])
        assert log.save_alerts([a]) == 1
        assert log.alert_statuses([a.alert_id]) == {a.alert_id: AlertStatus.WITHDRAWN}
        assert log.save_alerts([a]) == 0  # re-delivered: unchanged
        assert log.alert_statuses([a.alert_id]) == {a.alert_id: AlertStatus.WITHDRAWN}

    def test_session_summaries_and_patient_ref_queries(self, log: ComplianceLog) -> None:
        sid = "clinic-0-sess-0"
        recs = [
            record(0, session=sid, clinic="clinic-0", kind=AuditKind.SESSION_OPENED, detail={}),
            record(1, session=sid, clinic="clinic-0"),
            record(2, session=sid, clinic="clinic-0", kind=AuditKind.SESSION_DOSED, detail={}),
            record(3, session=sid, clinic="clinic-0"),
            record(9, session=sid, clinic="clinic-0", kind=AuditKind.SESSION_DISCHARGED, detail={}),
            record(4, session="other", clinic="clinic-0"),
        ]
        a = alert(5, severity=Severity.CRITICAL, session=sid)
        log.append_audit([*recs, alert_record(a)])
        log.save_alerts([a])
        assert log.refresh_sessions([sid, "other"], patient_refs={sid: "pt-1"}) == 2
        assert log.refresh_sessions([sid]) == 1  # patient_ref kept
        summary = log.session_summary(sid)
        assert summary is not None
        assert summary.patient_ref == "pt-1"
        assert summary.alerts_total == summary.alerts_critical == 1
        assert summary.events_accepted == 2 and summary.rules == '["BP_HIGH"]'
        page = log.audit_records(AuditQuery(patient_ref="pt-1"))
        assert {r.session_id for r in page.items} == {sid} and len(page.items) == 6
        assert len(log.alerts(AlertQuery(patient_ref="pt-1")).items) == 1
        assert log.alerts(AlertQuery(patient_ref="pt-2")).items == []
        form = log.get_form(sid)
        assert form is not None and form.due_at is not None
        assert log.overdue_forms(T0 + timedelta(days=8))[0].session_id == sid
        assert log.mark_form_overdue(sid, "a1") and not log.mark_form_overdue(sid, "a2")
        assert log.overdue_forms(T0 + timedelta(days=8)) == []
        submitted = log.submit_form("other", "rn-1", {"ok": True})
        assert submitted is not None and submitted.submitted_by == "rn-1"

    def test_principals_store_only_token_hashes(self, log: ComplianceLog) -> None:
        principal, token = log.create_principal("aud", PrincipalRole.AUDITOR, ["clinic-1"])
        assert token not in principal.token_hash
        found = log.principal_for_token(token)
        assert found is not None and found.name == "aud" and found.clinics == '["clinic-1"]'
        assert log.principal_for_token(token + "x") is None

    def test_device_principals_are_a_storage_role(self, log: ComplianceLog) -> None:
        """Embedded mode's device tokens go through the one ``create_principal`` path."""
        principal, token = log.create_principal("chair-1", PrincipalRole.DEVICE, ["clinic-1"])
        assert principal.role == "device"
        found = log.principal_for_token(token)
        assert found is not None and PrincipalRole(found.role) is PrincipalRole.DEVICE
        assert found.clinics == '["clinic-1"]' and token not in found.token_hash

    # -- queries --------------------------------------------------------------------------

    def test_queries_filter_and_paginate_in_a_stable_order(self, log: ComplianceLog) -> None:
        recs = [record(i, at=T0 + timedelta(minutes=i // 3)) for i in range(200)]  # ties
        alerts = [
            alert(
                i,
                rule="BP_HIGH" if i % 2 else "SPO2_LOW",
                severity=Severity.CRITICAL if i % 5 == 0 else Severity.WARNING,
                clinic=f"clinic-{i % 3}",
            )
            for i in range(60)
        ]
        log.append_audit(recs[:100])
        log.append_audit([*(alert_record(a) for a in alerts), *recs[100:]])
        log.save_alerts(alerts)

        def walk(q: AuditQuery) -> list[str]:
            out, cursor = [], None
            while True:
                page = log.audit_records(
                    AuditQuery(
                        **{**{f: getattr(q, f) for f in q.__dataclass_fields__}, "cursor": cursor}
                    )
                )
                out.extend(r.record_id for r in page.items)
                if page.next_cursor is None:
                    return out
                cursor = page.next_cursor

        everything = walk(AuditQuery(limit=7))
        assert len(everything) == len(set(everything)) == 260
        full = log.audit_records(AuditQuery(limit=1000)).items
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
        crit = walk(AuditQuery(rule="SPO2_LOW", severity="critical"))
        assert (
            len(crit)
            == len([a for a in alerts if a.rule == "SPO2_LOW" and a.severity == Severity.CRITICAL])
            > 0
        )
        assert walk(AuditQuery(kind="alert.raised", clinics=frozenset())) == []

        apage = log.alerts(AlertQuery(clinic_id="clinic-0", rule="BP_HIGH", limit=3))
        seen = [a.alert_id for a in apage.items]
        while apage.next_cursor:
            apage = log.alerts(
                AlertQuery(clinic_id="clinic-0", rule="BP_HIGH", limit=3, cursor=apage.next_cursor)
            )
            seen.extend(a.alert_id for a in apage.items)
        assert set(seen) == {
            a.alert_id for a in alerts if a.clinic_id == "clinic-0" and a.rule == "BP_HIGH"
        }
        assert len(seen) == len(set(seen))
        records, timeline_alerts = log.session_timeline("clinic-0-sess-0")
        assert records and all(r.session_id == "clinic-0-sess-0" for r in records)
        assert len(timeline_alerts) == 60
        with pytest.raises(CursorError):
            log.audit_records(AuditQuery(cursor="garbage!"))


class TestSQLite(ComplianceLogContract):
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

    def test_embedded_mode_is_wal_with_full_sync(self, log: ComplianceLog) -> None:
        with log.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL


@pytest.mark.postgres
class TestPostgres(ComplianceLogContract):
    @pytest.fixture(autouse=True)
    def _database(self, pg_database_factory) -> None:  # type: ignore[no-untyped-def]
        self._url = pg_database_factory()

    def url(self) -> str:
        return self._url

    def bypass_triggers(self, conn: Connection) -> None:
        # The table owner can do this; a superuser could also SET session_replication_role.
        conn.execute(text("ALTER TABLE audit_records DISABLE TRIGGER USER"))
        conn.execute(text("ALTER TABLE audit_tree_heads DISABLE TRIGGER USER"))

    def test_writers_of_the_same_alerts_in_other_orders_do_not_deadlock(self) -> None:
        """The audit sink and the notifier both store the alerts topic's alerts, each in the
        order its partitions arrived: one writer's batch is another's reversed. Each takes
        the rows' locks in one order (by id), so neither waits on the other in a cycle."""
        logs = [ComplianceLog.open(self.url()) for _ in range(2)]
        try:
            for round_ in range(6):
                batch = [alert(round_ * 1000 + i) for i in range(400)]
                orders = [batch, batch[::-1]]
                with ThreadPoolExecutor(2) as pool:
                    saved = list(pool.map(ComplianceLog.save_alerts, logs, orders))
                assert sum(saved) == len(batch)
        finally:
            for each in logs:
                each.close()

    def test_truncate_is_refused(self, log: ComplianceLog) -> None:
        log.append_audit([record(1)])
        with pytest.raises(DatabaseError, match="append-only"), log.engine.begin() as conn:
            conn.execute(text("TRUNCATE audit_records"))
