"""``AlertStore``'s contract, on SQLite and PostgreSQL: alerts saved once, each lifecycle step
with its chained record, withdrawals whichever arrives first, shelves, paged queries, and two
writers of the same alerts never deadlocking."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta

import orjson
import pytest

from remsguard.adapters.storage import (
    AlertQuery,
    AlertStatus,
    AlertStore,
    AuditLog,
    AuditQuery,
    CursorError,
    make_engine,
    verify_log,
)
from remsguard.domain.decisions import AuditKind, Severity, alert_withdrawn

from .backends import Backend, PostgresBackend, SQLiteBackend
from .factories import T0, alert, alert_record, withdrawal


class AlertStoreContract(Backend):
    @pytest.fixture
    def alerts(self, audit: AuditLog) -> AlertStore:
        return AlertStore(audit)

    def test_alerts_idempotent_with_lifecycle(self, alerts: AlertStore) -> None:
        batch = [alert(i) for i in range(5)]
        alerts.audit.append([alert_record(a) for a in [*batch, alert(9)]])
        assert alerts.save(batch) == 5
        acked = alerts.acknowledge(batch[0].alert_id, "rn-1")
        assert acked is not None and acked.status == AlertStatus.ACKNOWLEDGED
        assert alerts.save([*batch, alert(9)]) == 1
        again = alerts.get(batch[0].alert_id)
        assert again is not None and again.acknowledged_by == "rn-1"
        resolved = alerts.resolve(batch[0].alert_id, "md-2")
        assert resolved is not None and resolved.status == AlertStatus.RESOLVED
        assert alerts.acknowledge(batch[0].alert_id, "x").status == AlertStatus.RESOLVED  # type: ignore[union-attr]
        assert alerts.acknowledge("nope", "x") is None
        kinds = [r.kind for r in alerts.audit.records(AuditQuery()).items]
        assert kinds[6:] == [AuditKind.ALERT_ACKNOWLEDGED, AuditKind.ALERT_RESOLVED]
        assert verify_log(alerts.audit.engine).ok

    def test_withdrawn_alerts_close_with_a_chained_record(self, alerts: AlertStore) -> None:
        """Issue 14: the engine's withdrawal closes an open or acknowledged alert as
        `withdrawn` with its chained `alert.withdrawn` record, in one transaction; a resolved
        one stays resolved; nothing is deleted; doing it again changes nothing."""
        batch = [alert(i) for i in range(4)]
        audit = alerts.audit
        alerts.save(batch)
        audit.append([alert_record(a) for a in batch])
        alerts.acknowledge(batch[1].alert_id, "rn-1")
        alerts.resolve(batch[2].alert_id, "md-2")
        withdrawals = [withdrawal(a) for a in batch[:3]]
        assert alerts.withdraw(withdrawals) == 2
        statuses = alerts.statuses([a.alert_id for a in batch])
        assert [statuses[a.alert_id] for a in batch] == [
            AlertStatus.WITHDRAWN,
            AlertStatus.WITHDRAWN,
            AlertStatus.RESOLVED,
            AlertStatus.OPEN,
        ]
        records = {
            r.subject_id: r for r in audit.records(AuditQuery(kind=AuditKind.ALERT_WITHDRAWN)).items
        }
        assert set(records) == {a.alert_id for a in batch[:3]}
        detail = orjson.loads(records[batch[0].alert_id].detail)
        assert detail["reason"] == "discharge_arrived_late" and detail["evidence"] == ["dis"]
        assert alerts.withdraw(withdrawals) == 0  # idempotent
        assert audit.size() == 4 + 2 + 3
        assert alerts.open_counts() == {(batch[0].clinic_id, "warning"): 1}  # batch[3] only
        assert verify_log(audit.engine).ok

    def test_a_withdrawal_recorded_before_its_alert_is_stored_closes_it(
        self, alerts: AlertStore
    ) -> None:
        """The audit sink and `replay --db` append the records before saving the alerts."""
        a = alert(7)
        appended = alerts.audit.append([alert_record(a), alert_withdrawn(withdrawal(a))])
        assert appended.withdrawn == 0  # no row yet
        assert alerts.save([a]) == 1
        assert alerts.statuses([a.alert_id]) == {a.alert_id: AlertStatus.WITHDRAWN}
        assert alerts.save([a]) == 0  # re-delivered: unchanged
        assert alerts.statuses([a.alert_id]) == {a.alert_id: AlertStatus.WITHDRAWN}

    def test_a_withdrawal_appended_after_its_alert_closes_it(self, alerts: AlertStore) -> None:
        """A path that carries only audit records (the audit topic) withdraws too."""
        a = alert(8)
        alerts.save([a])
        appended = alerts.audit.append([alert_record(a), alert_withdrawn(withdrawal(a))])
        assert appended.withdrawn == 1
        assert alerts.statuses([a.alert_id]) == {a.alert_id: AlertStatus.WITHDRAWN}

    def test_shelved_until_due_then_back_as_it_was(self, alerts: AlertStore) -> None:
        first, second = alert(1), alert(2)
        alerts.audit.append([alert_record(first), alert_record(second)])
        alerts.save([first, second])
        alerts.acknowledge(second.alert_id, "rn-1")
        until = T0 + timedelta(minutes=30)
        for a in (first, second):
            shelved = alerts.shelve(a.alert_id, "rn-1", until, "on the phone", at=T0)
            assert shelved is not None and shelved.status == AlertStatus.SHELVED
        assert alerts.unshelve_due(until - timedelta(seconds=1)) == []
        back = {row.alert_id: row.status for row in alerts.unshelve_due(until)}
        assert back == {
            first.alert_id: AlertStatus.OPEN,
            second.alert_id: AlertStatus.ACKNOWLEDGED,
        }
        assert alerts.unshelve_due(until + timedelta(hours=1)) == []
        kinds = [r.kind for r in alerts.audit.records(AuditQuery()).items]
        assert kinds.count(AuditKind.ALERT_SHELVED) == kinds.count(AuditKind.ALERT_UNSHELVED) == 2
        assert verify_log(alerts.audit.engine).ok

    def test_a_shelved_alert_the_engine_withdraws_stays_withdrawn(self, alerts: AlertStore) -> None:
        """A shelf is staff's pause, a withdrawal the engine's verdict: the withdrawal closes
        the shelved row (its shelf cleared), and the shelf's expiry never reopens it. An alert
        on a shelf that nothing withdraws comes back as before."""
        withdrawn, kept = alert(1), alert(2)
        alerts.audit.append([alert_record(withdrawn), alert_record(kept)])
        alerts.save([withdrawn, kept])
        until = T0 + timedelta(minutes=30)
        for a in (withdrawn, kept):
            alerts.shelve(a.alert_id, "rn-1", until, "on the phone", at=T0)
        assert alerts.withdraw([withdrawal(withdrawn)]) == 1
        row = alerts.get(withdrawn.alert_id)
        assert row is not None and row.status == AlertStatus.WITHDRAWN
        assert row.shelved_until is None and row.shelved_by is None
        back = alerts.unshelve_due(until)
        assert [(r.alert_id, r.status) for r in back] == [(kept.alert_id, AlertStatus.OPEN)]
        assert alerts.statuses([withdrawn.alert_id]) == {withdrawn.alert_id: AlertStatus.WITHDRAWN}
        assert verify_log(alerts.audit.engine).ok

    def test_inhibited_alerts_are_found_by_their_carrier(self, alerts: AlertStore) -> None:
        carrier = alert(1, rule="BP_CRISIS", severity=Severity.CRITICAL)
        lower = replace(alert(2, rule="BP_RISE"), inhibited_by=carrier.alert_id)
        alerts.save([carrier, lower, alert(3)])
        assert [row.alert_id for row in alerts.inhibited_by(carrier.alert_id)] == [lower.alert_id]
        assert alerts.inhibited_by(lower.alert_id) == []

    def test_queries_filter_and_paginate_in_a_stable_order(self, alerts: AlertStore) -> None:
        batch = [
            alert(
                i,
                rule="BP_HIGH" if i % 2 else "SPO2_LOW",
                severity=Severity.CRITICAL if i % 5 == 0 else Severity.WARNING,
                clinic=f"clinic-{i % 3}",
            )
            for i in range(60)
        ]
        alerts.save(batch)
        query = AlertQuery(clinic_id="clinic-0", rule="BP_HIGH", limit=3)
        page = alerts.page(query)
        seen = [a.alert_id for a in page.items]
        while page.next_cursor:
            page = alerts.page(replace(query, cursor=page.next_cursor))
            seen.extend(a.alert_id for a in page.items)
        assert set(seen) == {
            a.alert_id for a in batch if a.clinic_id == "clinic-0" and a.rule == "BP_HIGH"
        }
        assert len(seen) == len(set(seen))
        crit = alerts.page(AlertQuery(severity="critical", limit=1000)).items
        assert {a.alert_id for a in crit} == {
            a.alert_id for a in batch if a.severity == Severity.CRITICAL
        }
        assert alerts.page(AlertQuery(clinics=frozenset())).items == []
        with pytest.raises(CursorError):
            alerts.page(AlertQuery(cursor="garbage!"))


class TestSQLite(SQLiteBackend, AlertStoreContract):
    pass


@pytest.mark.postgres
class TestPostgres(PostgresBackend, AlertStoreContract):
    def test_writers_of_the_same_alerts_in_other_orders_do_not_deadlock(
        self, alerts: AlertStore
    ) -> None:
        """The audit sink and the notifier both store the alerts topic's alerts, each in the
        order its partitions arrived: one writer's batch is another's reversed. Each takes
        the rows' locks in one order (by id), so neither waits on the other in a cycle."""
        engines = [make_engine(self.url()) for _ in range(2)]
        stores = [AlertStore(AuditLog(engine)) for engine in engines]
        try:
            for round_ in range(6):
                batch = [alert(round_ * 1000 + i) for i in range(400)]
                orders = [batch, batch[::-1]]
                with ThreadPoolExecutor(2) as pool:
                    saved = list(pool.map(AlertStore.save, stores, orders))
                assert sum(saved) == len(batch)
        finally:
            for engine in engines:
                engine.dispose()
