"""The audit sink's consumer loop: poll a batch, store it, commit, repeat (`remsguard audit-sink`).

At-least-once: offsets are committed only after the batch is stored (`handlers/audit_sink.py`
stores idempotently), so a crash re-delivers it and nothing is doubled. Between batches the
loop reports the audit topic's consumer lag and signs a tree head every `sign_every` seconds
when it has a key; it stops on `stop()` (SIGTERM/SIGINT in the command) or after
`idle_timeout` seconds without a message, signing a last head on the way out.

It needs no Kafka, database or metrics library: the command hands it ports (a consumer with
kafka-python's `poll`/`commit`/`assignment`/`highwater`/`position`, the storing and signing
steps, the telemetry calls) and the topic names (`SinkTopics`, from `adapters.kafka.Topics`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from remsguard.handlers.audit_sink import SinkBatch, Stored, decode_batch

__all__ = ["AuditSinkLoop", "SinkConsumer", "SinkTelemetry", "SinkTopics"]

log = structlog.get_logger("remsguard.audit")


@dataclass(frozen=True, slots=True)
class SinkTopics:
    """What the sink reads: audit records, alerts (for the alerts table) and, for the forms,
    the input events; `lag_name` is the audit topic's name in the lag metric (no prefix)."""

    audit: str
    alerts: str
    inputs: tuple[str, ...]
    lag_name: str

    @property
    def all(self) -> tuple[str, ...]:
        return (self.audit, self.alerts, *self.inputs)

    def kind(self, topic: str) -> str:
        """The kind `decode_batch` reads a message of this topic as."""
        if topic == self.audit:
            return "audit"
        return "alert" if topic == self.alerts else "event"


class SinkConsumer(Protocol):
    """The part of kafka-python's `KafkaConsumer` the loop uses (auto-commit off)."""

    def poll(self, timeout_ms: int, max_records: int) -> Mapping[Any, Sequence[Any]]: ...
    def commit(self) -> None: ...
    def assignment(self) -> Iterable[Any]: ...
    def highwater(self, partition: Any) -> int | None: ...
    def position(self, partition: Any) -> int: ...


class SinkTelemetry(Protocol):
    def audit_batch(self, inserted: int, duplicates: int, seconds: float) -> None: ...
    def set_consumer_lag(self, topic: str, partition: int, lag: int) -> None: ...
    def up(self, service: str, running: bool = True) -> None: ...


@dataclass
class AuditSinkLoop:
    consumer: SinkConsumer
    topics: SinkTopics
    store: Callable[[SinkBatch], Stored]  # store a decoded batch in the compliance log
    telemetry: SinkTelemetry
    sign_head: Callable[[], object] | None = None  # None: no signing key
    batch: int = 5000
    sign_every: float = 60.0
    idle_timeout: float | None = None
    stopping: bool = False

    def stop(self, *_: object) -> None:
        """Finish the batch in hand, then return from `run` (a signal handler)."""
        self.stopping = True

    def run(self) -> None:
        last_message = last_sign = time.monotonic()
        while not self.stopping:
            polled = self.consumer.poll(timeout_ms=500, max_records=self.batch)
            now = time.monotonic()
            if self._store(polled, now):
                last_message = now
            self._report_lag()
            self.telemetry.up("audit-sink")
            if self.sign_head is not None and 0 < self.sign_every <= now - last_sign:
                self.sign_head()
                last_sign = now
            if self.idle_timeout is not None and now - last_message >= self.idle_timeout:
                break
        if self.sign_head is not None:
            self.sign_head()

    def _store(self, polled: Mapping[Any, Sequence[Any]], started: float) -> bool:
        """Store and commit one polled batch; False when there was nothing."""
        messages = [
            (self.topics.kind(tp.topic), m.value, f"{tp.topic}/{tp.partition}@{m.offset}")
            for tp, ms in polled.items()
            for m in ms
        ]
        if not messages:
            return False
        decoded = decode_batch(messages)
        for where, why in decoded.malformed:
            log.error("audit_sink.malformed", where=where, reason=why)
        stored = self.store(decoded)
        self.consumer.commit()
        self.telemetry.audit_batch(stored.records, stored.duplicates, time.monotonic() - started)
        log.info(
            "audit_sink.batch",
            messages=len(messages),
            inserted=stored.records,
            duplicates=stored.duplicates,
            alerts=stored.alerts,
        )
        return True

    def _report_lag(self) -> None:
        for tp in self.consumer.assignment():
            end = self.consumer.highwater(tp) if tp.topic == self.topics.audit else None
            if end is not None:
                lag = end - self.consumer.position(tp)
                self.telemetry.set_consumer_lag(self.topics.lag_name, tp.partition, lag)
