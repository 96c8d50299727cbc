"""`remsguard hl7-gateway`: HL7 v2 over MLLP onto the Kafka path (see `hl7v2/kafka.py`)."""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import typer

from remsguard.config import get_settings

__all__ = ["hl7_gateway_command"]


def hl7_gateway_command(
    port: Annotated[int, typer.Option(min=0, max=65535, help="MLLP port to listen on")] = 2575,
    host: Annotated[str | None, typer.Option(help="address to listen on [default: setting]")] = (
        None
    ),
) -> None:
    """Take HL7 v2 (ORU^R01 vitals, RAS^O17 doses) over MLLP and publish the events to Kafka;
    each message is acknowledged once Kafka has acknowledged its events."""
    from remsguard.adapters.kafka.topics import Topics
    from remsguard.adapters.metrics import new_registry, serve_metrics
    from remsguard.bootstrap import event_time_bounds
    from remsguard.client import make_producer
    from remsguard.hl7v2.kafka import KafkaDoor
    from remsguard.hl7v2.setup import HL7ConfigError, build_listener

    settings = get_settings()
    if host is not None:
        settings = settings.model_copy(update={"hl7_host": host})
    producer = make_producer(settings.kafka_bootstrap)
    bounds = event_time_bounds(settings)
    door = KafkaDoor(producer, Topics.from_settings(settings), bounds)
    registry = new_registry()
    try:
        listener = build_listener(settings, door, registry, port=port)
    except HL7ConfigError as exc:
        typer.echo(f"remsguard hl7-gateway: {exc}", err=True)
        raise typer.Exit(2) from None
    metrics = serve_metrics(registry, settings.metrics_host, settings.metrics_port)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await listener.start()
        typer.echo(
            f"remsguard hl7-gateway: MLLP on {settings.hl7_host}:{listener.port}, publishing to "
            f"{settings.kafka_bootstrap}; metrics on :{metrics.port}",
            err=True,
        )
        await stop.wait()
        await listener.stop()

    from remsguard.hl7v2.listener import ListenerUnavailable

    try:
        asyncio.run(serve())
    except ListenerUnavailable as exc:
        typer.echo(f"remsguard hl7-gateway: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        producer.flush(timeout=10)
        producer.close(timeout=10)
        metrics.close()
