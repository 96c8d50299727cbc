"""Escalation with an explicit clock: on time, not after acknowledgement, and a restart of the
notifier in between changes neither (the steps are derived from the stored log)."""

from __future__ import annotations

from pathlib import Path

import pytest

from remsguard.adapters.storage import ComplianceLog
from remsguard.alerting import records
from remsguard.alerting.policy import Policies, PolicyError
from remsguard.alerting.service import AlertingService
from remsguard.domain.decisions import Severity

from .support import Clock, Recorder, alert, kinds, run, service, withdrawal

pytestmark = pytest.mark.skipif(
    not records.KINDS_AVAILABLE,
    reason="the compliance log does not know the alerting audit kinds (adapters/storage/chain.py)",
)


def test_unacknowledged_critical_escalates_on_time_and_restart_changes_nothing(
    clock: Clock, log: ComplianceLog, rec: Recorder
) -> None:
    async def first_life() -> None:
        svc = service(log, clock, rec)
        await svc.restore()
        notified = await svc.process([alert("a1"), alert("w1", Severity.WARNING)], save=True)
        assert [a.alert_id for a in notified] == ["a1", "w1"]
        await svc.drain()
        clock.advance(seconds=119)
        assert await svc.tick() == 0  # 1:59 — not yet
        clock.advance(seconds=1)
        assert await svc.tick() == 1  # 2:00 — lead on call
        assert await svc.tick() == 0  # once
        await svc.drain()

    run(first_life())
    assert rec.escalations() == [("a1", 0, "lead_on_call")]

    # the notifier restarts at 3:00: nothing is repeated, the 5-minute step is still pending
    clock.advance(seconds=60)

    async def second_life() -> None:
        svc = service(log, clock, rec)
        assert await svc.restore() == 1
        assert [(a, s) for a, s, _ in svc.pending()] == [("a1", 1)]
        assert await svc.process([alert("a1")], save=True) == []  # redelivery: not again
        assert await svc.tick() == 0
        clock.advance(seconds=119)  # 4:59
        assert await svc.tick() == 0
        await svc.drain()

    run(second_life())
    assert rec.escalations() == [("a1", 0, "lead_on_call")]

    # another restart just after 5:00: the medical director step fires, once
    clock.advance(seconds=2)

    async def third_life() -> None:
        svc = service(log, clock, rec)
        await svc.restore()
        assert await svc.tick() == 1
        clock.advance(minutes=30)
        assert await svc.tick() == 0
        assert svc.pending() == []
        await svc.drain()

    run(third_life())
    assert rec.escalations() == [("a1", 0, "lead_on_call"), ("a1", 1, "medical_director")]
    assert [n.alert_id for n in rec.sent if n.kind == "alert"] == ["a1", "w1"]  # no repeats
    steps = kinds(log, records.ESCALATED)
    assert [(s, d["step"], d["target"]) for s, d in steps] == [
        ("a1", 0, "lead_on_call"),
        ("a1", 1, "medical_director"),
    ]
    assert sorted(s for s, _ in kinds(log, records.NOTIFIED)) == ["a1", "w1"]


def test_acknowledged_critical_does_not_escalate_even_across_a_restart(
    clock: Clock, log: ComplianceLog, rec: Recorder
) -> None:
    async def first_life() -> None:
        svc = service(log, clock, rec)
        await svc.restore()
        await svc.process([alert("a1"), alert("a2")], save=True)
        clock.advance(seconds=90)
        result = await svc.acknowledge("a1", "staff-1", "rn-jane")
        assert result.changed and result.row.acknowledged_by == "staff-1"
        again = await svc.acknowledge("a1", "staff-2", "rn-joe")
        assert not again.changed and again.row.acknowledged_by == "staff-1"
        await svc.drain()

    run(first_life())
    clock.advance(seconds=60)  # 2:30: restart after the 2-minute deadline of a2 passed

    async def second_life() -> None:
        svc = service(log, clock, rec)
        await svc.restore()
        assert [a for a, _, _ in svc.pending()] == ["a2"]
        assert await svc.tick() == 1  # a2 (unacknowledged) escalates now; a1 never
        clock.advance(minutes=10)
        assert await svc.tick() == 1  # a2's second step
        await svc.drain()

    run(second_life())
    assert [(a, s) for a, s, _ in rec.escalations()] == [("a2", 0), ("a2", 1)]
    acks = kinds(log, records.ACKNOWLEDGED)
    assert acks == [
        (
            "a1",
            {
                "by": "staff-1",
                "by_name": "rn-jane",
                "rule": "BP_CRISIS",
                "alert_severity": "critical",
                "seconds_since_raised": 90.0,
            },
        )
    ]


def test_acknowledged_in_another_process_stops_escalation(
    clock: Clock, log: ComplianceLog, rec: Recorder
) -> None:
    async def scenario() -> None:
        svc = service(log, clock, rec)
        await svc.restore()
        await svc.process([alert("a1")], save=True)
        clock.advance(seconds=30)
        log.alert_store.acknowledge("a1", "staff-9")  # e.g. through the API of another process
        clock.advance(minutes=10)
        assert await svc.tick() == 0

    run(scenario())
    assert rec.escalations() == []


def test_resolve_and_redelivery_never_notify_twice(
    clock: Clock, log: ComplianceLog, rec: Recorder
) -> None:
    async def scenario() -> None:
        svc = service(log, clock, rec)
        await svc.restore()
        await svc.process([alert("a1"), alert("a1")], save=True)
        await svc.process([alert("a1")], save=True)
        fresh = service(log, clock, rec)  # no in-memory memory of a1
        await fresh.restore()
        assert await fresh.process([alert("a1")], save=True) == []
        result = await fresh.resolve("a1", "staff-1", "rn-jane")
        assert result.changed and result.row.status == "resolved"
        clock.advance(minutes=10)
        assert await fresh.tick() == 0
        await fresh.drain()

    run(scenario())
    assert [n.kind for n in rec.sent] == ["alert", "resolved"]


def test_policy_file_per_clinic(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(
        """
[default]
critical = [{ after_minutes = 2, target = "lead_on_call" }]
warning = []

[clinics.fast]
critical = [{ after_seconds = 30, target = "lead" }, { after_minutes = 1, target = "director" }]
warning = [{ after_minutes = 10, target = "lead" }]
"""
    )
    policies = Policies.load(path)
    assert [s.target for s in policies.steps("fast", "critical")] == ["lead", "director"]
    assert policies.steps("other", "warning") == ()
    assert policies.steps("other", "critical")[0].after.total_seconds() == 120
    assert policies.severities == {"critical", "warning"}
    path.write_text(
        '[default]\ncritical = [{ after_minutes = 5, target = "a" }, '
        '{ after_minutes = 2, target = "b" }]\n'
    )
    with pytest.raises(PolicyError, match="strictly later"):
        Policies.load(path)
    path.write_text("[default]\nsevere = []\n")
    with pytest.raises(PolicyError, match="unknown severity"):
        Policies.load(path)


def test_open_alerts_past_their_last_step_are_counted_until_acknowledged(
    clock: Clock, log: ComplianceLog
) -> None:
    from remsguard.adapters.metrics import new_registry
    from remsguard.adapters.telemetry import Telemetry

    telemetry = Telemetry(new_registry())  # one process's metrics; a restart gets new ones

    def past() -> float | None:
        return telemetry.registry.get_sample_value(
            "remsguard_alerts_open_past_escalation", {"clinic": "c1", "severity": "critical"}
        )

    def escalations() -> float | None:
        return telemetry.registry.get_sample_value(
            "remsguard_escalations_total", {"clinic": "c1", "severity": "critical"}
        )

    def svc() -> AlertingService:
        nonlocal telemetry
        telemetry = Telemetry(new_registry())
        return AlertingService(log, Policies(), [Recorder()], clock=clock, telemetry=telemetry)

    async def first_life() -> None:
        service = svc()
        await service.restore()
        await service.process([alert("a1"), alert("a2")], save=True)
        assert escalations() == 0  # exported from the first alert, so rate() sees the first
        clock.advance(minutes=2)
        await service.tick()
        assert escalations() == 2 and past() is None
        clock.advance(minutes=3)
        await service.tick()  # the last step (5 min) for both
        assert escalations() == 4 and past() == 2
        await service.acknowledge("a1", "staff-1", "rn-jane")
        assert past() == 1
        await service.drain()

    run(first_life())
    log.alert_store.acknowledge("a2", "staff-2")  # by another process, while this one is down
    log.save_alerts([alert("a3")])
    clock.advance(minutes=10)

    async def second_life() -> None:
        service = svc()
        await service.restore()  # a3: its steps are due now; a2: acknowledged meanwhile
        assert past() is None
        await service.tick()
        assert past() == 1
        log.alert_store.resolve("a3", "staff-2")  # by another process
        await service.tick()
        assert past() == 0
        await service.drain()

    run(second_life())


def test_a_withdrawn_alert_stops_escalating_and_the_channels_that_had_it_are_told(
    clock: Clock, log: ComplianceLog, rec: Recorder
) -> None:
    """a1 was notified: its withdrawal reaches the webhook-like channel, the console's hub,
    and no escalation follows. a2 was never notified (withdrawn before it was processed):
    only the consoles hear of it, and a redelivery of a2 notifies nothing."""
    shown: list[dict[str, object]] = []

    async def scenario() -> None:
        svc = service(log, clock, rec)
        await svc.restore()
        svc.hub.publish = lambda _event, payload, *_: shown.append(payload)  # type: ignore[method-assign]
        await svc.process([alert("a1")], save=True)
        log.withdraw_alerts([withdrawal("a1")])
        assert await svc.withdraw([withdrawal("a1"), withdrawal("a2")]) == 2
        assert await svc.process([alert("a2")], save=True) == []
        clock.advance(hours=2)
        assert await svc.tick() == 0
        await svc.drain()

    run(scenario())
    assert [(n.kind, n.alert_id) for n in rec.sent] == [("alert", "a1"), ("withdrawn", "a1")]
    withdrawn = rec.sent[1]
    assert withdrawn.alert["status"] == "withdrawn"
    assert withdrawn.extra["reason"] == "discharge_arrived_late"
    assert [(p["kind"], p["alert"]["alert_id"]) for p in shown] == [  # type: ignore[index]
        ("alert", "a1"),
        ("withdrawn", "a1"),
        ("withdrawn", "a2"),
    ]
    assert log.get_alert("a1").status == "withdrawn"  # type: ignore[union-attr]


def test_a_resolved_alert_is_not_taken_back_from_anyone(
    clock: Clock, log: ComplianceLog, rec: Recorder
) -> None:
    async def scenario() -> None:
        svc = service(log, clock, rec)
        await svc.restore()
        await svc.process([alert("a1")], save=True)
        await svc.resolve("a1", "staff-1", "rn-jane")
        assert await svc.withdraw([withdrawal("a1")]) == 0
        await svc.drain()

    run(scenario())
    assert [n.kind for n in rec.sent] == ["alert", "resolved"]
