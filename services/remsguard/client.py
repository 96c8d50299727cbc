"""A small client for device integrations: publish events to the topic their type belongs to.

    from remsguard.client import DeviceClient

    with DeviceClient("127.0.0.1:9092") as client:
        client.send({"event_id": "e1", "type": "vitals.recorded", "session_id": "s1", ...})

The producer is kafka-python's with `acks=all` and idempotence on; the key is the raw UTF-8
`session_id` (default partitioner), so every event of a session lands on the same partition
number of each input topic. The contract is not checked here: the processor is the judge, and
a contract-breaking event it receives ends in the dead-letter topic with its reason. Event
times are checked, as at every door: an event stamped too far ahead of this machine's clock,
or older than the horizon, raises `RefusedEvent` (the processor would dead-letter it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from kafka import KafkaProducer

from remsguard.adapters.kafka.topics import Topics
from remsguard.contract.decode import decode_event
from remsguard.domain.admission import EventTimeBounds
from remsguard.domain.decisions import Rejection

__all__ = ["DeviceClient", "RefusedEvent", "UnroutableEvent", "make_producer"]


class UnroutableEvent(ValueError):
    """The event has no recognisable `type`, so no topic can be chosen for it."""


class RefusedEvent(ValueError):
    """The event's time is outside what the service accepts (`reason`: the rejection code)."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(f"{rejection.reason}: {rejection.detail}")
        self.reason = rejection.reason


def make_producer(bootstrap: str, **overrides: Any) -> KafkaProducer:
    """kafka-python producer with the delivery settings every remsguard publisher uses."""
    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "batch_size": 256 * 1024,
        "max_request_size": 4 * 1024 * 1024,
        "client_id": "remsguard-client",
    }
    config.update(overrides)
    return KafkaProducer(**config)


def route(raw: bytes | Mapping[str, Any], topics: Topics) -> tuple[str, bytes | None, bytes]:
    """(topic, key, value) for one event, raw JSON bytes or an already-parsed mapping."""
    if isinstance(raw, bytes | bytearray | memoryview):
        value = bytes(raw)
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise UnroutableEvent("not JSON") from None
    else:
        doc, value = raw, orjson.dumps(raw)
    if not isinstance(doc, Mapping):
        raise UnroutableEvent("not a JSON object")
    event_type = doc.get("type")
    topic = topics.for_type(event_type) if isinstance(event_type, str) else None
    if topic is None:
        raise UnroutableEvent(f"unknown event type {event_type!r}")
    session_id = doc.get("session_id")
    key = session_id.encode("utf-8") if isinstance(session_id, str) and session_id else None
    return topic, key, value


class DeviceClient:
    """Routes events by type to `rems.dosing.v1`, `rems.vitals.v1` or `rems.sessions.v1`."""

    def __init__(
        self,
        bootstrap: str,
        topics: Topics | None = None,
        producer: KafkaProducer | None = None,
        bounds: EventTimeBounds | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        **producer_config: Any,
    ) -> None:
        self.topics = topics or Topics.named()
        self.bounds = EventTimeBounds() if bounds is None else bounds
        self._now = now
        self._producer = producer or make_producer(bootstrap, **producer_config)

    def send(self, event: bytes | Mapping[str, Any]) -> Any:
        """Queue one event; returns kafka-python's future (`.get(timeout)` waits for the ack)."""
        topic, key, value = route(event, self.topics)
        decoded = decode_event(value)
        if not isinstance(decoded, Rejection):
            refused = self.bounds.check(decoded, self._now())
            if refused is not None:
                raise RefusedEvent(refused)
        return self._producer.send(topic, key=key, value=value)

    def send_all(self, events: Iterable[bytes | Mapping[str, Any]]) -> int:
        count = 0
        for event in events:
            self.send(event)
            count += 1
        return count

    def flush(self, timeout: float | None = None) -> None:
        self._producer.flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        self._producer.flush(timeout)
        self._producer.close(timeout)

    def __enter__(self) -> DeviceClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
