"""``SessionSummaries``, ``MonitoringForms`` and ``SessionEvents``: the session read models and
the rows vouched for by records, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine

from remsguard.adapters.storage import (
    AlertQuery,
    AlertStore,
    AuditLog,
    AuditQuery,
    MonitoringForms,
    SessionEvents,
    SessionSummaries,
    verify_log,
)
from remsguard.domain.decisions import AuditKind, Severity
from remsguard.domain.events import SessionOpened

from .backends import Backend, PostgresBackend, SQLiteBackend
from .factories import T0, alert, alert_record, record

SID = "clinic-0-sess-0"


class SessionSummariesContract(Backend):
    @pytest.fixture
    def summaries(self, engine: Engine) -> SessionSummaries:
        return SessionSummaries(engine)

    @pytest.fixture
    def forms(self, audit: AuditLog) -> MonitoringForms:
        return MonitoringForms(audit)

    def _session(self, audit: AuditLog) -> None:
        """A session opened, dosed and discharged, with one critical alert; another session."""
        recs = [
            record(0, session=SID, clinic="clinic-0", kind=AuditKind.SESSION_OPENED, detail={}),
            record(1, session=SID, clinic="clinic-0"),
            record(2, session=SID, clinic="clinic-0", kind=AuditKind.SESSION_DOSED, detail={}),
            record(3, session=SID, clinic="clinic-0"),
            record(9, session=SID, clinic="clinic-0", kind=AuditKind.SESSION_DISCHARGED, detail={}),
            record(4, session="other", clinic="clinic-0"),
        ]
        a = alert(5, severity=Severity.CRITICAL, session=SID)
        audit.append([*recs, alert_record(a)])
        AlertStore(audit).save([a])

    def test_session_summaries_and_patient_ref_queries(
        self, audit: AuditLog, summaries: SessionSummaries
    ) -> None:
        self._session(audit)
        assert summaries.refresh([SID, "other"], patient_refs={SID: "pt-1"}) == 2
        assert summaries.refresh([SID]) == 1  # patient_ref kept
        summary = summaries.get(SID)
        assert summary is not None
        assert summary.patient_ref == "pt-1"
        assert summary.alerts_total == summary.alerts_critical == 1
        assert summary.events_accepted == 2 and summary.rules == '["BP_HIGH"]'
        page = audit.records(AuditQuery(patient_ref="pt-1"))
        assert {r.session_id for r in page.items} == {SID} and len(page.items) == 6
        alerts = AlertStore(audit)
        assert len(alerts.page(AlertQuery(patient_ref="pt-1")).items) == 1
        assert alerts.page(AlertQuery(patient_ref="pt-2")).items == []
        opened = summaries.opened_between(clinic_id="clinic-0", since=T0, until=T0 + timedelta(1))
        assert [s.session_id for s in opened] == [SID]  # "other" was never opened
        assert summaries.opened_between(clinics=frozenset({"clinic-9"})) == []

    def test_a_session_opened_event_names_the_patient_and_protocol(
        self, audit: AuditLog, summaries: SessionSummaries
    ) -> None:
        self._session(audit)
        opened = SessionOpened(
            event_id="open-1",
            session_id=SID,
            clinic_id="clinic-0",
            occurred_at=T0,
            patient_ref="pt-7",
            protocol="spravato-rems",
        )
        assert SessionEvents(audit).save([opened]) == 1
        summaries.refresh([SID])
        summary = summaries.get(SID)
        assert summary is not None
        assert (summary.patient_ref, summary.protocol) == ("pt-7", "spravato-rems")

    def test_timeline_and_sessions_since(
        self, audit: AuditLog, summaries: SessionSummaries
    ) -> None:
        self._session(audit)
        records, alerts = summaries.timeline(SID)
        assert len(records) == 6 and all(r.session_id == SID for r in records)
        assert [a.session_id for a in alerts] == [SID]
        assert summaries.sessions_since(0) == ([SID, "other"], 7)
        assert summaries.sessions_since(0, limit=2) == ([SID], 2)
        assert summaries.sessions_since(7) == ([], 7)

    def test_forms_are_due_after_discharge_and_submitted_once(
        self, audit: AuditLog, summaries: SessionSummaries, forms: MonitoringForms
    ) -> None:
        self._session(audit)
        summaries.refresh([SID, "other"])
        form = forms.get(SID)
        assert form is not None and form.due_at is not None
        assert forms.overdue(T0 + timedelta(days=8))[0].session_id == SID
        assert forms.overdue(T0 + timedelta(days=8), clinics=frozenset({"clinic-1"})) == []
        assert forms.overdue_by_clinic(T0 + timedelta(days=8)) == {"clinic-0": 1}
        assert forms.mark_overdue(SID, "a1") and not forms.mark_overdue(SID, "a2")
        assert forms.overdue(T0 + timedelta(days=8)) == []
        submitted = forms.submit("other", "rn-1", {"ok": True})
        assert submitted is not None and submitted.submitted_by == "rn-1"
        again = forms.submit("other", "rn-2", {"ok": False})
        assert again is not None and again.submitted_by == "rn-1"  # first submission wins
        kinds = [r.kind for r in audit.records(AuditQuery(session_id="other")).items]
        assert kinds.count("form.submitted") == 1
        assert verify_log(audit.engine).ok

    def test_stored_events_are_vouched_for_by_their_records(self, audit: AuditLog) -> None:
        events = SessionEvents(audit)
        opened = SessionOpened(
            event_id="ev-1",  # record(1) is its `event.accepted`
            session_id=SID,
            clinic_id="clinic-0",
            occurred_at=T0,
            patient_ref="pt-1",
            protocol="spravato-rems",
        )
        audit.append([record(1, session=SID, clinic="clinic-0")])
        assert events.save([opened, opened]) == 1
        assert events.save([opened]) == 0
        assert [e.event_id for e in events.of_session(SID)] == ["ev-1"]
        self.tamper(audit.engine, "UPDATE session_events SET payload = '{}'")
        vouched = events.vouched(SID)
        assert vouched.events == [] and vouched.unvouched == ["ev-1"]
        assert not verify_log(audit.engine).ok


class TestSQLite(SQLiteBackend, SessionSummariesContract):
    pass


@pytest.mark.postgres
class TestPostgres(PostgresBackend, SessionSummariesContract):
    pass
