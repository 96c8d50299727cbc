"""A small client for device integrations: publish events to the topic their type belongs to.

    from remsguard.client import DeviceClient

    with DeviceClient("127.0.0.1:9092") as client:
        client.send({"event_id": "e1", "type": "vitals.recorded", "session_id": "s1", ...})

The producer is kafka-python's with `acks=all` and idempotence on; the key is the raw UTF-8
`session_id` (default partitioner), so every event of a session lands on the same partition
number of each input topic. The contract is not checked here: the processor is the judge, and
a contract-breaking event it receives ends in the dead-letter topic with its reason.

What the client refuses itself, raising `RefusedEvent` with a reason code before anything is
sent: an event with no `session_id` (`no_key`: it could not be keyed), one larger than its
topic's `max.message.bytes` (`message_too_large`: the broker would refuse it), and, as at
every door, one stamped too far ahead of this machine's clock or older than the horizon.

Nothing fails silently: every send's outcome is checked. `flush()` (and so `send_all`,
`close` and leaving the `with` block) raises `DeliveryFailed` naming every message the
broker did not acknowledge since the last flush. A broker that does not answer within the
connection timeout is `BrokerUnreachable`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from kafka import KafkaProducer

from remsguard.adapters.kafka.errors import BrokerUnreachable, DeliveryFailed, translate
from remsguard.adapters.kafka.topics import Topics, max_message_bytes
from remsguard.contract.decode import decode_event
from remsguard.domain import admission
from remsguard.domain.admission import EventTimeBounds
from remsguard.domain.decisions import Rejection

__all__ = [
    "DeliveryFailed",
    "DeviceClient",
    "RefusedEvent",
    "Routed",
    "UnroutableEvent",
    "make_producer",
    "route",
]

RECORD_OVERHEAD: Final = 128
"""Bytes a record batch of one record adds around its key and value (v2 format, generous)."""
BATCH_BYTES: Final = 256 * 1024


class UnroutableEvent(ValueError):
    """The event has no recognisable `type`, so no topic can be chosen for it.

    `reason`: the contract's code for it (`invalid_json`, `not_an_object`, `unknown_type`)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class RefusedEvent(ValueError):
    """The client will not send this event (`reason`: the rejection code, e.g. `no_key`,
    `message_too_large`, `occurred_in_future`, `too_old`)."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(f"{rejection.reason}: {rejection.detail}")
        self.reason = rejection.reason


@dataclass(frozen=True, slots=True)
class Routed:
    """An event ready to send, with what the contract thinks of it (None: accepted)."""

    topic: str
    key: bytes
    value: bytes
    rejection: Rejection | None


def make_producer(bootstrap: str, timeout_seconds: float = 15.0, **overrides: Any) -> KafkaProducer:
    """kafka-python producer with the delivery settings every remsguard publisher uses;
    `BrokerUnreachable` if no broker answers within `timeout_seconds`."""
    wait_ms = int(timeout_seconds * 1000)
    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "batch_size": BATCH_BYTES,
        "max_request_size": 4 * 1024 * 1024,
        "client_id": "remsguard-client",
        "bootstrap_timeout_ms": wait_ms,
        "max_block_ms": wait_ms,
        "request_timeout_ms": 30_000,
        "delivery_timeout_ms": max(60_000, 4 * wait_ms),
    }
    config.update(overrides)
    try:
        return KafkaProducer(**config)
    except Exception as exc:
        if isinstance(translate(exc, bootstrap), BrokerUnreachable):
            raise BrokerUnreachable(bootstrap, timeout_seconds) from exc
        raise


def route(raw: bytes | Mapping[str, Any], topics: Topics) -> tuple[str, bytes | None, bytes]:
    """(topic, key, value) for one event, raw JSON bytes or an already-parsed mapping."""
    if isinstance(raw, bytes | bytearray | memoryview):
        value = bytes(raw)
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise UnroutableEvent("invalid_json", "not JSON") from None
    else:
        doc, value = raw, orjson.dumps(raw)
    if not isinstance(doc, Mapping):
        raise UnroutableEvent("not_an_object", "not a JSON object")
    event_type = doc.get("type")
    topic = topics.for_type(event_type) if isinstance(event_type, str) else None
    if topic is None:
        raise UnroutableEvent("unknown_type", f"unknown event type {event_type!r}")
    session_id = doc.get("session_id")
    key = session_id.encode("utf-8") if isinstance(session_id, str) and session_id else None
    return topic, key, value


class DeviceClient:
    """Routes events by type to `rems.dosing.v1`, `rems.vitals.v1` or `rems.sessions.v1`.

    `message_limits`: each topic's `max.message.bytes`; looked up from the broker when the
    client makes its own producer and none are given.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: Topics | None = None,
        producer: KafkaProducer | None = None,
        bounds: EventTimeBounds | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        *,
        message_limits: Mapping[str, int] | None = None,
        timeout_seconds: float = 15.0,
        **producer_config: Any,
    ) -> None:
        self.topics = topics or Topics.named()
        self.bounds = EventTimeBounds() if bounds is None else bounds
        self._now = now
        if message_limits is None and producer is None:
            wanted = (*self.topics.inputs, self.topics.deadletter)
            message_limits = max_message_bytes(bootstrap, wanted, timeout_seconds)
        self.message_limits: dict[str, int] = dict(message_limits or {})
        if producer is None and self.message_limits:
            smallest = min(self.message_limits.values())
            producer_config.setdefault("batch_size", min(BATCH_BYTES, smallest))
            producer_config.setdefault("max_request_size", max(self.message_limits.values()))
        self._producer = producer or make_producer(bootstrap, timeout_seconds, **producer_config)
        self._failures: list[tuple[str, str]] = []

    def check(self, event: bytes | Mapping[str, Any]) -> Routed:
        """Route one event and apply the client's own refusals (raises `UnroutableEvent` or
        `RefusedEvent`); `rejection` says whether the contract accepts it."""
        topic, key, value = route(event, self.topics)
        decoded = decode_event(value)
        contract = decoded if isinstance(decoded, Rejection) else None
        if not isinstance(decoded, Rejection):
            refused = self.bounds.check(decoded, self._now())
            if refused is not None:
                raise RefusedEvent(refused)
        if key is None:
            raise RefusedEvent(
                Rejection(
                    reason=admission.NO_KEY,
                    detail="no session_id to key the message by (every message of a session must "
                    "carry it, so they share a partition)",
                )
            )
        self._check_size(topic, key, value)
        return Routed(topic, key, value, contract)

    def _check_size(self, topic: str, key: bytes, value: bytes) -> None:
        limit = self.message_limits.get(topic)
        size = len(key) + len(value) + RECORD_OVERHEAD
        if limit is not None and size > limit:
            raise RefusedEvent(
                Rejection(
                    reason=admission.MESSAGE_TOO_LARGE,
                    detail=f"{len(value)} bytes; {topic} takes at most {limit - RECORD_OVERHEAD} "
                    "(its max.message.bytes less the record overhead)",
                )
            )

    def produce(self, routed: Routed, label: str | None = None) -> Any:
        """Send a checked event; its failure is reported by the next `flush` as `label`."""
        return self.produce_raw(routed.topic, routed.key, routed.value, label=label)

    def produce_raw(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]] | None = None,
        *,
        label: str | None = None,
    ) -> Any:
        where = label or f"{topic} key {key!r}"
        if headers:
            future = self._producer.send(topic, key=key, value=value, headers=headers)
        else:
            future = self._producer.send(topic, key=key, value=value)
        if future is not None:  # (a test double's send may return None)
            future.add_errback(lambda exc: self._failures.append((where, _why(exc))))
        return future

    def send(self, event: bytes | Mapping[str, Any], label: str | None = None) -> Any:
        """Queue one event; returns kafka-python's future (`.get(timeout)` waits for the ack).
        Its failure, if any, is also raised by the next `flush`."""
        return self.produce(self.check(event), label)

    def send_all(self, events: Iterable[bytes | Mapping[str, Any]]) -> int:
        """Send every event and wait until each is acknowledged (`DeliveryFailed` if not)."""
        count = 0
        for event in events:
            self.send(event)
            count += 1
        self.flush()
        return count

    def flush(self, timeout: float | None = None) -> None:
        """Wait for every queued message; raise `DeliveryFailed` for those not delivered."""
        self._producer.flush(timeout)
        if self._failures:
            failures, self._failures = self._failures, []
            raise DeliveryFailed(failures)

    def close(self, timeout: float | None = None) -> None:
        try:
            self.flush(timeout)
        finally:
            self._producer.close(timeout)

    def __enter__(self) -> DeviceClient:
        return self

    def __exit__(self, exc_type: object, *_exc: object) -> None:
        if exc_type is None:
            self.close()
            return
        with suppress(DeliveryFailed):  # already failing: keep that error, not this report
            self.close()


def _why(exc: BaseException) -> str:
    name = type(exc).__name__
    text = str(exc)
    if name == "MessageSizeTooLargeError":
        return "the broker refused it as too large (MessageSizeTooLargeError)"
    return f"{name}: {text}" if text and text != "None" else name
