"""`remsguard topics create | processor | publish FILE | alerts tail | deadletter list|replay`:
the Kafka path's commands. Expected failures are `KafkaPathError`s (the CLI prints them)."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from remsguard.config import get_settings


def _quiet_kafka_clients() -> None:
    """kafka-python and aiokafka log every connection at INFO; keep aiokafka's warnings (the
    processor's runtime), and none of kafka-python's retries (a command that cannot reach the
    broker says so itself, in one line) unless `--debug`."""
    from remsguard.adapters.logs import debug_enabled

    logging.getLogger("kafka").setLevel(logging.WARNING if debug_enabled() else logging.CRITICAL)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


def _ensure_topics(partitions: int | None = None, replication: int | None = None) -> dict[str, str]:
    """Create the deployment's missing topics after checking every existing one (the
    processor's changelog included); `TopicLayoutError` before anything is created."""
    from remsguard.adapters.kafka.topics import Topics, changelog_topic, create_topics

    _quiet_kafka_clients()
    settings = get_settings()
    return create_topics(
        settings.kafka_bootstrap,
        Topics.from_settings(settings),
        partitions or settings.topic_partitions,
        replication or settings.topic_replication,
        also_check=(changelog_topic(settings.processor_app_id),),
        timeout_seconds=settings.kafka_connect_timeout_seconds,
    )


topics_app = typer.Typer(help="Kafka topics of the production path.", no_args_is_help=True)
alerts_app = typer.Typer(help="Read the alerts stream.", no_args_is_help=True)
deadletter_app = typer.Typer(help="Read and replay the dead-letter topic.", no_args_is_help=True)


@topics_app.command("create")
def topics_create(
    partitions: Annotated[
        int | None, typer.Option(help="default: REMSGUARD_TOPIC_PARTITIONS")
    ] = None,
    replication: Annotated[
        int | None, typer.Option(help="default: REMSGUARD_TOPIC_REPLICATION")
    ] = None,
) -> None:
    """Create every remsguard topic that does not exist yet (idempotent); checks every
    existing one first and creates nothing if one has the wrong partition count."""
    for name, state in _ensure_topics(partitions, replication).items():
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
    from remsguard.adapters.logs import announce, configure_logging
    from remsguard.adapters.metrics import new_registry, serve_metrics

    settings = get_settings()
    _ensure_topics()
    registry = new_registry()
    app = create_app(settings, registry, protocol_file)
    server = serve_metrics(
        registry,
        settings.metrics_host,
        settings.metrics_port,
        health=app.remsguard["health"].check,  # type: ignore[attr-defined]
        title="remsguard processor",
    )
    announce(f"metrics and health on http://{server.host}:{server.port}/")
    settle_heap()
    worker = faust.Worker(
        app,
        loglevel=settings.log_level.upper(),
        quiet=True,
        override_logging=False,
        redirect_stdouts=False,
    )
    worker.spinner = None  # it writes terminal escapes (\x1b[?25h) into the JSON log
    configure_logging(settings.log_level, settings.log_format)
    _quiet_kafka_clients()
    try:
        worker.execute_from_commandline()
    finally:
        server.close()


def publish_command(
    file: Annotated[str, typer.Argument(help="JSON-lines events ('-' = stdin)")],
    skip_invalid: Annotated[
        bool,
        typer.Option(
            "--skip-invalid",
            help="skip (and count) lines the contract or the client refuses, instead of "
            "publishing them for the processor to dead-letter (or failing)",
        ),
    ] = False,
) -> None:
    """Publish each event of a JSON-lines file to the topic of its type (acks=all), and
    wait for every acknowledgement. Exit 1 if a line was refused or not delivered."""
    from remsguard.adapters.kafka.topics import Topics
    from remsguard.bootstrap import event_time_bounds
    from remsguard.client import DeviceClient
    from remsguard.doors.lines import LinePublisher

    _quiet_kafka_clients()
    settings = get_settings()
    _ensure_topics()  # never let the broker auto-create an input topic un-co-partitioned
    handle = sys.stdin.buffer if file == "-" else Path(file).open("rb")  # noqa: SIM115
    bounds = event_time_bounds(settings)
    topics = Topics.from_settings(settings)
    client = DeviceClient(
        settings.kafka_bootstrap,
        topics,
        bounds=bounds,
        timeout_seconds=settings.kafka_connect_timeout_seconds,
    )
    try:
        with handle:
            report = LinePublisher(client, skip_invalid=skip_invalid).lines(handle)
    finally:
        client.close()
    for problem in report.problems[:200]:
        sys.stderr.write(problem + "\n")
    if len(report.problems) > 200:
        sys.stderr.write(f"... and {len(report.problems) - 200} more\n")
    typer.echo(report.summary(topics.deadletter), err=True)
    if not report.ok:
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
        bootstrap_timeout_ms=int(settings.kafka_connect_timeout_seconds * 1000),
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


@deadletter_app.command("list")
def deadletter_list(
    reason: Annotated[
        list[str] | None, typer.Option(help="only this reason code (repeatable)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """Print the dead letters now on the topic (partition, offset, reason, detail, source),
    oldest first per partition, and a count by reason."""
    from collections import Counter

    import orjson

    from remsguard.adapters.kafka.deadletters import read_dead_letters
    from remsguard.adapters.kafka.topics import Topics

    _quiet_kafka_clients()
    settings = get_settings()
    topic = Topics.from_settings(settings).deadletter
    counts: Counter[str] = Counter()
    for letter in read_dead_letters(
        settings.kafka_bootstrap, topic, settings.kafka_connect_timeout_seconds
    ):
        if reason and letter.reason not in reason:
            continue
        counts[letter.reason] += 1
        if as_json:
            typer.echo(orjson.dumps(letter.summary()).decode())
        else:
            typer.echo(
                f"{letter.partition}:{letter.offset}\t{letter.reason}\t{letter.source}\t"
                f"{letter.detail}"
            )
    listed = ", ".join(f"{name}: {n}" for name, n in sorted(counts.items())) or "none"
    typer.echo(f"{sum(counts.values())} dead letters on {topic} ({listed})", err=True)


@deadletter_app.command("replay")
def deadletter_replay(
    reason: Annotated[
        list[str] | None, typer.Option(help="replay the dead letters with this reason")
    ] = None,
    at: Annotated[
        list[str] | None,
        typer.Option("--at", help="replay the dead letter at PARTITION:OFFSET (repeatable)"),
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="say what would be replayed, send nothing")] = (
        False
    ),
) -> None:
    """Publish the chosen dead letters again, through the same checks as `publish` (keyed by
    session, routed by type), once their cause is fixed. The processor ignores an event it
    has already applied, so a replay never doubles anything."""
    from remsguard.adapters.kafka.deadletters import read_dead_letters
    from remsguard.adapters.kafka.topics import Topics
    from remsguard.bootstrap import event_time_bounds
    from remsguard.client import DeviceClient
    from remsguard.doors.lines import LinePublisher

    if not reason and not at:
        typer.echo("remsguard deadletter replay: choose with --reason or --at", err=True)
        raise typer.Exit(2)
    wanted: set[tuple[int, int]] = set()
    for spot in at or ():
        partition, _, offset = spot.partition(":")
        if not (partition.isdigit() and offset.isdigit()):
            typer.echo(f"remsguard deadletter replay: --at {spot!r} is not P:O", err=True)
            raise typer.Exit(2)
        wanted.add((int(partition), int(offset)))
    _quiet_kafka_clients()
    settings = get_settings()
    topics = Topics.from_settings(settings)
    chosen = [
        letter
        for letter in read_dead_letters(
            settings.kafka_bootstrap, topics.deadletter, settings.kafka_connect_timeout_seconds
        )
        if (reason and letter.reason in reason) or (letter.partition, letter.offset) in wanted
    ]
    cut = [letter for letter in chosen if letter.truncated is not None]
    for letter in cut:
        typer.echo(
            f"{letter.partition}:{letter.offset}: not replayed: only the first "
            f"{len(letter.value)} of {letter.truncated} bytes were kept",
            err=True,
        )
    chosen = [letter for letter in chosen if letter.truncated is None]
    if dry_run:
        for letter in chosen:
            typer.echo(f"{letter.partition}:{letter.offset}\t{letter.reason}\twould be replayed")
        typer.echo(f"{len(chosen)} dead letters would be replayed", err=True)
        return
    bounds = event_time_bounds(settings)
    client = DeviceClient(
        settings.kafka_bootstrap,
        topics,
        bounds=bounds,
        timeout_seconds=settings.kafka_connect_timeout_seconds,
    )
    publisher = LinePublisher(client, skip_invalid=True)  # never dead-letter a dead letter
    try:
        for letter in chosen:
            publisher.line(letter.value, f"{letter.partition}:{letter.offset}")
        report = publisher.finish()
    finally:
        client.close()
    for problem in report.problems:
        typer.echo(problem, err=True)
    typer.echo(f"replayed {report.published} of {len(chosen)} dead letters", err=True)
    if report.skipped:
        typer.echo(
            f"{sum(report.skipped.values())} still refused, not replayed "
            f"({', '.join(f'{k}: {v}' for k, v in sorted(report.skipped.items()))})",
            err=True,
        )
    if cut or report.skipped or not report.ok:
        raise typer.Exit(1)
