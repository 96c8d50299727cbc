"""The topic names the stream step reads and writes: plain strings, no Kafka client.
`remsguard.adapters.kafka.topics.Topics.stream()` fills them from the production layout."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["StreamTopics"]


@dataclass(frozen=True, slots=True)
class StreamTopics:
    inputs: tuple[str, ...]  # the co-partitioned input topics, events keyed by session id
    ticks: str  # the processor's own clock messages
    alerts: str
    audit: str
    deadletter: str
