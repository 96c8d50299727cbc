"""Staff alerting: alert lifecycle, escalation, delivery channels (issue 6).

- `policy`: escalation policies per clinic, from a TOML or JSON file.
- `records`: the audit records alerting writes (deterministic ids) and their kinds.
- `channels`: the `Channel` interface and `Notification`; `webhook` (signed HTTP POST with
  retries and a dead-letter record) and `sse` (the hub the consoles subscribe to).
- `service`: `AlertingService`: `on_alerts`, acknowledge/resolve, escalation `tick(now)`.
- `notifier`: `remsguard notifier`, the Kafka consumer of the alerts topic.
"""

from remsguard.alerting.channels import Channel, Notification
from remsguard.alerting.policy import EscalationPolicy, EscalationStep, Policies
from remsguard.alerting.service import AlertingService

__all__ = [
    "AlertingService",
    "Channel",
    "EscalationPolicy",
    "EscalationStep",
    "Notification",
    "Policies",
]
