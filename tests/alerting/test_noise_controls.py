"""Alarm noise (issue 14, gap 6) in the alerting service, on a real SQLite compliance log:
an inhibited alert rides on its inhibitor's card, one click acts for both, a warning may be
shelved for a bounded time (never a critical one) and is notified again when the shelf
expires; every step is chained and `audit verify` holds the rows to the records."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from remsguard.adapters.storage import ComplianceLog, verify_log
from remsguard.alerting.service import NotShelvable
from remsguard.domain.decisions import Severity

from .support import Clock, Recorder, alert, kinds, open_log, run, service, stored, withdrawal


def test_an_inhibited_alert_is_not_pushed_and_follows_its_carrier(
    clock: Clock, log: ComplianceLog, rec: Recorder
) -> None:
    crisis = alert("crisis", rule="BP_CRISIS")
    rise = replace(alert("rise", Severity.WARNING, rule="BP_RISE"), inhibited_by="crisis")
    stored(log, [crisis, rise])

    async def scenario() -> None:
        svc = service(log, clock, rec)
        await svc.restore()  # catches up on the stored alerts: the carrier only
        assert await svc.process([crisis, rise]) == []  # and never twice
        result = await svc.acknowledge("crisis", "staff-1", "rn-jane")
        assert [f.alert_id for f in result.followers] == ["rise"]
        await svc.drain()

    run(scenario())
    assert [(n.kind, n.alert_id) for n in rec.sent] == [
        ("alert", "crisis"),
        ("acknowledged", "crisis"),
    ]
    assert log.get_alert("rise").status == "acknowledged"  # type: ignore[union-attr]
    assert log.get_alert("rise").inhibited_by == "crisis"  # type: ignore[union-attr]
    acked = dict(kinds(log, "alert.acknowledged"))
    assert acked["rise"]["with"] == "crisis"
    assert verify_log(log.engine).ok


def test_a_shelved_warning_leaves_escalation_and_comes_back_when_the_shelf_expires(
    clock: Clock, log: ComplianceLog, rec: Recorder
) -> None:
    warning = alert("w1", Severity.WARNING, rule="SPO2_LOW")
    stored(log, [warning])

    async def scenario() -> None:
        svc = service(log, clock, rec)
        await svc.restore()
        await svc.process([warning])
        shelved = await svc.shelve("w1", "staff-1", "rn-jane", 30, "probe off the finger")
        assert shelved.changed and shelved.row.status == "shelved"
        assert verify_log(log.engine).ok
        clock.advance(minutes=29)
        await svc.tick()
        assert log.get_alert("w1").status == "shelved"  # type: ignore[union-attr]
        clock.advance(minutes=2)
        await svc.tick()
        assert log.get_alert("w1").status == "open"  # type: ignore[union-attr]
        await svc.drain()

    run(scenario())
    assert [n.kind for n in rec.sent] == ["alert", "shelved", "unshelved"]
    assert rec.sent[1].extra["reason"] == "probe off the finger"
    [(_, shelf)] = kinds(log, "alert.shelved")
    assert shelf["by"] == "staff-1" and shelf["reason"] == "probe off the finger"
    assert [subject for subject, _ in kinds(log, "alert.unshelved")] == ["w1"]
    row = log.get_alert("w1")
    assert row is not None and row.shelved_until is None
    assert verify_log(log.engine).ok


@pytest.mark.parametrize(
    ("severity", "minutes", "why"),
    [
        (Severity.CRITICAL, 30, "critical alerts cannot be shelved"),
        (Severity.WARNING, 0, "a shelf is 1 to"),
        (Severity.WARNING, 61, "a shelf is 1 to"),
    ],
)
def test_what_cannot_be_shelved(
    clock: Clock, log: ComplianceLog, severity: Severity, minutes: int, why: str
) -> None:
    a = alert("a1", severity)
    stored(log, [a])

    async def scenario() -> None:
        svc = service(log, clock, Recorder())
        with pytest.raises(NotShelvable, match=why):
            await svc.shelve("a1", "staff-1", "rn-jane", minutes, "busy")

    run(scenario())
    assert log.get_alert("a1").status == "open"  # type: ignore[union-attr]


def test_a_shelf_edited_around_the_log_fails_verification(clock: Clock, log: ComplianceLog) -> None:
    from sqlalchemy import text

    stored(log, [alert("w1", Severity.WARNING, rule="SPO2_LOW")])
    log.shelve_alert("w1", "staff-1", clock.now + timedelta(minutes=30), "busy")
    assert verify_log(log.engine).ok
    with log.engine.begin() as conn:
        conn.execute(text("UPDATE alerts SET shelved_until = '2030-01-01 00:00:00'"))
    report = verify_log(log.engine)
    assert not report.ok


def test_a_patients_alerts_go_out_grouped_and_the_burden_counts_messages(
    clock: Clock, log: ComplianceLog, rec: Recorder
) -> None:
    """Three warnings of one patient within the window: the first at once, the other two as
    one message at the end of the window; the burden counter counts two pushes."""
    from remsguard.adapters.metrics import new_registry
    from remsguard.adapters.telemetry import Telemetry
    from remsguard.alerting.policy import Policies
    from remsguard.alerting.service import AlertingService

    telemetry = Telemetry(new_registry())
    warnings = [alert(f"w{i}", Severity.WARNING, rule="SPO2_LOW") for i in range(3)]
    svc = AlertingService(
        log, Policies(), [rec], clock=clock, telemetry=telemetry,
        group_window=timedelta(seconds=30),
    )  # fmt: skip

    async def scenario() -> None:
        await svc.process(warnings[:1], save=True)
        clock.advance(seconds=5)
        await svc.process(warnings[1:], save=True)
        await svc.drain()
        assert [n.alert_id for n in rec.sent] == ["w0"]
        clock.advance(seconds=30)
        await svc.tick()
        await svc.drain()

    run(scenario())
    assert [n.alert_id for n in rec.sent] == ["w0", "w1"]
    assert [a["alert_id"] for a in rec.sent[1].extra["group"]] == ["w1", "w2"]
    pushed = telemetry.registry.get_sample_value(
        "remsguard_alert_notifications_total", {"clinic": "c1", "type": "alert"}
    )
    assert pushed == 2


def test_an_alert_withdrawn_while_it_waits_in_its_group_never_goes_out(
    clock: Clock, log: ComplianceLog, rec: Recorder
) -> None:
    from remsguard.alerting.policy import Policies
    from remsguard.alerting.service import AlertingService

    first, second = (alert(f"w{i}", Severity.WARNING, rule="SPO2_LOW") for i in range(2))
    svc = AlertingService(log, Policies(), [rec], clock=clock, group_window=timedelta(seconds=30))
    taken_back = withdrawal("w1", rule="SPO2_LOW")

    async def scenario() -> None:
        await svc.process([first], save=True)
        clock.advance(seconds=5)
        await svc.process([second], save=True)  # waits in s1's group
        log.withdraw_alerts([taken_back])
        await svc.withdraw([taken_back])
        clock.advance(seconds=30)
        await svc.tick()
        await svc.drain()

    run(scenario())
    assert [(n.kind, n.alert_id) for n in rec.sent] == [("alert", "w0")]


def test_two_notifiers_racing_for_an_expired_shelf_notify_it_once(
    clock: Clock,
    log: ComplianceLog,
    rec: Recorder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two notifier replicas share the log and both run the shelf timer: the one whose
    timer read the expired shelf just before the other unshelved it must not notify it too."""
    second_log = open_log(tmp_path / "log.db", clock)  # the other replica's connection
    second_rec = Recorder()
    stored(log, [alert("w1", Severity.WARNING, rule="SPO2_LOW")])

    async def scenario() -> None:
        first, second = service(log, clock, rec), service(second_log, clock, second_rec)
        loop = asyncio.get_running_loop()
        await first.shelve("w1", "staff-1", "rn-jane", 30, "probe off the finger")
        clock.advance(minutes=31)
        store = second_log.alert_store
        original = store._transition

        def first_wins(*args, **kwargs):  # type: ignore[no-untyped-def]
            # the second read the shelf as due; the first's timer unshelves it meanwhile
            asyncio.run_coroutine_threadsafe(first.tick(), loop).result(timeout=10)
            monkeypatch.setattr(store, "_transition", original)
            return original(*args, **kwargs)

        monkeypatch.setattr(store, "_transition", first_wins)
        await second.tick()
        await first.drain()
        await second.drain()

    run(scenario())
    assert log.get_alert("w1").status == "open"  # type: ignore[union-attr]
    assert [n.kind for n in rec.sent] == ["shelved", "unshelved"]
    assert [n.kind for n in second_rec.sent] == []
    assert [subject for subject, _ in kinds(log, "alert.unshelved")] == ["w1"]
    assert verify_log(log.engine).ok
