"""The faust-streaming app of `remsguard processor`: a thin shell around `StreamProcessor`.

- One agent (`concurrency=1`) over one multi-name topic: the three input topics and the
  tick topic, raw bytes in and out, keys are raw UTF-8 session ids.
- One table, `sessions` (memory store, changelog-backed): bytes session id -> pickled
  session. It is written only in the agent loop, when a partition's state is flushed.
- One timer, on every worker: skipped while rebalancing; (re)builds the deadline heaps when
  the assignment changed; advances each actively owned partition's clock; sends a tick to
  the tick topic for every due session (and a flush request for partitions whose processed
  messages wait too long for their state write).
- Manual acks: a message is acked only once its partition's state is in the changelog
  (acknowledged by Kafka), and that state is sent only once every output sent before it is
  acknowledged. The changelog copy is sent by the agent itself and awaited: faust's own
  table writes go through a send-soon buffer that its pre-commit flush may leave undrained
  (`flush_atmost` gives up after 0.1 s), so offsets could be committed ahead of the state they
  need, and a worker taking over would skip readings it never saw.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from time import monotonic
from typing import Any

import faust
import structlog
from faust.sensors import Monitor
from faust.types import TP, EventT, Message, StreamT
from kafka.partitioner.default import murmur2
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy.exc import SQLAlchemyError

from remsguard.adapters.kafka.health import WorkerHealth
from remsguard.adapters.kafka.topics import Topics
from remsguard.adapters.storage import ComplianceLog
from remsguard.adapters.storage.registry import RegistryStore
from remsguard.adapters.telemetry import ClinicLabels, Series, Telemetry
from remsguard.config import Settings, UnsetDatabase, compliance_log_url
from remsguard.domain.admission import EventTimeBounds
from remsguard.domain.engine import MonitoringEngine
from remsguard.handlers.stream import (
    FLUSH,
    PROCESSING_ERROR,
    Result,
    SessionStore,
    StreamProcessor,
)
from remsguard.protocols import load_protocols

__all__ = ["ProcessorMetrics", "create_app"]

log = structlog.get_logger("remsguard.processor")

SESSIONS_SCAN_SECONDS = 5.0  # how often the timer counts sessions for telemetry

CHANGELOG_CONFIG = {
    "cleanup.policy": "compact",
    "segment.bytes": str(64 * 1024 * 1024),
    "segment.ms": str(60 * 60 * 1000),
    "min.cleanable.dirty.ratio": "0.2",
}


class ProcessorMetrics:
    """Counts and latencies of the processor, registered on an explicit registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Counter(
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
        self.latency = Histogram(
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


@dataclass(slots=True)
class _Sealed:
    """A partition's state as of one flush, written once the outputs before it are acked."""

    blobs: list[tuple[bytes, bytes | None]]  # None: delete the key (a Kafka tombstone)
    sends: list[Any]
    events: list[Any]


@dataclass(slots=True)
class _Written:
    """A partition's state sent to the changelog; its messages are acked once Kafka has it."""

    sends: list[Any]
    events: list[Any]


@dataclass
class _Pending:
    """Per partition: messages waiting for their state write, outputs waiting for acks,
    sealed state snapshots waiting for those acks, and written snapshots waiting for the
    changelog's acks (each oldest first)."""

    events: dict[int, list[Any]] = field(default_factory=lambda: defaultdict(list))
    sends: dict[int, list[Any]] = field(default_factory=lambda: defaultdict(list))
    sealed: dict[int, deque[_Sealed]] = field(default_factory=lambda: defaultdict(deque))
    written: dict[int, deque[_Written]] = field(default_factory=lambda: defaultdict(deque))

    def drop(self, partitions: set[int]) -> None:
        for partition in partitions:
            self.events.pop(partition, None)
            self.sends.pop(partition, None)
            self.sealed.pop(partition, None)
            self.written.pop(partition, None)

    def waiting(self) -> list[int]:
        stages = (self.sealed, self.written)
        return sorted({p for stage in stages for p, batches in stage.items() if batches})

    def seal(self, partition: int, blobs: list[tuple[bytes, bytes | None]]) -> None:
        """The partition's state now, to be written once every output sent before it is
        acknowledged (`settle`, which never blocks the stream)."""
        sends, events = self.sends.pop(partition, []), self.events.pop(partition, [])
        self.sealed[partition].append(_Sealed(blobs, sends, events))

    async def settle(
        self,
        partition: int,
        write: Callable[[bytes, bytes | None], Awaitable[Any]],
        ack: Callable[[Any], Awaitable[Any]],
    ) -> int:
        """Write the sealed states whose outputs are acknowledged (`write` sends one to the
        changelog), then ack the messages whose state the changelog acknowledged; returns
        how many states were written."""
        written = 0
        batches = self.sealed.get(partition)
        while batches and _delivered(batches[0].sends):
            batch = batches.popleft()
            sent = [await write(key, blob) for key, blob in batch.blobs]
            self.written[partition].append(_Written(sent, batch.events))
            written += 1
        done = self.written.get(partition)
        while done and _delivered(done[0].sends):
            for event in done.popleft().events:
                await ack(event)
        return written


class _KeyPartitions:
    """The partition the producer's partitioner gives a key, worked out once per topic and
    key (murmur2 in pure Python is a measurable share of each send); cleared on rebalance.
    An output topic that gains partitions between rebalances keeps each session on its old
    partition until then: per-session order holds, and no consumer depends on the partition."""

    def __init__(self, app: faust.App, limit: int = 200_000) -> None:
        self._app = app
        self._limit = limit
        self._known: dict[tuple[str, bytes], int] = {}

    def of(self, topic: str, key: bytes | None) -> int | None:
        """None: let the producer choose (no key, or the topic's metadata not loaded yet)."""
        if key is None:
            return None
        partition = self._known.get((topic, key))
        if partition is None:
            try:
                partition = int(self._app.producer.key_partition(topic, key).partition)
            except Exception:  # metadata not loaded yet: this send computes it itself
                return None
            if len(self._known) >= self._limit:
                self._known.clear()
            self._known[(topic, key)] = partition
        return partition

    def clear(self) -> None:
        self._known.clear()


class _LeanMonitor(Monitor):
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


class _MessageCounts:
    """Counts one processed message: the processor's own families and the shared telemetry
    (topics labelled without the environment's prefix, `logical` characters)."""

    def __init__(self, metrics: ProcessorMetrics, telemetry: Telemetry, logical: int) -> None:
        self._metrics = metrics
        self._messages = Series(metrics.messages)
        self._telemetry = telemetry
        self._logical = logical

    def __call__(self, kind: str, message: Any, result: Result) -> None:
        metrics, telemetry = self._metrics, self._telemetry
        self._messages(kind, result.outcome).inc()
        for rule in result.alerts:
            metrics.alerts.labels(rule).inc()
        if result.dead_letter_reason is not None:
            metrics.dead_letters.labels(result.dead_letter_reason).inc()
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


def _delivered(sends: list[Any]) -> bool:
    """Whether every send is acknowledged; raises if one failed (crash and redo, never skip)."""
    if not all(fut.done() for fut in sends):
        return False
    failed = [f.exception() for f in sends if f.exception() is not None]
    if failed:
        raise RuntimeError(f"output not delivered: {failed[0]!r}")
    return True


def _rems_gate(settings: Settings, engine: MonitoringEngine) -> Callable[[], None] | None:
    """Give the engine the REMS registry from the compliance log (REMSGUARD_DATABASE_URL) and
    return what re-reads it; None (the gate is not checked) when the gate is off or there is
    no database. A failed read keeps the registry the engine has (none before the first)."""
    if not settings.rems_gate:
        log.info("processor.rems_gate", on=False, reason="REMSGUARD_REMS_GATE=false")
        return None
    try:
        url = compliance_log_url(settings)
    except UnsetDatabase:
        log.warning(
            "processor.rems_gate",
            on=False,
            reason="no REMSGUARD_DATABASE_URL: enrollments and certifications are not checked",
        )
        return None
    store = RegistryStore(ComplianceLog.open(url, run_migrations=False))

    def refresh() -> None:
        try:
            engine.registry = store.load()
        except SQLAlchemyError as exc:
            log.warning("processor.rems_registry_unread", error=f"{type(exc).__name__}"[:200])

    refresh()
    log.info(
        "processor.rems_gate",
        on=engine.registry is not None,
        refresh_seconds=settings.registry_refresh_seconds,
    )
    return refresh


def _faust_app(settings: Settings) -> faust.App:
    """The worker's faust app: raw bytes, a memory store behind changelog topics, acks=all,
    no web server, our lean monitor."""
    brokers = ";".join(f"kafka://{b.strip()}" for b in settings.kafka_bootstrap.split(","))
    Path(settings.processor_data_dir).mkdir(parents=True, exist_ok=True)  # faust won't
    return faust.App(
        settings.processor_app_id,
        broker=brokers,
        store="memory://",
        datadir=f"{settings.processor_data_dir}/{settings.processor_app_id}",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        table_standby_replicas=0,
        processing_guarantee=settings.processing_guarantee,
        web_enabled=False,
        autodiscover=False,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger=0.01,
        producer_max_batch_size=256 * 1024,
        broker_commit_interval=1.0,
        broker_session_timeout=settings.processor_session_timeout_seconds,
        broker_heartbeat_interval=max(0.5, settings.processor_session_timeout_seconds / 10),
        stream_wait_empty=False,
        stream_buffer_maxsize=16384,
        monitor=_LeanMonitor(),
    )


def create_app(
    settings: Settings,
    registry: CollectorRegistry,
    protocol_files: list[Path] | None = None,
) -> faust.App:
    topics = Topics.from_settings(settings)
    partitions = settings.topic_partitions
    app = _faust_app(settings)
    metrics = ProcessorMetrics(registry)
    telemetry = Telemetry(registry, ClinicLabels(settings.metrics_max_clinics))
    logical = len(settings.topic_prefix)  # telemetry labels topics without the env prefix
    raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
    source = app.topic(*topics.inputs, topics.ticks, key_type=bytes, value_type=bytes, **raw)
    table: Any = app.Table(
        "sessions",
        partitions=partitions,
        key_type=bytes,
        value_type=bytes,
        extra_topic_configs=CHANGELOG_CONFIG,
    )
    # faust derives table serializers from the types (json for bytes); the changelog topic is
    # created lazily, so raw set here applies to it too.
    table.key_serializer = table.value_serializer = "raw"
    changelog = table.changelog_topic.get_topic_name()
    store = SessionStore(table)
    engine = MonitoringEngine(
        load_protocols(protocol_files or settings.protocol_files),
        default_protocol=settings.default_protocol,
        sessions=store,
    )
    refresh_registry = _rems_gate(settings, engine)
    processor = StreamProcessor(
        engine,
        store,
        topics.stream(),
        idle_grace_seconds=settings.clock_idle_grace_seconds,
        flush_seconds=settings.state_flush_seconds,
        backlog_flush_seconds=settings.state_flush_backlog_seconds,
        bounds=EventTimeBounds.of(settings.event_max_future_seconds, settings.event_max_age_days),
        partition_count=partitions,
        key_hash=murmur2,
        retention=timedelta(hours=settings.session_retention_hours),
    )
    health = WorkerHealth(settings.processor_stall_seconds)
    pending = _Pending()
    inputs = frozenset(topics.inputs)
    kinds = {name: "input" for name in topics.inputs} | {topics.ticks: "tick"}
    assigned: dict[str, Any] = {"count": -1}
    sessions_scanned = [0.0]
    evicted_at = [time.monotonic()]
    counted = _MessageCounts(metrics, telemetry, logical)
    key_partitions = _KeyPartitions(app)

    # A plain coroutine, not a generator: faust formats a debug line for every value an agent
    # yields, whatever the log level (14% of a do-nothing agent's time).
    @app.agent(source, concurrency=1)
    async def process(stream: Any) -> None:
        try:
            await _process(stream)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # faust restarts the agent: make a crash loop visible
            health.crashed(exc)
            log.error("processor.agent_crashed", error=f"{type(exc).__name__}: {exc}"[:500])
            raise

    async def _process(stream: Any) -> None:
        producer = app.producer
        partitions_of = key_partitions.of
        manual = stream.noack()
        async for event in manual.events():
            message = event.message
            partition = message.partition
            if not processor.owns(partition):
                continue  # buffered before a revocation: its new owner processes it
            started = time.perf_counter()
            if message.topic == topics.ticks and message.value == FLUSH:
                health.heartbeat_seen(partition)
            result = processor.process(
                message.topic,
                partition,
                message.offset,
                message.key,
                message.value,
                message.timestamp,
            )
            for out in result.outbound:
                # Straight to the producer: no faust Topic/FutureMessage per output.
                fut = await producer.send(
                    out.topic,
                    out.key,
                    out.value,
                    partitions_of(out.topic, out.key),
                    None,
                    list(out.headers) or None,
                )
                pending.sends[partition].append(fut)
            pending.events[partition].append(event)
            metrics.latency.observe(time.perf_counter() - started)
            counted(kinds.get(message.topic, "other"), message, result)
            if not processor.owns(partition):  # revoked while we sent: its new owner redoes it
                pending.drop({partition})
                continue
            if processor.should_flush(partition):  # a flush request only brings us here
                pending.seal(partition, processor.flush(partition))

            async def write(key: bytes, blob: bytes | None, partition: int = partition) -> Any:
                # The local copy; the changelog's is sent here (None: a Kafka tombstone).
                if blob is None:
                    table.data.pop(key, None)
                else:
                    table.data[key] = blob
                return await producer.send(changelog, key, blob, partition, None, None)

            metrics.flushes.inc(await pending.settle(partition, write, manual.ack))

    @app.timer(interval=settings.clock_tick_seconds)  # type: ignore[untyped-decorator]
    async def clock() -> None:
        health.timer_ran(bool(app.rebalancing))
        telemetry.up("processor", health.check() is None)
        if app.rebalancing:
            return
        actives = app.assignor.assigned_actives()
        owned = {tp.partition for tp in actives if tp.topic in inputs}
        if assigned["count"] != app.rebalancing_count or owned != processor.partitions:
            lost = processor.partitions - owned
            pending.drop(lost)
            health.revoked(lost)
            key_partitions.clear()
            processor.assign(owned)
            assigned["count"] = app.rebalancing_count
            metrics.partitions.set(len(owned))
        if not owned:
            return
        tps = [TP(topic, p) for topic in topics.inputs for p in sorted(owned)]
        # End offsets as of the consumer's last fetch (no broker round trip: this runs twice
        # a second); None until the first fetch answered, which counts as lagging.
        ends: dict[tuple[str, int], int] = {}
        for tp in tps:
            end = app.consumer.highwater(tp)
            if end is not None:
                ends[(tp.topic, tp.partition)] = end
        unknown = [tp for tp in tps if not processor.has_consumed(tp.topic, tp.partition)]
        if unknown:  # nothing processed yet since assignment: where does the consumer start?
            found = await asyncio.gather(*(app.consumer.position(tp) for tp in unknown))
            for tp, position in zip(unknown, found, strict=True):
                if position is not None:
                    processor.note_position(tp.topic, tp.partition, position)
        for (topic, p), end in ends.items():
            position = processor.consumed(topic, p)
            if position is not None:
                telemetry.set_consumer_lag(topic[logical:], p, end - position)
        if time.monotonic() - sessions_scanned[0] >= SESSIONS_SCAN_SECONDS:
            sessions_scanned[0] = time.monotonic()
            telemetry.observe_sessions(engine.sessions.values(), engine.protocol_of)
        wall = datetime.now(UTC)
        processor.clocks(ends, wall)
        if time.monotonic() - evicted_at[0] >= settings.session_eviction_seconds:
            evicted_at[0] = time.monotonic()
            gone = processor.evict()  # written with each partition's next flush
            metrics.evictions.inc(len(gone))
            if gone:
                at = processor.eviction_clock()
                log.info("processor.evicted", sessions=len(gone), clock=at and at.isoformat())
        for partition, lag in processor.clock_lags(wall).items():
            metrics.clock_lag.labels(str(partition)).set(lag)
        if time.monotonic() - assigned.get("logged", 0.0) >= 10:
            assigned["logged"] = time.monotonic()
            ends_by_name = {f"{topic}/{p}": end for (topic, p), end in sorted(ends.items())}
            log.info("processor state", ends=ends_by_name, **processor.stats())
        producer, ticks = app.producer, topics.ticks
        for partition, session_id, now in processor.due_ticks():
            await producer.send(
                ticks, session_id.encode("utf-8"), processor.tick_value(now), partition, None, None
            )
        flushes = {*processor.stale_partitions(), *pending.waiting()}
        if health.heartbeat_due():  # a flush request that must come back through the agent
            health.heartbeats_sent(owned)
            flushes |= owned
        for partition in flushes:
            await producer.send(ticks, b"", FLUSH, partition, None, None)

    if refresh_registry is not None:

        @app.timer(interval=settings.registry_refresh_seconds)  # type: ignore[untyped-decorator]
        async def registry_refresh() -> None:
            await asyncio.to_thread(refresh_registry)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(_sender: Any, *args: Any, **_kwargs: Any) -> None:
        got: set[TP] = args[0] if args else set()
        processor.adopt({tp.partition for tp in got if tp.topic in inputs})

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(_sender: Any, *args: Any, **_kwargs: Any) -> None:
        revoked: set[TP] = args[0] if args else set()
        lost = {tp.partition for tp in revoked if tp.topic in inputs}
        health.revoked(lost)
        pending.drop(lost)
        processor.revoke(lost)

    app.remsguard = {  # type: ignore[attr-defined]
        "processor": processor,
        "metrics": metrics,
        "telemetry": telemetry,
        "topics": topics,
        "agent": process,
        "timer": clock,
        "health": health,
    }
    return app
