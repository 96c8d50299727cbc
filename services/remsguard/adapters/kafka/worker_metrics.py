"""The processor's own metric families, the per-message counting, and faust's monitor
trimmed to what faust's stall diagnostics read."""

from __future__ import annotations

from time import monotonic
from typing import Any

from faust.sensors import Monitor
from faust.types import TP, EventT, Message, StreamT
from prometheus_client import CollectorRegistry, Counter, Gauge

from remsguard.adapters.metrics import PerMessageCounter, PerMessageHistogram
from remsguard.adapters.telemetry import Series, Telemetry
from remsguard.handlers.stream import PROCESSING_ERROR, Result

__all__ = ["LeanMonitor", "MessageCounts", "ProcessorMetrics"]


class ProcessorMetrics:
    """Counts and latencies of the processor, registered on an explicit registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = PerMessageCounter(  # once per message: see adapters/metrics.py
            "remsguard_processor_messages_total",
            "Messages processed, by topic kind and outcome.",
            ["kind", "outcome"],
            registry=registry,
        )
        self.alerts = Counter(
            "remsguard_processor_alerts_total",
            "Alerts raised (re-sent ones after a restart included), by rule.",
            ["rule"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "remsguard_processor_dead_letters_total",
            "Messages sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=registry,
        )
        self.latency = PerMessageHistogram(
            "remsguard_processor_message_seconds",
            "Time to process one message (decode, engine, queue outputs).",
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0),
            registry=registry,
        )
        self.flushes = Counter(
            "remsguard_processor_state_flushes_total",
            "Session-state writes to the changelog table (one per partition flush).",
            registry=registry,
        )
        self.clock_lag = Gauge(
            "remsguard_processor_clock_lag_seconds",
            "How far the partition's deadline clock is behind the wall clock: 0 once every "
            "input is caught up and quiet, else wall clock minus the event-time clock.",
            ["partition"],
            registry=registry,
        )
        self.evictions = Counter(
            "remsguard_processor_sessions_evicted_total",
            "Finished sessions evicted from memory and the changelog after the retention.",
            registry=registry,
        )
        self.partitions = Gauge(
            "remsguard_processor_partitions",
            "Partitions actively owned by this worker.",
            registry=registry,
        )


class LeanMonitor(Monitor):
    """faust's monitor without its per-message statistics (counts by stream and task,
    event runtimes), which nothing here reads: ~5% of a do-nothing agent's time. It keeps
    what faust's own stall diagnostics read (`stream_inbound_time`, read offsets)."""

    def on_message_in(self, tp: TP, offset: int, message: Message) -> None:
        self.tp_read_offsets[tp] = offset

    def on_stream_event_in(
        self, tp: TP, offset: int, stream: StreamT[Any], event: EventT[Any]
    ) -> dict[str, Any] | None:
        self.stream_inbound_time[tp] = monotonic()
        return None

    def on_stream_event_out(
        self,
        tp: TP,
        offset: int,
        stream: StreamT[Any],
        event: EventT[Any],
        state: dict[str, Any] | None = None,
    ) -> None:
        return None

    def on_message_out(self, tp: TP, offset: int, message: Message) -> None:
        return None


class MessageCounts:
    """Counts one processed message: the processor's own families and the shared telemetry
    (topics labelled without the environment's prefix, `logical` characters)."""

    def __init__(self, metrics: ProcessorMetrics, telemetry: Telemetry, logical: int) -> None:
        self._messages = metrics.messages.labels  # looked up once per label set already
        self._alerts = Series(metrics.alerts)
        self._dead_letters = Series(metrics.dead_letters)
        self._telemetry = telemetry
        self._logical = logical

    def __call__(self, kind: str, message: Any, result: Result) -> None:
        telemetry = self._telemetry
        self._messages(kind, result.outcome).inc()
        for rule in result.alerts:
            self._alerts(rule).inc()
        if result.dead_letter_reason is not None:
            self._dead_letters(result.dead_letter_reason).inc()
        topic = message.topic[self._logical :]
        if result.outcome == PROCESSING_ERROR:
            telemetry.dead_letter(topic, PROCESSING_ERROR)
        elif result.decisions is not None:
            telemetry.observe_decisions(
                result.decisions,
                topic=topic if kind == "input" else None,
                event=result.event,
                ingested_at=message.timestamp if kind == "input" else None,
                dead_lettered=True,
            )
