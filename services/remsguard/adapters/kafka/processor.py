"""The faust-streaming app of `remsguard processor`: a thin shell around `StreamProcessor`.

- One agent (`concurrency=1`) over one multi-name topic: the three input topics and the
  tick topic, raw bytes in and out, keys are raw UTF-8 session ids.
- One table, `sessions` (memory store, changelog-backed): bytes session id -> stored session
  (`handlers/stored_session.py`). It is written only in the agent loop, when a partition's
  state is flushed.
- One timer, on every worker: skipped while rebalancing; (re)builds the deadline heaps when
  the assignment changed; advances each actively owned partition's clock; sends a tick to
  the tick topic for every due session (and a flush request for partitions whose processed
  messages wait too long for their state write).
- Outputs go into record batches per topic-partition (`Outbox`); manual acks
  (`WriteBehind`): a message is acked only once its partition's state is in the changelog
  (acknowledged by Kafka), and that state is sent only once every output sent before it is
  acknowledged. The changelog copy is sent by the agent itself and awaited: faust's own
  table writes go through a send-soon buffer that its pre-commit flush may leave undrained
  (`flush_atmost` gives up after 0.1 s), so offsets could be committed ahead of the state they
  need, and a worker taking over would skip readings it never saw.

`_Worker` holds what the agent, the timer and the rebalance callbacks do; `create_app` builds
the pieces and registers those with faust.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import faust
import structlog
from faust.types import TP
from kafka.partitioner.default import murmur2
from prometheus_client import CollectorRegistry
from sqlalchemy.exc import SQLAlchemyError

from remsguard.adapters.kafka.health import WorkerHealth
from remsguard.adapters.kafka.outbox import Outbox
from remsguard.adapters.kafka.rebalance import HeldResumes, positions, recovery_state
from remsguard.adapters.kafka.topics import Topics
from remsguard.adapters.kafka.worker_metrics import LeanMonitor, MessageCounts, ProcessorMetrics
from remsguard.adapters.kafka.write_behind import WriteBehind
from remsguard.adapters.storage import ComplianceLog
from remsguard.adapters.storage.registry import RegistryStore
from remsguard.adapters.telemetry import ClinicLabels, Telemetry
from remsguard.config import Settings, UnsetDatabase, compliance_log_url
from remsguard.domain.admission import EventTimeBounds
from remsguard.domain.engine import MonitoringEngine
from remsguard.handlers.stream import FLUSH, SessionStore, StreamProcessor
from remsguard.protocols import load_protocols

__all__ = ["ProcessorMetrics", "create_app"]

log = structlog.get_logger("remsguard.processor")

SESSIONS_SCAN_SECONDS = 5.0  # how often the timer counts sessions for telemetry
STATE_LOG_SECONDS = 10.0  # how often the timer logs the processor's state

CHANGELOG_CONFIG = {
    "cleanup.policy": "compact",
    "segment.bytes": str(64 * 1024 * 1024),
    "segment.ms": str(60 * 60 * 1000),
    "min.cleanable.dirty.ratio": "0.2",
}


class _Worker:
    """One worker: what its agent does with a message, what its timer does, and what a
    rebalance changes."""

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        table: Any,
        processor: StreamProcessor,
        metrics: ProcessorMetrics,
        telemetry: Telemetry,
    ) -> None:
        self.app = app
        self.settings = settings
        self.topics = Topics.from_settings(settings)
        self.table = table
        self.changelog = table.changelog_topic.get_topic_name()
        self.processor = processor
        self.metrics = metrics
        self.telemetry = telemetry
        self.health = WorkerHealth(settings.processor_stall_seconds)
        self.outbox = Outbox(app)
        self.pending = WriteBehind()
        self.logical = len(settings.topic_prefix)  # telemetry labels topics without the prefix
        self.counted = MessageCounts(metrics, telemetry, self.logical)
        self._inputs = frozenset(self.topics.inputs)
        self._kinds = {name: "input" for name in self.topics.inputs} | {self.topics.ticks: "tick"}
        # faust's resumes of the agent's sources, held back during a rebalance (rebalance.py)
        self.resumes = HeldResumes(app, (*self.topics.inputs, self.topics.ticks))
        self._rebalances = -1  # `app.rebalancing_count` when the assignment was last taken
        self._sessions_counted = 0.0
        self._evicted = time.monotonic()
        self._logged = 0.0

    # -- the agent -------------------------------------------------------------------------

    async def agent(self, stream: Any) -> None:
        """Every message of the input and tick topics, in order; acked by `WriteBehind`."""
        try:
            manual = stream.noack()
            async for event in manual.events():
                await self._message(event, manual.ack)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # faust restarts the agent: make a crash loop visible
            self.health.crashed(exc)
            log.error("processor.agent_crashed", error=f"{type(exc).__name__}: {exc}"[:500])
            raise

    async def _message(self, event: Any, ack: Callable[[Any], Any]) -> None:
        message = event.message
        partition = message.partition
        processor = self.processor
        if not processor.owns(partition):
            return  # buffered before a revocation: its new owner processes it
        started = time.perf_counter()
        if message.topic in self._inputs:  # faust lost messages (see `HeldResumes`)
            expected = processor.consumed(message.topic, partition)
            if expected is not None and message.offset > expected:
                log.warning(
                    "processor.input_skipped",
                    topic=message.topic,
                    partition=partition,
                    expected=expected,
                    got=message.offset,
                )
        if message.topic == self.topics.ticks and message.value == FLUSH:
            self.health.heartbeat_seen(partition)
        result = processor.process(
            message.topic,
            partition,
            message.offset,
            message.key,
            message.value,
            message.timestamp,
        )
        send = self.outbox.send
        sends = [await send(out.topic, out.key, out.value, out.headers) for out in result.outbound]
        self.pending.processed(partition, event, sends)
        self.metrics.latency.observe(time.perf_counter() - started)
        self.counted(self._kinds.get(message.topic, "other"), message, result)
        if not processor.owns(partition):  # revoked while we sent: its new owner redoes it
            self.pending.drop({partition})
            return
        if processor.should_flush(partition):  # a flush request only brings us here
            self.pending.seal(partition, processor.flush(partition))
        written = await self.pending.settle(partition, self._write, ack)
        if written:
            self.metrics.flushes.inc(written)

    async def _write(self, partition: int, key: bytes, blob: bytes | None) -> Any:
        """One session's state: the table's local copy, and the changelog's, sent here (None
        deletes the key: a Kafka tombstone)."""
        if blob is None:
            self.table.data.pop(key, None)
        else:
            self.table.data[key] = blob
        return await self.app.producer.send(self.changelog, key, blob, partition, None, None)

    # -- the timer -------------------------------------------------------------------------

    async def timer(self) -> None:
        """Health; the assignment; the partitions' clocks; eviction; deadline ticks and
        flush requests for the agent."""
        app, health = self.app, self.health
        health.timer_ran(bool(app.rebalancing))
        self.telemetry.up("processor", health.check() is None)
        if app.rebalancing:
            self._log_rebalancing()
            return
        self.resumes.release()
        owned = self._follow_assignment()
        if not owned:
            return
        ends = await self._input_ends(owned)
        wall = datetime.now(UTC)
        self.processor.clocks(ends, wall)
        self._evict()
        self._observe(ends, wall)
        await self._send_ticks()
        await self._request_flushes(owned)

    def _log_rebalancing(self) -> None:
        """Every STATE_LOG_SECONDS while a rebalance lasts: where the consumer and the table
        recovery stand."""
        now = time.monotonic()
        if now - self._logged >= STATE_LOG_SECONDS:
            self._logged = now
            log.info("processor.rebalancing", **recovery_state(self.app), **self._positions())

    def _follow_assignment(self) -> set[int]:
        """The input partitions actively owned now; the processor takes them (rebuilding its
        deadline heaps) whenever the assignment changed."""
        app, processor = self.app, self.processor
        actives = app.assignor.assigned_actives()
        owned = {tp.partition for tp in actives if tp.topic in self._inputs}
        if self._rebalances != app.rebalancing_count or owned != processor.partitions:
            lost = processor.partitions - owned
            self.pending.drop(lost)
            self.health.revoked(lost)
            self.outbox.rebalanced()
            processor.assign(owned)
            log.info(
                "processor.took_assignment",
                owned=sorted(owned),
                sessions=len(processor.store),
                table=len(self.table.data),
                **self._positions(),
            )
            self._rebalances = app.rebalancing_count
            self.metrics.partitions.set(len(owned))
        return owned

    async def _input_ends(self, owned: set[int]) -> dict[tuple[str, int], int]:
        """End offsets of the owned input partitions as of the consumer's last fetch (no
        broker round trip: this runs twice a second); missing until the first fetch
        answered, which counts as lagging. Where consumption starts is noted for partitions
        nothing has been processed of yet."""
        consumer, processor = self.app.consumer, self.processor
        tps = [TP(topic, p) for topic in self.topics.inputs for p in sorted(owned)]
        ends: dict[tuple[str, int], int] = {}
        for tp in tps:
            end = consumer.highwater(tp)
            if end is not None:
                ends[(tp.topic, tp.partition)] = end
        unknown = [tp for tp in tps if not processor.has_consumed(tp.topic, tp.partition)]
        if unknown:
            rebalances = self.app.rebalancing_count
            starts = await self._starts(unknown)
            if self.app.rebalancing or rebalances != self.app.rebalancing_count:
                return ends  # noted for the next assignment's partitions, not these
            for tp, start in starts.items():
                processor.note_position(tp.topic, tp.partition, start)
            log.info(
                "processor.starts",
                starts={f"{tp.topic}/{tp.partition}": o for tp, o in starts.items()},
                **self._positions(),
            )
        return ends

    async def _starts(self, tps: list[TP]) -> dict[TP, int]:
        """Where the agent's processing of `tps` starts: the committed offset (the assignment
        seeks there; faust keeps what it read and what it committed since), else the log's
        start (`auto_offset_reset=earliest`). Not the consumer's position: that is the fetch
        position, up to a stream buffer ahead of the agent, and taken for the processed
        position it made an input with readings still queued look caught up, so the clock
        went to the wall clock and decided deadlines without them (a takeover under load)."""
        committed = self.app.consumer._committed_offset  # type: ignore[attr-defined]
        starts = {tp: committed.get(tp) for tp in tps}
        missing = [tp for tp, start in starts.items() if start is None]
        if missing:
            earliest = await self.app.consumer.earliest_offsets(*missing)
            starts.update({tp: earliest.get(tp) for tp in missing})
        return {tp: start for tp, start in starts.items() if start is not None}

    def _evict(self) -> None:
        """Every `session_eviction_seconds`: finished sessions past the retention leave (their
        tombstones are written with each partition's next flush)."""
        if time.monotonic() - self._evicted < self.settings.session_eviction_seconds:
            return
        self._evicted = time.monotonic()
        gone = self.processor.evict()
        self.metrics.evictions.inc(len(gone))
        if gone:
            at = self.processor.eviction_clock()
            log.info("processor.evicted", sessions=len(gone), clock=at and at.isoformat())

    def _observe(self, ends: dict[tuple[str, int], int], wall: datetime) -> None:
        """Consumer and clock lags; every few seconds the sessions' gauges and a state line."""
        processor, telemetry = self.processor, self.telemetry
        for (topic, p), end in ends.items():
            position = processor.consumed(topic, p)
            if position is not None:
                telemetry.set_consumer_lag(topic[self.logical :], p, end - position)
        for partition, lag in processor.clock_lags(wall).items():
            self.metrics.clock_lag.labels(str(partition)).set(lag)
        now = time.monotonic()
        if now - self._sessions_counted >= SESSIONS_SCAN_SECONDS:
            self._sessions_counted = now
            engine = processor.engine
            telemetry.observe_sessions(engine.sessions.values(), engine.protocol_of)
        if now - self._logged >= STATE_LOG_SECONDS:
            self._logged = now
            ends_by_name = {f"{topic}/{p}": end for (topic, p), end in sorted(ends.items())}
            log.info("processor state", ends=ends_by_name, **processor.stats())

    async def _send_ticks(self) -> None:
        """A tick for every session with a deadline due, to its partition of the tick topic."""
        producer, ticks, processor = self.app.producer, self.topics.ticks, self.processor
        for partition, session_id, now in processor.due_ticks():
            value = processor.tick_value(now)
            await producer.send(ticks, session_id.encode("utf-8"), value, partition, None, None)

    async def _request_flushes(self, owned: set[int]) -> None:
        """A flush request (`F`) to each partition whose state waits to be written, and
        every few seconds to all (the health heartbeat: it must come back through the
        agent)."""
        flushes = {*self.processor.stale_partitions(), *self.pending.waiting()}
        if self.health.heartbeat_due():
            self.health.heartbeats_sent(owned)
            flushes |= owned
        producer, ticks = self.app.producer, self.topics.ticks
        for partition in flushes:
            await producer.send(ticks, b"", FLUSH, partition, None, None)

    # -- rebalances ------------------------------------------------------------------------

    def assigned(self, got: set[TP]) -> None:
        """Accept the new partitions' messages now (their state may still be recovering)."""
        self.resumes.install()
        partitions = {tp.partition for tp in got if tp.topic in self._inputs}
        log.info("processor.assigned", partitions=sorted(partitions), **self._positions())
        self.processor.adopt(partitions)

    def _positions(self) -> dict[str, Any]:
        """Where faust and the processor stand on the inputs, for the rebalance log lines."""
        return {**positions(self.app), "consumed": self.processor.stats()["consumed"]}

    def revoked(self, revoked: set[TP]) -> None:
        lost = {tp.partition for tp in revoked if tp.topic in self._inputs}
        log.info("processor.revoked", partitions=sorted(lost), **self._positions())
        self.health.revoked(lost)
        self.pending.drop(lost)
        self.processor.revoke(lost)


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
        monitor=LeanMonitor(),
    )


def _sessions_table(app: faust.App, partitions: int) -> Any:
    """The `sessions` table: raw bytes both ways, a compacted changelog."""
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
    return table


def _stream_processor(
    settings: Settings, engine: MonitoringEngine, store: SessionStore
) -> StreamProcessor:
    return StreamProcessor(
        engine,
        store,
        Topics.from_settings(settings).stream(),
        idle_grace_seconds=settings.clock_idle_grace_seconds,
        flush_seconds=settings.state_flush_seconds,
        backlog_flush_seconds=settings.state_flush_backlog_seconds,
        bounds=EventTimeBounds.of(settings.event_max_future_seconds, settings.event_max_age_days),
        partition_count=settings.topic_partitions,
        key_hash=murmur2,
        retention=timedelta(hours=settings.session_retention_hours),
    )


def create_app(
    settings: Settings,
    registry: CollectorRegistry,
    protocol_files: list[Path] | None = None,
) -> faust.App:
    """The worker's faust app: its table, engine and stream processor, and the agent, timers
    and rebalance callbacks of a `_Worker` over them."""
    app = _faust_app(settings)
    table = _sessions_table(app, settings.topic_partitions)
    store = SessionStore(table)
    engine = MonitoringEngine(
        load_protocols(protocol_files or settings.protocol_files),
        default_protocol=settings.default_protocol,
        sessions=store,
    )
    refresh_registry = _rems_gate(settings, engine)
    worker = _Worker(
        app,
        settings,
        table,
        _stream_processor(settings, engine, store),
        ProcessorMetrics(registry),
        Telemetry(registry, ClinicLabels(settings.metrics_max_clinics)),
    )
    topics = worker.topics
    raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
    source = app.topic(*topics.inputs, topics.ticks, key_type=bytes, value_type=bytes, **raw)

    # A plain coroutine, not a generator: faust formats a debug line for every value an agent
    # yields, whatever the log level (14% of a do-nothing agent's time).
    @app.agent(source, concurrency=1)
    async def process(stream: Any) -> None:
        await worker.agent(stream)

    @app.timer(interval=settings.clock_tick_seconds)  # type: ignore[untyped-decorator]
    async def clock() -> None:
        await worker.timer()

    if refresh_registry is not None:
        refresh = refresh_registry

        @app.timer(interval=settings.registry_refresh_seconds)  # type: ignore[untyped-decorator]
        async def registry_refresh() -> None:
            await asyncio.to_thread(refresh)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(_sender: Any, *args: Any, **_kwargs: Any) -> None:
        worker.assigned(args[0] if args else set())

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(_sender: Any, *args: Any, **_kwargs: Any) -> None:
        worker.revoked(args[0] if args else set())

    app.remsguard = {  # type: ignore[attr-defined]
        "worker": worker,
        "processor": worker.processor,
        "metrics": worker.metrics,
        "telemetry": worker.telemetry,
        "topics": topics,
        "agent": process,
        "timer": clock,
        "health": worker.health,
    }
    return app
