"""The topic layout of the production path and its idempotent creation.

Every topic is keyed by `session_id` (raw UTF-8) with the default partitioner and has the
same partition count, so partition *p* of every input topic, of the tick topic and of the
processor's changelog holds the same sessions (co-partitioning).

Retention, chosen per topic:
- inputs (dosing, vitals, sessions): 7 days, enough to re-run a week of traffic;
- alerts: 30 days; consumers (notifier, `alerts tail`) dedupe by `alert_id`;
- audit and dead-letter: no time or size limit (`retention.ms=-1`): they are the source of
  the compliance log and are only trimmed by an operator after the audit sink has stored them;
- ticks (internal clock messages): 1 hour, they are worthless once applied.
`min.insync.replicas` is 2 when there are at least 3 replicas (acks=all then survives one
broker loss), else 1 (a single-broker development cluster).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from remsguard.adapters.kafka.errors import BrokerUnreachable, TopicLayoutError, translate
from remsguard.config import Settings
from remsguard.handlers.stream_topics import StreamTopics

DAY_MS: Final = 24 * 60 * 60 * 1000

# Event type -> the input topic (by its base name) it travels on.
ROUTES: Final[dict[str, str]] = {
    "dose.administered": "dosing",
    "vitals.recorded": "vitals",
    "session.opened": "sessions",
    "assessment.recorded": "sessions",
    "session.discharged": "sessions",
}


@dataclass(frozen=True, slots=True)
class Topics:
    dosing: str
    vitals: str
    sessions: str
    alerts: str
    audit: str
    deadletter: str
    ticks: str

    @classmethod
    def named(cls, prefix: str = "") -> Topics:
        return cls(
            dosing=f"{prefix}rems.dosing.v1",
            vitals=f"{prefix}rems.vitals.v1",
            sessions=f"{prefix}rems.sessions.v1",
            alerts=f"{prefix}rems.alerts.v1",
            audit=f"{prefix}rems.audit.v1",
            deadletter=f"{prefix}rems.deadletter.v1",
            ticks=f"{prefix}rems.processor-ticks.v1",
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Topics:
        return cls.named(settings.topic_prefix)

    @property
    def inputs(self) -> tuple[str, str, str]:
        return (self.dosing, self.vitals, self.sessions)

    def stream(self) -> StreamTopics:
        """The names the stream step (`remsguard.handlers.stream`) reads and writes."""
        return StreamTopics(self.inputs, self.ticks, self.alerts, self.audit, self.deadletter)

    def for_type(self, event_type: str) -> str | None:
        """The input topic an event of this type is published to (None: unknown type)."""
        base = ROUTES.get(event_type)
        return None if base is None else str(getattr(self, base))

    def configs(self, replication: int) -> dict[str, dict[str, str]]:
        min_isr = "2" if replication >= 3 else "1"
        keep = {"retention.ms": str(7 * DAY_MS), "min.insync.replicas": min_isr}
        forever = {"retention.ms": "-1", "retention.bytes": "-1", "min.insync.replicas": min_isr}
        return {
            self.dosing: keep,
            self.vitals: keep,
            self.sessions: keep,
            self.alerts: {"retention.ms": str(30 * DAY_MS), "min.insync.replicas": min_isr},
            self.audit: forever,
            self.deadletter: forever,
            self.ticks: {"retention.ms": str(60 * 60 * 1000), "min.insync.replicas": min_isr},
        }


def changelog_topic(app_id: str) -> str:
    """The processor's session-table changelog (created by faust, co-partitioned)."""
    return f"{app_id}-sessions-changelog"


def admin_client(bootstrap: str, timeout_seconds: float = 15.0) -> KafkaAdminClient:
    """An admin client, or `BrokerUnreachable` once `timeout_seconds` have passed."""
    try:
        return KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="remsguard-topics",
            bootstrap_timeout_ms=int(timeout_seconds * 1000),
            request_timeout_ms=max(1000, int(timeout_seconds * 1000)),
        )
    except Exception as exc:
        failure = translate(exc, bootstrap)
        if isinstance(failure, BrokerUnreachable):
            raise BrokerUnreachable(bootstrap, timeout_seconds) from exc
        raise


def create_topics(
    bootstrap: str,
    topics: Topics,
    partitions: int,
    replication: int,
    *,
    also_check: Iterable[str] = (),
    timeout_seconds: float = 15.0,
) -> dict[str, str]:
    """Create every topic that is missing; returns {topic: "created" | "exists"}.

    Everything is checked before anything is created: an existing topic of the deployment
    (or one of `also_check`, e.g. the processor's changelog) with another partition count
    raises `TopicLayoutError` and nothing is created.
    """
    admin = admin_client(bootstrap, timeout_seconds)
    try:
        configs = topics.configs(replication)
        existing = set(admin.list_topics())
        present = [name for name in (*configs, *also_check) if name in existing]
        _check_partitions(admin, present, partitions)
        wanted = [
            NewTopic(name, partitions, replication, topic_configs=config)
            for name, config in configs.items()
            if name not in existing
        ]
        result = {name: "exists" for name in configs if name in existing}
        for topic in wanted:
            try:
                admin.create_topics([topic], validate_only=False)
                result[topic.name] = "created"
            except TopicAlreadyExistsError:  # created concurrently by another process
                result[topic.name] = "exists"
        _check_partitions(admin, [n for n in configs if result.get(n) == "exists"], partitions)
        return result
    finally:
        admin.close()


def max_message_bytes(
    bootstrap: str, names: Iterable[str], timeout_seconds: float = 15.0
) -> dict[str, int]:
    """Each existing topic's `max.message.bytes` (the broker refuses a larger record batch)."""
    admin = admin_client(bootstrap, timeout_seconds)
    try:
        existing = set(admin.list_topics())
        resources = [
            ConfigResource(ConfigResourceType.TOPIC, name, configs={"max.message.bytes": None})
            for name in names
            if name in existing
        ]
        if not resources:
            return {}
        described = admin.describe_configs(resources, config_filter="all")
        limits: dict[str, int] = {}
        for name, entries in described.get("topic", {}).items():
            entry = entries.get("max.message.bytes")
            if entry is not None and entry.get("value"):
                limits[name] = int(entry["value"])
        return limits
    finally:
        admin.close()


def _check_partitions(admin: KafkaAdminClient, names: Iterable[str], partitions: int) -> None:
    """Co-partitioning is a correctness requirement: refuse to run on mismatched topics."""
    listed = list(names)
    if not listed:
        return
    described = admin.describe_topics(listed)
    wrong = {
        str(d.get("name", d.get("topic"))): len(d["partitions"])
        for d in described
        if d.get("partitions") and len(d["partitions"]) != partitions
    }
    if wrong:
        raise TopicLayoutError(wrong, partitions)
