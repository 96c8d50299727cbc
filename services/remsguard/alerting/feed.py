"""`AlertFeed`: live alerts for the consoles of a process that does not notify.

In the Kafka deployment the notifier consumes the alerts topic (store, notify, escalate) and
`remsguard api` serves the consoles. The API follows the same topic from its end, without a
consumer group (every replica shows every alert to its own consoles), and hands each batch to
`AlertingService.relay`: stored (idempotent) and published on the process's SSE hub. Alerts
raised while the API was away are in the compliance log, so the console's next snapshot
shows them. Withdrawals on the topic go to `AlertingService.withdraw`: the consoles drop them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from remsguard.adapters.kafka.follow import TopicFollower
from remsguard.alerting.notifier import decode_alerts
from remsguard.alerting.service import AlertingService

__all__ = ["AlertFeed"]


class AlertFeed:
    def __init__(self, bootstrap: str, topic: str, service: AlertingService) -> None:
        self.service = service
        self.relayed = 0
        self._follower = TopicFollower(bootstrap, topic, self._on_batch, from_beginning=False)

    def start(self) -> None:
        self._follower.start()

    async def stop(self) -> None:
        await self._follower.stop()

    async def _on_batch(self, records: Sequence[Any]) -> None:
        messages = decode_alerts(records)
        if messages.alerts:
            self.relayed += await self.service.relay(messages.alerts)
        if messages.withdrawals:  # the consoles drop them
            await self.service.withdraw(messages.withdrawals)
