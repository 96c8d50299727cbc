"""Builds the alerting service from `Settings` (embedded mode and `remsguard notifier`)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from remsguard.adapters.storage import ComplianceLog, DecisionsRecorded
from remsguard.adapters.telemetry import Telemetry
from remsguard.alerting.channels import Channel
from remsguard.alerting.policy import EscalationPolicy, Policies
from remsguard.alerting.service import AlertingService
from remsguard.alerting.sse import SseHub
from remsguard.alerting.webhook import WebhookChannel
from remsguard.config import Settings
from remsguard.domain.decisions import Alert, AuditKind, AuditRecord, withdrawal_of
from remsguard.domain.events import Event

__all__ = ["NotifyingLog", "build_alerting", "build_console_alerting"]


def build_alerting(
    settings: Settings, log: ComplianceLog, telemetry: Telemetry | None = None
) -> AlertingService:
    """The service with the SSE hub, and the signed webhook when `webhook_url` is set.

    Raises `PolicyError` (a ValueError) for a bad policy file, and ValueError for a webhook
    URL without a secret."""
    policies = Policies.load(settings.alerting_policy_file)
    service = AlertingService(
        log,
        policies,
        hub=SseHub(),
        telemetry=telemetry,
        tick_interval=settings.escalation_tick_seconds,
        catchup=timedelta(seconds=settings.alerting_catchup_seconds),
        max_shelf=timedelta(minutes=settings.alerting_max_shelf_minutes),
        group_window=timedelta(seconds=settings.alerting_group_seconds),
    )
    service.channels.extend(_webhook(settings, service, telemetry))
    return service


def build_console_alerting(settings: Settings, log: ComplianceLog) -> AlertingService:
    """The service of a process that serves consoles but does not notify (`remsguard api` in
    the Kafka deployment): its SSE hub, acknowledge, resolve and shelve, `relay` of live
    alerts, and the signed webhook (when `webhook_url` is set) for the staff actions made
    here, as the notifier's would tell it. No escalation policy and no timer: the notifier
    owns escalation and the shelf timer, and re-reads each alert's stored status before every
    escalation step, so an acknowledgement or a shelf made here stops it; a shelf it ends
    reaches these consoles with the stream's next snapshot of the stored alerts (every 2 s).
    Never `start` it: start-up catch-up would claim notifications that are the notifier's,
    and its timer would take the notifier's unshelving (and with it the notification and
    escalation). Shelves made here are bounded by the same `alerting_max_shelf_minutes` as
    the notifier's. Raises ValueError for a webhook URL without a secret."""
    service = AlertingService(
        log,
        Policies(EscalationPolicy(), {}),
        hub=SseHub(),
        max_shelf=timedelta(minutes=settings.alerting_max_shelf_minutes),
    )
    service.channels.extend(_webhook(settings, service, None))
    return service


def _webhook(
    settings: Settings, service: AlertingService, telemetry: Telemetry | None
) -> list[Channel]:
    """The signed webhook of `settings` (none without `webhook_url`), dead-lettering into
    `service`'s log."""
    if not settings.webhook_url:
        return []
    if settings.webhook_secret is None:
        raise ValueError("REMSGUARD_WEBHOOK_URL needs REMSGUARD_WEBHOOK_SECRET (HMAC key)")

    def attempted(_attempt: int, outcome: str) -> None:
        if telemetry is not None:
            telemetry.notified("webhook", outcome)

    return [
        WebhookChannel(
            settings.webhook_url,
            settings.webhook_secret.get_secret_value().encode(),
            max_attempts=settings.webhook_max_attempts,
            base_delay=settings.webhook_backoff_seconds,
            max_delay=settings.webhook_max_backoff_seconds,
            timeout=settings.webhook_timeout_seconds,
            dead_letter=service.dead_letter,
            on_attempt=attempted,
        )
    ]


class NotifyingLog:
    """The compliance log as the embedded runtime writes to it, telling the alerting service
    about alerts as soon as they are stored, and about withdrawals as soon as their
    `alert.withdrawn` records are (both run in a worker thread; `on_alerts` and
    `on_withdrawals` are thread-safe and return at once)."""

    def __init__(self, log: ComplianceLog, service: AlertingService) -> None:
        self._log = log
        self._service = service

    def record_decisions(
        self, events: Iterable[Event], alerts: Iterable[Alert], audit: Iterable[AuditRecord]
    ) -> DecisionsRecorded:
        """A step's events, alerts and records in one transaction, then the alerting service
        is told of the alerts and of the withdrawals (their rows are closed by then)."""
        raised, records = list(alerts), list(audit)
        recorded = self._log.record_decisions(events, raised, records)
        if raised:
            self._service.on_alerts(raised)
        if withdrawals := [
            withdrawal_of(r) for r in records if r.kind == AuditKind.ALERT_WITHDRAWN
        ]:
            self._service.on_withdrawals(withdrawals)
        return recorded
