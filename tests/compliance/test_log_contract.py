"""``ComplianceLog``, the façade over the split repositories, on SQLite and PostgreSQL: the
names callers used before the split reach the same rows as the repositories, every
repository shares its clock, and migration 0005's backfill still vouches for old rows.

``record_decisions`` stores a step (events, alerts, records) all or nothing, and reads through
the log's ``reader`` never wait for a writer holding its transaction open (embedded ingest
writes while auditors read).

The repositories' own contracts: ``test_audit_log_contract.py``,
``test_alert_store_contract.py``, ``test_session_summaries_contract.py``,
``test_principals_contract.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text

from remsguard.adapters.storage import (
    AlertQuery,
    AlertStatus,
    AuditQuery,
    ComplianceLog,
    HeadSigner,
    PrincipalRole,
    verify_log,
)
from remsguard.domain.decisions import AuditKind, AuditRecord
from remsguard.domain.events import SessionOpened

from .backends import Backend, PostgresBackend, SQLiteBackend
from .factories import T0, alert, alert_record, record, withdrawal


class ComplianceLogContract(Backend):
    @pytest.fixture
    def log(self) -> Iterator[ComplianceLog]:
        log = ComplianceLog.open(self.url())
        yield log
        log.close()

    def test_a_step_is_recorded_all_or_nothing(self, log: ComplianceLog) -> None:
        sid = "clinic-0-sess-1"
        opened = SessionOpened(
            event_id="ev-1", session_id=sid, clinic_id="clinic-0", occurred_at=T0, patient_ref="p"
        )
        a = alert(3)

        def failing_midway() -> Iterator[AuditRecord]:
            yield alert_record(a)
            raise OSError("disk full")  # after the events and the alert were inserted

        with pytest.raises(OSError, match="disk full"):
            log.record_decisions([opened], [a], failing_midway())
        assert log.get_alert(a.alert_id) is None and log.session_events(sid) == []
        assert log.size() == 0

        first = log.record_decisions([opened], [a], [alert_record(a)])
        assert first.new_alerts == 1 and first.audit.inserted == 1
        assert [e.event_id for e in log.session_events(sid)] == []  # not yet recorded as accepted
        again = log.record_decisions([opened], [a], [alert_record(a)])  # a replayed step
        assert again.new_alerts == 0 and again.audit.inserted == 0 and again.audit.duplicates == 1
        assert log.get_alert(a.alert_id) is not None
        assert verify_log(log.engine).ok

    def test_writers_of_one_process_take_turns(self, log: ComplianceLog) -> None:
        """The runtime's recorder, the alerting service and the summary refresh write from
        their own threads at once; every write lands and the chain verifies (a failed write
        in between leaves the log writable: see the test above)."""

        def writer(n: int) -> None:
            for i in range(20):
                step = record(1000 * n + i, session=f"s{n}", clinic="clinic-0", detail={})
                log.record_decisions([], [], [step])

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert log.size() == 80
        assert verify_log(log.engine).ok

    def test_reads_do_not_wait_for_a_writer(self, log: ComplianceLog) -> None:
        _, token = log.create_principal("auditor-1", PrincipalRole.AUDITOR)
        holding, release = threading.Event(), threading.Event()

        def writer() -> None:  # appends, then holds its transaction (and the write lock)
            with log.recorded_change() as change:
                change.append([record(5, session="s", clinic="clinic-0", detail={})])
                holding.set()
                release.wait(30)

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            assert holding.wait(10)
            started = time.monotonic()
            assert log.principals.for_token(token) is not None
            page = log.audit_records(AuditQuery(limit=10))
            waited = time.monotonic() - started
        finally:
            release.set()
            thread.join()
        assert waited < 2.0, f"reads waited {waited:.1f} s for the writer"
        assert [r.record_id for r in page.items if r.record_id == record(5).record_id] == []
        assert log.size() == 2  # the principal's record and the writer's, once committed

    def test_the_old_names_reach_the_repositories(self, log: ComplianceLog) -> None:
        sid = "clinic-0-sess-0"
        a, b = alert(1), alert(2)
        opened = SessionOpened(
            event_id="ev-0", session_id=sid, clinic_id="clinic-0", occurred_at=T0, patient_ref="p"
        )
        recs = [
            record(0, session=sid, clinic="clinic-0", kind=AuditKind.SESSION_OPENED, detail={}),
            record(9, session=sid, clinic="clinic-0", kind=AuditKind.SESSION_DISCHARGED, detail={}),
        ]
        assert log.append_audit([*recs, alert_record(a), alert_record(b)]).inserted == 4
        assert log.save_alerts([a, b]) == 2 and log.save_events([opened]) == 1
        assert log.alert_store.acknowledge(a.alert_id, "rn").status == AlertStatus.ACKNOWLEDGED  # type: ignore[union-attr]
        assert log.alert_store.resolve(a.alert_id, "md").status == AlertStatus.RESOLVED  # type: ignore[union-attr]
        shelved = log.shelve_alert(b.alert_id, "rn", T0 + timedelta(hours=1), "busy", at=T0)
        assert shelved is not None and shelved.status == AlertStatus.SHELVED
        assert [r.alert_id for r in log.unshelve_due(T0 + timedelta(hours=1))] == [b.alert_id]
        assert log.withdraw_alerts([withdrawal(b)]) == 1
        assert log.alert_statuses([b.alert_id]) == {b.alert_id: AlertStatus.WITHDRAWN}
        assert _field("status", log.get_alert(a.alert_id)) == [AlertStatus.RESOLVED]
        assert log.inhibited_alerts(a.alert_id) == [] and log.open_alert_counts() == {}
        both = sorted([a.alert_id, b.alert_id])
        assert _field("alert_id", *log.alerts(AlertQuery()).items) == both
        assert log.refresh_sessions([sid], patient_refs={sid: "p"}) == 1
        assert _field("patient_ref", log.session_summary(sid)) == ["p"]
        assert [s.session_id for s in log.summaries.opened_between()] == [sid]
        assert log.sessions_since(0)[0] == [sid]
        records, alerts = log.session_timeline(sid)
        assert len(records) == log.size() and len(alerts) == 2  # all of this session
        assert log.session_events(sid) == [] and log.vouched_session_events(sid).unvouched == []
        late = T0 + timedelta(days=8)
        assert log.forms_overdue_by_clinic(late) == {"clinic-0": 1}
        assert [f.session_id for f in log.overdue_forms(late)] == [sid]
        assert log.mark_form_overdue(sid, a.alert_id)
        assert log.forms.submit(sid, "rn").submitted_by == "rn"  # type: ignore[union-attr]
        assert _field("submitted_by", log.get_form(sid)) == ["rn"]
        principal, token = log.create_principal("aud", PrincipalRole.AUDITOR)
        assert _field("principal_id", log.principal_for_token(token)) == [principal.principal_id]
        signer = HeadSigner(Ed25519PrivateKey.generate())
        head = log.sign_head(signer)
        assert head.tree_size == log.size()
        assert (
            _field("root_hash", log.latest_head(), log.head(head.tree_size), *log.heads())
            == [head.root_hash] * 3
        )
        assert log.inclusion_proof(recs[0].record_id) is not None
        assert log.consistency_proof(1, head.tree_size)
        first = log.get_record(recs[0].record_id)
        assert first is not None and first.log_index == 0
        page = log.audit_records(AuditQuery(limit=1))
        assert _field("record_id", *page.items) == [first.record_id]
        with log.recorded_change() as change:
            change.append([record(50)])
        assert verify_log(log.engine, signer.public_key).ok

    def test_every_repository_reads_the_logs_clock_late(self, log: ComplianceLog) -> None:
        """``test_tamper.py`` drives the log's clock by setting ``_now``."""
        log._now = lambda: T0  # type: ignore[method-assign]
        log.append_audit([record(1)])
        log.save_alerts([alert(1)])
        log.refresh_sessions([record(1).session_id or ""])
        row = log.get_record(record(1).record_id)
        stored = log.get_alert(alert(1).alert_id)
        summary = log.session_summary(record(1).session_id or "")
        assert row is not None and stored is not None and summary is not None
        stamps = {row.appended_at, stored.recorded_at, summary.updated_at}
        assert {s.replace(tzinfo=T0.tzinfo) for s in stamps} == {T0}

    def test_rows_stored_before_the_chain_vouched_for_them_are_backfilled(
        self, log: ComplianceLog
    ) -> None:
        """Migration 0005: old rows get their records, once, as they are now."""
        log.create_principal("aud", PrincipalRole.AUDITOR)
        with log.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO api_principals (principal_id, name, token_hash, role, clinics, "
                    "created_at) VALUES ('p2', 'old', 'h', 'auditor', '[]', :at)"
                ),
                {"at": T0},
            )
        with log.engine.begin() as conn:
            assert log.chain_unvouched_rows(conn) == 1
        with log.engine.begin() as conn:
            assert log.chain_unvouched_rows(conn) == 0


def _field(name: str, *rows: object) -> list[object]:
    """One field of each row: rows are compared by a field, not by ``==`` on ORM objects."""
    assert all(row is not None for row in rows)
    return [getattr(row, name) for row in rows]


class TestSQLite(SQLiteBackend, ComplianceLogContract):
    pass


@pytest.mark.postgres
class TestPostgres(PostgresBackend, ComplianceLogContract):
    pass
