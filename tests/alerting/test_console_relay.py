"""The console side of the Kafka deployment (`remsguard api`): `AlertingService.relay` shows
live alerts on the process's SSE hub without taking the notifier's job, and an acknowledgement
made there stops the notifier's escalation (two services, one compliance log)."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from pydantic import SecretStr

from remsguard.adapters.metrics import new_registry
from remsguard.adapters.storage import AuditQuery, ComplianceLog
from remsguard.adapters.telemetry import Telemetry
from remsguard.alerting import records
from remsguard.alerting import service as service_module
from remsguard.alerting.factory import build_console_alerting
from remsguard.alerting.policy import Policies
from remsguard.alerting.service import AlertingService, NotShelvable
from remsguard.alerting.webhook import verify_signature
from remsguard.config import Settings
from remsguard.domain.decisions import Severity

from .support import Clock, Receiver, Recorder, alert

pytestmark = pytest.mark.skipif(
    not records.KINDS_AVAILABLE, reason="alerting audit kinds not registered"
)


def _frames(queue: asyncio.Queue[bytes | None]) -> list[dict[str, object]]:
    out = []
    while not queue.empty():
        frame = queue.get_nowait()
        assert frame is not None
        data = frame.split(b"data: ", 1)[1]
        out.append(orjson.loads(data))
    return out


def test_relay_stores_and_shows_each_open_alert_once_and_claims_nothing(
    clock: Clock, log: ComplianceLog
) -> None:
    async def scenario() -> None:
        console = build_console_alerting(Settings(), log)
        c1 = console.hub.subscribe(frozenset({"c1"}))
        c2 = console.hub.subscribe(frozenset({"c2"}))
        shown = await console.relay([alert("a1"), alert("a1"), alert("w1", Severity.WARNING)])
        assert shown == 2
        assert await console.relay([alert("a1")]) == 0  # redelivered: not shown again
        notes = _frames(c1.queue)
        assert [(n["kind"], n["alert"]["alert_id"]) for n in notes] == [  # type: ignore[index]
            ("alert", "a1"),
            ("alert", "w1"),
        ]
        assert _frames(c2.queue) == []  # another clinic's console sees nothing
        # stored, so the console can acknowledge before the notifier has stored it
        row = log.get_alert("a1")
        assert row is not None and row.status == "open"
        result = await console.acknowledge("a1", "staff-1", "rn-jane", frozenset({"c1"}))
        assert result.changed
        [note] = _frames(c1.queue)
        assert note["kind"] == "acknowledged" and note["by_name"] == "rn-jane"
        # an alert already acknowledged elsewhere is stored but not shown as new
        log.save_alerts([alert("a2")])
        log.alert_store.acknowledge("a2", "staff-2")
        fresh = build_console_alerting(Settings(), log)
        sub = fresh.hub.subscribe(None)
        assert await fresh.relay([alert("a2")]) == 0
        assert _frames(sub.queue) == []

    asyncio.run(scenario())
    # the notifier's job is untouched: no notification claimed, nothing escalated
    assert log.audit_records(AuditQuery(kind=records.NOTIFIED, limit=10)).items == []
    assert log.audit_records(AuditQuery(kind=records.ESCALATED, limit=10)).items == []


def test_acknowledged_on_the_console_does_not_escalate_unacknowledged_does(
    clock: Clock, log: ComplianceLog, rec: Recorder
) -> None:
    async def scenario() -> None:
        notifier = AlertingService(log, Policies(), [rec], clock=clock)
        console = build_console_alerting(Settings(), log)
        await notifier.restore()
        await console.relay([alert("acked"), alert("ignored", session="s2")])  # API first
        await notifier.process([alert("acked"), alert("ignored", session="s2")], save=True)
        assert sorted(a for a, _, _ in notifier.pending()) == ["acked", "ignored"]
        clock.advance(seconds=60)
        assert (await console.acknowledge("acked", "staff-1", "rn-jane")).changed
        clock.advance(seconds=61)  # past the 2-minute step
        assert await notifier.tick() == 1
        clock.advance(minutes=5)
        assert await notifier.tick() == 1  # the second step, still only the ignored one
        await notifier.drain()

    asyncio.run(scenario())
    assert [(a, s) for a, s, _ in rec.escalations()] == [("ignored", 0), ("ignored", 1)]
    [ack] = log.audit_records(AuditQuery(kind=records.ACKNOWLEDGED, limit=10)).items
    assert ack.subject_id == "acked" and orjson.loads(ack.detail)["by"] == "staff-1"


def test_the_notifiers_open_alert_gauge_follows_a_console_acknowledgement(
    clock: Clock, log: ComplianceLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "OPEN_COUNT_SECONDS", 0.0)
    telemetry = Telemetry(new_registry())

    def open_now(severity: str) -> float | None:
        return telemetry.registry.get_sample_value(
            "remsguard_alerts_open", {"clinic": "c1", "severity": severity}
        )

    async def scenario() -> None:
        notifier = AlertingService(log, Policies(), [], clock=clock, telemetry=telemetry)
        await notifier.restore()
        await notifier.process([alert("a1"), alert("a2", session="s2")], save=True)
        assert open_now("critical") == 2
        await notifier.tick()
        assert open_now("critical") == 2  # nothing changed elsewhere: the count agrees
        console = build_console_alerting(
            Settings(), log
        )  # the API's, another process in production
        assert (await console.acknowledge("a1", "staff-1", "rn-jane")).changed
        assert (await console.resolve("a2", "staff-1", "rn-jane")).changed
        await notifier.tick()
        await notifier.drain()

    asyncio.run(scenario())
    assert open_now("critical") == 0


def test_the_api_console_bounds_a_shelf_by_the_configured_limit(log: ComplianceLog) -> None:
    """`remsguard api`'s console takes `REMSGUARD_ALERTING_MAX_SHELF_MINUTES` as the notifier
    does (it used the default 60 minutes whatever was configured)."""

    async def scenario() -> None:
        console = build_console_alerting(Settings(alerting_max_shelf_minutes=15), log)
        await console.relay([alert("w1", Severity.WARNING)])
        with pytest.raises(NotShelvable, match="1 to 0:15:00"):
            await console.shelve("w1", "staff-1", "rn-jane", 30, "on the phone", None)
        shelved = await console.shelve("w1", "staff-1", "rn-jane", 15, "on the phone", None)
        assert shelved.changed and shelved.row.status == "shelved"

    asyncio.run(scenario())


def test_staff_actions_on_the_api_console_reach_the_webhook_and_relayed_alerts_do_not(
    log: ComplianceLog,
) -> None:
    """In the Kafka deployment staff act on `remsguard api`'s console; the webhook (a pager)
    hears the acknowledgement and resolution as it does in embedded mode, signed. New alerts
    relayed to the consoles are the notifier's to send, not the console's (it sent neither)."""
    secret = "hook-secret"

    async def scenario(url: str) -> None:
        settings = Settings(webhook_url=url, webhook_secret=SecretStr(secret))
        console = build_console_alerting(settings, log)
        await console.relay([alert("a1")])
        assert (await console.acknowledge("a1", "staff-1", "rn-jane", frozenset({"c1"}))).changed
        assert (await console.resolve("a1", "staff-1", "rn-jane", frozenset({"c1"}))).changed
        await console.stop()  # waits for the deliveries

    with Receiver([]) as receiver:
        asyncio.run(scenario(receiver.url))
    bodies = [body for _, _, body in receiver.requests]
    kinds = [orjson.loads(body)["kind"] for body in bodies]
    assert sorted(kinds) == ["acknowledged", "resolved"]  # each its own delivery: any order
    for (_, headers, body), kind in zip(receiver.requests, kinds, strict=True):
        assert verify_signature(secret.encode(), body, headers["X-Remsguard-Signature"]), kind
        assert orjson.loads(body)["alert"]["alert_id"] == "a1"


def test_the_api_console_refuses_a_webhook_without_its_secret(log: ComplianceLog) -> None:
    with pytest.raises(ValueError, match="REMSGUARD_WEBHOOK_SECRET"):
        build_console_alerting(Settings(webhook_url="http://127.0.0.1:9/hook"), log)
