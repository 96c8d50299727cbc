"""`remsguard up`: embedded mode, the whole service in one process on one port.

Creates the data directory on first start (with `first-run-tokens.txt`, 0600), recovers the
engine from the event journal, serves the HTTP app with uvicorn (`log_config=None`, so our
structlog setup stays), prints the URL, and stops cleanly on Ctrl-C or SIGTERM (requests in
flight are answered, queued events are journaled and applied, files are closed).

`--simulate` also runs `remsguard simulate`, posting to this process's ingest with a device
token of its own, `--speed` times faster than real time, with higher violation rates than the
simulator's defaults so alerts show up within a minute. The whole process then runs on the
simulation's clock (`SimulatedClock`, carrying on from where the last run's journal stopped),
stated at start-up: event times never move the service's clock, and the door's check against
future-dated events stays on.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from fastapi.routing import APIRoute

from remsguard.adapters.heap import settle_heap
from remsguard.config import get_settings
from remsguard.domain.protocol import ProtocolError
from remsguard.embedded.compliance import create_principal
from remsguard.embedded.container import EmbeddedContainer, ensure_first_run_tokens
from remsguard.entrypoints.http import create_app
from remsguard.entrypoints.http.app import ROUTERS, surface_line
from remsguard.entrypoints.options import ProtocolFiles, ProtocolOption
from remsguard.identity import Role
from remsguard.simulation.clock import SimulatedClock

# A demo should show alerts within a minute: more violations than the simulator's defaults.
DEMO_RATES = (
    "--early-discharge-rate", "0.1",
    "--missed-check-rate", "0.1",
    "--missing-pre-dose-bp-rate", "0.1",
    "--bp-crisis-rate", "0.1",
    "--desaturation-rate", "0.1",
    "--dropout-rate", "0.05",
    "--not-enrolled-rate", "0.05",
)  # fmt: skip


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


class _Simulator:
    """`remsguard simulate --post` as a child process; the token goes in its environment."""

    def __init__(
        self, url: str, token: str, admin: str, speed: float, start: str, manifest: Path
    ) -> None:
        # Warnings only: one log line per POST would drown the server's own lines. The admin
        # token records the simulated REMS registry (certifications, enrollments) first.
        env = {
            **os.environ,
            "REMSGUARD_DEVICE_TOKEN": token,
            "REMSGUARD_ADMIN_TOKEN": admin,
            "REMSGUARD_LOG_LEVEL": "warning",
        }
        command = [
            sys.executable,
            "-m",
            "remsguard",
            "simulate",
            "--post",
            url,
            "--start",
            start,
            "--speed",
            str(speed),
            "--manifest",
            str(manifest),
            *DEMO_RATES,
        ]
        self.process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


async def _serve(
    container: EmbeddedContainer, host: str, port: int, clock: SimulatedClock | None
) -> None:
    app = create_app(container)
    settle_heap()  # after the journal replay: the restored sessions are long-lived too
    has_console = any(
        isinstance(route, APIRoute) and route.path == "/console"
        for router in ROUTERS
        for route in router.routes
    )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started and not serving.done():
        await asyncio.sleep(0.05)
    simulator: _Simulator | None = None
    if server.started:
        bound = port
        for listener in server.servers:
            for sock in listener.sockets:
                bound = sock.getsockname()[1]
                break
        base = f"http://{_url_host(host)}:{bound}"
        if has_console:
            typer.echo(f"remsguard is up: console {base}/console")
        else:
            typer.echo(f"remsguard is up: {base}/v1/alerts (API; no console in this build)")
        typer.echo(f"  API     {base}/v1/alerts    ingest POST {base}/v1/events")
        typer.echo(surface_line(container.settings, base))
        typer.echo(f"  tokens  {container.data_dir / 'first-run-tokens.txt'}")
        if container.hl7 is not None:
            typer.echo(f"  HL7     {_hl7_line(container)}")
        typer.echo("  Ctrl-C stops it.")
        if clock is not None:
            token = await asyncio.to_thread(
                create_principal,
                container.compliance,
                f"simulator-{uuid.uuid4().hex[:8]}",
                Role.DEVICE,
            )
            admin = await asyncio.to_thread(
                create_principal,
                container.compliance,
                f"simulator-registrar-{uuid.uuid4().hex[:8]}",
                Role.ADMIN,
                expires_at=datetime.now(UTC) + timedelta(hours=1),  # only for the first PUTs
            )
            start = clock().replace(microsecond=0)
            simulator = _Simulator(
                f"{base}/v1/events",
                token,
                admin,
                clock.speed,
                start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                container.data_dir / "simulation-manifest.json",
            )
            typer.echo(
                f"  simulating clinic days at {clock.speed:g}x real time; this process runs on "
                f"the simulation's clock, now {start:%Y-%m-%d %H:%M}Z"
            )
    try:
        await serving
    finally:
        if simulator is not None:
            simulator.stop()


def _hl7_line(container: EmbeddedContainer) -> str:
    assert container.hl7 is not None
    settings = container.settings
    listener = container.hl7.settings
    scheme = "MLLP over TLS" if listener.tls is not None else "MLLP"
    clinics = (
        f"facilities from {settings.hl7_facilities_file}"
        if settings.hl7_facilities_file is not None
        else "no facility map: MSH-4 is the clinic id"
    )
    return (
        f"{scheme} on {_url_host(listener.host)}:{container.hl7.port} ({clinics}; "
        f"times without an offset are {settings.hl7_timezone})"
    )


def up_command(
    data_dir: Annotated[
        Path | None,
        typer.Option(help="where the journal, compliance log and tokens live [default: setting]"),
    ] = None,
    port: Annotated[int | None, typer.Option(min=0, max=65535, help="HTTP port")] = None,
    host: Annotated[str | None, typer.Option(help="address to listen on")] = None,
    simulate: Annotated[
        bool, typer.Option("--simulate", help="also run the clinic simulator against it")
    ] = False,
    speed: Annotated[
        float,
        typer.Option(min=0.0, help="with --simulate: times faster than real time (above 0)"),
    ] = 60.0,
    protocol: ProtocolOption = None,
    protocol_file: ProtocolFiles = None,
    hl7_port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="also take HL7 v2 over MLLP on this port"),
    ] = None,
) -> None:
    """Run everything in one process: device ingest, engine, compliance log, API, metrics."""
    settings = get_settings()
    if protocol is not None:
        settings = settings.model_copy(update={"default_protocol": protocol})
    if hl7_port is not None:
        settings = settings.model_copy(update={"hl7_port": hl7_port})
    directory = (data_dir or settings.data_dir).expanduser().resolve()
    files = list(protocol_file or [])
    if simulate and speed <= 0:
        typer.echo("remsguard up: --speed must be above 0 with --simulate", err=True)
        raise typer.Exit(2)
    clock = SimulatedClock(speed) if simulate else None
    try:
        container = EmbeddedContainer.open(settings, directory, files, clock=clock)
    except (ProtocolError, ValueError) as exc:
        typer.echo(f"remsguard up: {exc}", err=True)
        raise typer.Exit(2) from None
    except OSError as exc:
        typer.echo(f"remsguard up: cannot use {directory}: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from None
    if clock is not None:  # carry on from where the last simulated run stopped
        clock.start_at(max(clock(), container.journal.latest_clock() or clock()))
    if container.hl7 is not None:  # tried now, so a taken port is one line, not a traceback
        from remsguard.hl7v2.listener import ListenerUnavailable

        try:
            asyncio.run(container.hl7.can_listen())
        except ListenerUnavailable as exc:
            typer.echo(f"remsguard up: {exc}", err=True)
            raise typer.Exit(1) from None
    tokens = ensure_first_run_tokens(directory, container.compliance)
    if tokens is not None:
        typer.echo(f"first start: admin and device tokens written to {tokens} (mode 0600)")
    if container.heads is not None and container.heads.key.created:
        key = container.heads.key
        typer.echo(f"tree heads are signed; public key {key.signer.public_hex} ({key.public_path})")
    # uvicorn re-raises the signal that stopped it once it has shut down; a no-op handler
    # makes that a clean exit (status 0) instead of a KeyboardInterrupt or death by SIGTERM.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    asyncio.run(
        _serve(
            container,
            host or settings.http_host,
            settings.http_port if port is None else port,
            clock,
        )
    )
