"""`remsguard notifier`: the alerting service fed by the alerts topic (`rems.alerts.v1`).

Consumes with aiokafka in the consumer group `{topic_prefix}{notifier_group_id}` (one per
environment), auto-commit off: each batch
is stored (`save_alerts`, idempotent), claimed and delivered by `AlertingService.process`,
and only then are its offsets committed. A withdrawal on the topic (the engine took an alert
back) stops the alert's escalation and tells the channels it was notified on
(`AlertingService.withdraw`). A crash before the commit redelivers the batch,
which stores and notifies nothing twice (the `alert.notified` records). Escalation runs on the
service's own timer, from the stored alert state, so it survives restarts and rebalances; two
notifiers escalating the same alert write the same step record id, and only the one that
inserted it notifies. Metrics on `metrics_port`.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

import structlog
import typer

from remsguard.config import Settings, compliance_log_url, get_settings
from remsguard.contract.outbound import alerts_message_from_json
from remsguard.domain.decisions import Alert, Withdrawal

if TYPE_CHECKING:
    from remsguard.adapters.telemetry import Telemetry

__all__ = ["AlertsMessages", "decode_alerts", "notifier_command"]

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class AlertsMessages:
    """A batch of the alerts topic: alerts raised, and alerts the engine took back."""

    alerts: list[Alert] = field(default_factory=list)
    withdrawals: list[Withdrawal] = field(default_factory=list)


def decode_alerts(records: Iterable[Any], telemetry: Telemetry | None = None) -> AlertsMessages:
    """The alerts and withdrawals of a batch of alerts-topic records, in order; bad ones are
    logged and counted."""
    out = AlertsMessages()
    for record in records:
        if record.value is None:
            continue
        try:
            message = alerts_message_from_json(record.value)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            log.warning(
                "notifier.bad_alert",
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                error=str(exc)[:200],
            )
            if telemetry is not None:
                telemetry.dead_letter(record.topic, "invalid_alert")
            continue
        if isinstance(message, Withdrawal):
            out.withdrawals.append(message)
        else:
            out.alerts.append(message)
    return out


async def run_notifier(settings: Settings, stop: asyncio.Event) -> None:
    from aiokafka import AIOKafkaConsumer

    from remsguard.adapters.kafka.topics import Topics
    from remsguard.adapters.metrics import new_registry, serve_metrics
    from remsguard.adapters.storage import ComplianceLog
    from remsguard.adapters.telemetry import Telemetry
    from remsguard.alerting.factory import build_alerting

    registry = new_registry()
    telemetry = Telemetry(registry)
    server = serve_metrics(registry, "0.0.0.0", settings.metrics_port)
    compliance = ComplianceLog.open(compliance_log_url(settings))
    service = build_alerting(settings, compliance, telemetry)
    topic = Topics.from_settings(settings).alerts
    group = f"{settings.topic_prefix}{settings.notifier_group_id}"  # one group per environment
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await service.start()
    await consumer.start()
    log.info("notifier.started", topic=topic, group=group)
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=1000)
            messages = decode_alerts([r for rs in batches.values() for r in rs], telemetry)
            if messages.alerts:
                await service.process(messages.alerts, save=True)
            if messages.withdrawals:
                await service.withdraw(messages.withdrawals)
            if batches:
                await consumer.commit()
    finally:
        await consumer.stop()
        await service.stop()
        compliance.close()
        server.close()


def notifier_command(
    database_url: Annotated[
        str | None, typer.Option("--db", help="compliance log URL [default: setting]")
    ] = None,
) -> None:
    """Consume the alerts topic: store, notify (SSE, signed webhook), escalate unacknowledged."""
    settings = get_settings()
    if database_url is not None:
        settings = settings.model_copy(update={"database_url": database_url})

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_notifier(settings, stop)

    try:
        asyncio.run(main())
    except ValueError as exc:  # a bad policy file, a webhook URL without a secret
        typer.echo(f"remsguard notifier: {exc}", err=True)
        raise typer.Exit(2) from None
