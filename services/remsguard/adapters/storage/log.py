"""``ComplianceLog``: one object over the compliance log's repositories, for the callers
written before the split. It only composes and delegates; a new caller takes the repository it
uses instead:

============================  ====================================================================
``AuditLog`` (``.audit``)     appending records, ``recorded_change``, size, records and paged
                              queries of them, signed tree heads, inclusion/consistency proofs
``AlertStore``                the alerts table: save, withdraw, acknowledge, resolve, shelve,
(``.alert_store``)            unshelve, inhibited alerts, statuses, counts, paged queries
``SessionSummaries``          session summaries (``refresh``), a session's timeline, the
(``.summaries``)              sessions with records since an index
``MonitoringForms``           the monitoring form rows: get, submit, overdue, mark overdue
(``.forms``)
``SessionEvents``             stored events in wire form and the records vouching for them
(``.events``)
``PrincipalStore``            API principals and tokens (``principals.py``)
``RegistryStore``             the REMS registry (``registry.py``)
============================  ====================================================================

Every repository over this façade shares its engine and its clock (``now``). One operation
spans three of them: ``record_decisions`` stores a step's accepted events, alerts and audit
records in one transaction (one commit, one fsync on SQLite) for the embedded runtime.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine

from remsguard.adapters.storage.alert_store import AlertStore
from remsguard.adapters.storage.audit_log import (
    AppendResult,
    AuditLog,
    InclusionProof,
    RecordedChange,
    head_json,
)
from remsguard.adapters.storage.db import make_engine, migrate
from remsguard.adapters.storage.models import (
    AlertRow,
    ApiPrincipal,
    AuditRow,
    MonitoringForm,
    PrincipalRole,
    SessionEventRow,
    SessionSummary,
    TreeHead,
)
from remsguard.adapters.storage.monitoring_forms import MonitoringForms
from remsguard.adapters.storage.principals import (
    PrincipalStore,
    hash_token,
    unvouched_principal_records,
)
from remsguard.adapters.storage.queries import (
    MAX_LIMIT,
    AlertQuery,
    AuditQuery,
    CursorError,
    Page,
)
from remsguard.adapters.storage.session_events import (
    SessionEvents,
    VouchedEvents,
    unvouched_event_records,
)
from remsguard.adapters.storage.session_summaries import SessionSummaries
from remsguard.adapters.storage.signing import HeadSigner
from remsguard.domain.decisions import Alert, AuditRecord, Withdrawal
from remsguard.domain.events import Event

__all__ = [
    "MAX_LIMIT",
    "AlertQuery",
    "AppendResult",
    "AuditQuery",
    "ComplianceLog",
    "CursorError",
    "DecisionsRecorded",
    "InclusionProof",
    "Page",
    "hash_token",
    "head_json",
]


@dataclass(frozen=True, slots=True)
class DecisionsRecorded:
    """What ``record_decisions`` stored: new alerts, and the audit append's result."""

    new_alerts: int
    audit: AppendResult


class ComplianceLog:
    """The compliance log over one database (PostgreSQL or SQLite): the repositories above,
    each as an attribute, and their methods under the names callers used before the split."""

    def __init__(self, engine: Engine, *, now: Callable[[], datetime] | None = None) -> None:
        self.engine = engine
        self._now = now or (lambda: datetime.now(UTC))
        clock = lambda: self._now()  # noqa: E731 - read late: a test may set `_now`
        self.audit = AuditLog(engine, now=clock)
        self.reader = self.audit.reader  # reads only (``db.reader``)
        self.alert_store = AlertStore(self.audit)
        self.summaries = SessionSummaries(engine, now=clock)
        self.forms = MonitoringForms(self.audit)
        self.events = SessionEvents(self.audit)
        self.principals = PrincipalStore(self.audit, clock)

    @classmethod
    def open(cls, url: str, *, run_migrations: bool = True, **engine_kwargs: Any) -> ComplianceLog:
        engine = make_engine(url, **engine_kwargs)
        if run_migrations:
            migrate(engine)
        return cls(engine)

    @property
    def local(self) -> bool:
        """The database is a local SQLite file: a short read costs less than handing it to a
        worker thread, and never waits for a writer (WAL)."""
        return self.engine.dialect.name == "sqlite"

    def close(self) -> None:
        self.principals.close()
        self.engine.dispose()

    def __enter__(self) -> ComplianceLog:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- one step of decisions, in one transaction ----------------------------------------

    def record_decisions(
        self, events: Iterable[Event], alerts: Iterable[Alert], audit: Iterable[AuditRecord]
    ) -> DecisionsRecorded:
        """Store accepted events (with their ``event.stored`` records), then alerts, then
        audit records, in one transaction holding the append lock: all or nothing, each
        idempotent by id as its repository's own method is."""
        with self.audit.recorded_change() as change:
            self.events.save_in(change, events)
            new_alerts = self.alert_store.save_in(change.conn, alerts)
            return DecisionsRecorded(new_alerts, change.append(audit))

    # -- AuditLog -------------------------------------------------------------------------

    def append_audit(self, records: Iterable[AuditRecord]) -> AppendResult:
        return self.audit.append(records)

    def recorded_change(self) -> AbstractContextManager[RecordedChange]:
        return self.audit.recorded_change()

    def size(self) -> int:
        return self.audit.size()

    def get_record(self, record_id: str) -> AuditRow | None:
        return self.audit.record(record_id)

    def audit_records(self, q: AuditQuery) -> Page[AuditRow]:
        return self.audit.records(q)

    def latest_head(self) -> TreeHead | None:
        return self.audit.latest_head()

    def head(self, tree_size: int) -> TreeHead | None:
        return self.audit.head(tree_size)

    def heads(self) -> list[TreeHead]:
        return self.audit.heads()

    def sign_head(self, signer: HeadSigner) -> TreeHead:
        return self.audit.sign_head(signer)

    def inclusion_proof(
        self, record_id: str, tree_size: int | None = None
    ) -> InclusionProof | None:
        return self.audit.inclusion_proof(record_id, tree_size)

    def consistency_proof(self, old_size: int, new_size: int) -> list[str]:
        return self.audit.consistency_proof(old_size, new_size)

    def chain_unvouched_rows(self, conn: Connection) -> int:
        """Append the records that vouch for ``session_events`` and ``api_principals`` rows
        stored before the log chained them (migration 0005); returns how many were added.
        Rows are vouched for as they are now: the chain protects them from here on."""
        self.audit.lock(conn)
        records = [*unvouched_event_records(conn), *unvouched_principal_records(conn)]
        return self.audit.append_in(conn, records).inserted

    # -- AlertStore -----------------------------------------------------------------------

    def save_alerts(self, alerts: Iterable[Alert]) -> int:
        return self.alert_store.save(alerts)

    def withdraw_alerts(self, withdrawals: Iterable[Withdrawal]) -> int:
        return self.alert_store.withdraw(withdrawals)

    def shelve_alert(
        self, alert_id: str, by: str, until: datetime, reason: str, at: datetime | None = None
    ) -> AlertRow | None:
        return self.alert_store.shelve(alert_id, by, until, reason, at)

    def unshelve_due(self, now: datetime) -> list[AlertRow]:
        return self.alert_store.unshelve_due(now)

    def inhibited_alerts(self, alert_id: str) -> list[AlertRow]:
        return self.alert_store.inhibited_by(alert_id)

    def get_alert(self, alert_id: str) -> AlertRow | None:
        return self.alert_store.get(alert_id)

    def alert_statuses(self, alert_ids: Sequence[str]) -> dict[str, str]:
        return self.alert_store.statuses(alert_ids)

    def open_alert_counts(self) -> dict[tuple[str, str], int]:
        return self.alert_store.open_counts()

    def alerts(self, q: AlertQuery) -> Page[AlertRow]:
        return self.alert_store.page(q)

    # -- SessionSummaries -----------------------------------------------------------------

    def refresh_sessions(
        self,
        session_ids: Iterable[str],
        *,
        patient_refs: Mapping[str, str | None] | None = None,
        protocols: Mapping[str, str | None] | None = None,
    ) -> int:
        return self.summaries.refresh(session_ids, patient_refs=patient_refs, protocols=protocols)

    def session_summary(self, session_id: str) -> SessionSummary | None:
        return self.summaries.get(session_id)

    def sessions_since(self, log_index: int, limit: int = 10_000) -> tuple[list[str], int]:
        return self.summaries.sessions_since(log_index, limit)

    def session_timeline(self, session_id: str) -> tuple[list[AuditRow], list[AlertRow]]:
        return self.summaries.timeline(session_id)

    # -- MonitoringForms ------------------------------------------------------------------

    def get_form(self, session_id: str) -> MonitoringForm | None:
        return self.forms.get(session_id)

    def overdue_forms(
        self, now: datetime, *, clinics: frozenset[str] | None = None
    ) -> list[MonitoringForm]:
        return self.forms.overdue(now, clinics=clinics)

    def forms_overdue_by_clinic(self, now: datetime) -> dict[str, int]:
        return self.forms.overdue_by_clinic(now)

    def mark_form_overdue(self, session_id: str, alert_id: str) -> bool:
        return self.forms.mark_overdue(session_id, alert_id)

    # -- SessionEvents --------------------------------------------------------------------

    def save_events(self, events: Iterable[Event]) -> int:
        return self.events.save(events)

    def session_events(self, session_id: str) -> list[SessionEventRow]:
        return self.events.of_session(session_id)

    def vouched_session_events(self, session_id: str) -> VouchedEvents:
        return self.events.vouched(session_id)

    # -- PrincipalStore -------------------------------------------------------------------

    def create_principal(
        self, name: str, role: PrincipalRole, clinics: Sequence[str] = ()
    ) -> tuple[ApiPrincipal, str]:
        return self.principals.create_row(name, role, clinics)

    def principal_for_token(self, token: str) -> ApiPrincipal | None:
        return self.principals.row_for_token(token)
