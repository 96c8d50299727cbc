"""`remsguard topics create | processor | publish FILE | alerts tail`: the Kafka path's commands."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from remsguard.config import get_settings


def _quiet_kafka_clients() -> None:
    """kafka-python and aiokafka log every connection at INFO; keep their warnings only."""
    for name in ("kafka", "aiokafka"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _ensure_topics() -> None:
    from remsguard.adapters.kafka.topics import Topics, create_topics

    settings = get_settings()
    create_topics(
        settings.kafka_bootstrap,
        Topics.from_settings(settings),
        settings.topic_partitions,
        settings.topic_replication,
    )


topics_app = typer.Typer(help="Kafka topics of the production path.", no_args_is_help=True)
alerts_app = typer.Typer(help="Read the alerts stream.", no_args_is_help=True)


@topics_app.command("create")
def topics_create(
    partitions: Annotated[
        int | None, typer.Option(help="default: REMSGUARD_TOPIC_PARTITIONS")
    ] = None,
    replication: Annotated[
        int | None, typer.Option(help="default: REMSGUARD_TOPIC_REPLICATION")
    ] = None,
) -> None:
    """Create every remsguard topic that does not exist yet (idempotent)."""
    from remsguard.adapters.kafka.topics import Topics, create_topics

    settings = get_settings()
    result = create_topics(
        settings.kafka_bootstrap,
        Topics.from_settings(settings),
        partitions or settings.topic_partitions,
        replication or settings.topic_replication,
    )
    for name, state in result.items():
        typer.echo(f"{name}\t{state}")


def processor_command(
    protocol_file: Annotated[
        list[Path] | None, typer.Option(help="a clinic's own protocol file (repeatable)")
    ] = None,
) -> None:
    """Run a stream-processor worker (faust-streaming); stops cleanly on SIGTERM."""
    import faust

    from remsguard.adapters.heap import settle_heap
    from remsguard.adapters.kafka.processor import create_app
    from remsguard.adapters.logs import configure_logging
    from remsguard.adapters.metrics import new_registry, serve_metrics

    settings = get_settings()
    _ensure_topics()
    registry = new_registry()
    server = serve_metrics(registry, "0.0.0.0", settings.metrics_port)
    typer.echo(f"metrics and health on http://{server.host}:{server.port}/", err=True)
    app = create_app(settings, registry, protocol_file)
    settle_heap()
    worker = faust.Worker(
        app,
        loglevel=settings.log_level.upper(),
        quiet=True,
        override_logging=False,
        redirect_stdouts=False,
    )
    configure_logging(settings.log_level, settings.log_format)
    _quiet_kafka_clients()
    try:
        worker.execute_from_commandline()
    finally:
        server.close()


def publish_command(
    file: Annotated[str, typer.Argument(help="JSON-lines events ('-' = stdin)")],
) -> None:
    """Publish each event of a JSON-lines file to the topic of its type (acks=all)."""
    from remsguard.adapters.kafka.topics import Topics
    from remsguard.client import DeviceClient, RefusedEvent, UnroutableEvent
    from remsguard.domain.admission import EventTimeBounds

    _quiet_kafka_clients()
    settings = get_settings()
    _ensure_topics()  # never let the broker auto-create an input topic un-co-partitioned
    handle = sys.stdin.buffer if file == "-" else Path(file).open("rb")  # noqa: SIM115
    bounds = EventTimeBounds.of(settings.event_max_future_seconds, settings.event_max_age_days)
    topics = Topics.from_settings(settings)
    sent = skipped = refused = 0
    with handle, DeviceClient(settings.kafka_bootstrap, topics, bounds=bounds) as client:
        for number, line in enumerate(handle, start=1):
            line = line.strip()
            if not line:
                continue
            try:
                client.send(line)
                sent += 1
            except UnroutableEvent as exc:
                skipped += 1
                sys.stderr.write(f"line {number}: not published: {exc}\n")
            except RefusedEvent as exc:
                refused += 1
                sys.stderr.write(f"line {number}: not published: {exc}\n")
    typer.echo(
        f"published {sent} events ({skipped} unroutable, {refused} refused for their time)",
        err=True,
    )
    if skipped or refused:
        raise typer.Exit(1)


@alerts_app.command("tail")
def alerts_tail(
    from_beginning: Annotated[bool, typer.Option(help="start at the oldest alert")] = False,
    idle_timeout: Annotated[
        float | None, typer.Option(help="stop after SECONDS without a new alert")
    ] = None,
) -> None:
    """Print alerts as JSON lines (the replay format), each `alert_id` once."""
    from kafka import KafkaConsumer

    from remsguard.adapters.kafka.topics import Topics

    _quiet_kafka_clients()
    settings = get_settings()
    topic = Topics.from_settings(settings).alerts
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest" if from_beginning else "latest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    seen: set[str] = set()
    out = sys.stdout.buffer
    last = time.monotonic()
    try:
        while idle_timeout is None or time.monotonic() - last < idle_timeout:
            batch = consumer.poll(timeout_ms=200, max_records=2000)
            for records in batch.values():
                for record in records:
                    alert_id = _alert_id(record.value)
                    if alert_id is None or alert_id in seen:
                        continue
                    seen.add(alert_id)
                    out.write(record.value + b"\n")
                    last = time.monotonic()
            out.flush()
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()


def _alert_id(value: bytes | None) -> str | None:
    import orjson

    try:
        doc = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    alert_id = doc.get("alert_id") if isinstance(doc, dict) else None
    return alert_id if isinstance(alert_id, str) else None
