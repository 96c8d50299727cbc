"""`remsguard simulate`: generate clinic days and deliver them to a file or the HTTP ingest.

Generation is pure (`remsguard.simulation`); this module only paces the deliveries in wall-clock
time and writes or posts them. The manifest (what was injected, per session) goes to
`--manifest FILE`, or to stderr, before the first event is delivered.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Protocol
from urllib.parse import quote

import httpx
import orjson
import typer

from remsguard.config import get_settings
from remsguard.domain.protocol import ProtocolError
from remsguard.entrypoints.options import aware_time
from remsguard.protocols import load_protocols
from remsguard.simulation import (
    ConfigError,
    Delivery,
    Simulation,
    SimulationConfig,
    TransportRates,
    ViolationRates,
    simulate,
)

DEFAULT_START = "2026-11-23T08:00:00Z"
NDJSON = "application/x-ndjson"


class SinkError(RuntimeError):
    """Delivery failed for good (the ingest refused a batch, or stayed unreachable)."""


class Sink(Protocol):
    def send(self, delivery: Delivery) -> None: ...

    def flush(self) -> None: ...


class FileSink:
    """JSON lines in arrival order."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle

    def send(self, delivery: Delivery) -> None:
        self._handle.write(delivery.line + b"\n")

    def flush(self) -> None:
        self._handle.flush()


class IngestClient:
    """POSTs NDJSON batches to the embedded ingest (`POST /v1/events`) with a device token.

    Transport errors, 429 and 5xx are retried with backoff: re-sending a batch is safe because
    the ingest ignores events whose id it already has. Any other 4xx is final.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        client: httpx.Client | None = None,
        retries: int = 4,
        backoff: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url
        self._client = client or httpx.Client(timeout=httpx.Timeout(30.0))
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": NDJSON}
        self._retries = retries
        self._backoff = backoff
        self._sleep = sleep
        self.batches = 0
        self.lines = 0
        self.statuses: Counter[int] = Counter()
        self.outcomes: Counter[str] = Counter()

    def post(self, lines: Sequence[bytes]) -> httpx.Response:
        body = b"".join(line + b"\n" for line in lines)
        attempt = 0
        while True:
            try:
                response = self._client.post(self.url, content=body, headers=self._headers)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                self.statuses[response.status_code] += 1
                if response.is_success:
                    self.batches += 1
                    self.lines += len(lines)
                    self.outcomes.update(_outcomes(response))
                    return response
                problem = f"HTTP {response.status_code}: {response.text[:300]}"
                if response.status_code != 429 and response.status_code < 500:
                    raise SinkError(f"{self.url} refused a batch of {len(lines)}: {problem}")
            attempt += 1
            if attempt > self._retries:
                raise SinkError(f"{self.url}: giving up after {attempt} attempts: {problem}")
            self._sleep(self._backoff * 2 ** (attempt - 1))

    def close(self) -> None:
        self._client.close()


def _outcomes(response: httpx.Response) -> Counter[str]:
    """Best effort: tally per-event outcomes if the body lists them (`status` or `outcome`)."""
    try:
        body = response.json()
    except ValueError:
        return Counter()
    items = body.get("results", body.get("events")) if isinstance(body, dict) else body
    tally: Counter[str] = Counter()
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict):
                outcome = item.get("status", item.get("outcome"))
                if isinstance(outcome, str):
                    tally[outcome] += 1
    return tally


class PostSink:
    """Collects lines into batches of at most `batch_size` and posts each batch."""

    def __init__(self, client: IngestClient, batch_size: int) -> None:
        self._client = client
        self._batch_size = batch_size
        self._pending: list[bytes] = []

    def send(self, delivery: Delivery) -> None:
        self._pending.append(delivery.line)
        if len(self._pending) >= self._batch_size:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            batch, self._pending = self._pending, []
            self._client.post(batch)


class KafkaSink:
    """Publishes with `remsguard.client.DeviceClient` under `publish`'s policy
    (`doors/lines.py`): topic by event type, key = session id; a malformed line
    the contract rejects is published for the processor to dead-letter with its reason, one
    no input topic can take (not JSON) goes to the dead-letter topic directly, and with
    `skip_invalid` both are skipped and counted instead.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        producer: Any = None,
        create: bool = True,
        skip_invalid: bool = False,
    ) -> None:
        from remsguard.adapters.kafka.errors import KafkaPathError
        from remsguard.adapters.kafka.topics import Topics, create_topics
        from remsguard.client import DeviceClient
        from remsguard.doors.lines import LinePublisher

        logging.getLogger("kafka").setLevel(logging.WARNING)  # its info chatter is noise here
        settings = get_settings()
        self.topics = Topics.from_settings(settings)
        timeout = settings.kafka_connect_timeout_seconds
        try:
            if create:  # never let the broker auto-create an input topic un-co-partitioned
                create_topics(
                    bootstrap,
                    self.topics,
                    settings.topic_partitions,
                    settings.topic_replication,
                    timeout_seconds=timeout,
                )
            client = DeviceClient(
                bootstrap,
                self.topics,
                producer=producer,
                message_limits={} if producer is not None else None,
                timeout_seconds=timeout,
            )
        except KafkaPathError as exc:
            raise SinkError(str(exc)) from exc
        self._failure: type[Exception] = KafkaPathError
        self._client = client
        self._publisher = LinePublisher(client, skip_invalid=skip_invalid)
        self._sent = 0

    @property
    def report(self) -> Any:
        return self._publisher.report

    @property
    def published(self) -> int:
        return int(self._publisher.report.published)

    def send(self, delivery: Delivery) -> None:
        self._sent += 1
        self._publisher.line(delivery.line, f"delivery {self._sent} ({delivery.kind})")

    def flush(self) -> None:
        report = self._publisher.finish()
        if report.failed:
            raise SinkError(report.problems[-1])

    def close(self) -> None:
        with contextlib.suppress(self._failure):  # already reported, or nothing left to send
            self._client.close()


def deliver(
    deliveries: Iterable[Delivery],
    sinks: Sequence[Sink],
    speed: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Send each delivery at its arrival time, `speed` times faster than real (0 = no waits)."""
    origin: datetime | None = None
    wall0 = clock()
    sent = 0
    for delivery in deliveries:
        if speed > 0:
            if origin is None:
                origin = delivery.arrival
            due = wall0 + (delivery.arrival - origin).total_seconds() / speed
            wait = due - clock()
            if wait > 0:
                for sink in sinks:
                    sink.flush()  # what is due now goes out before we wait
                sleep(wait)
        for sink in sinks:
            sink.send(delivery)
        sent += 1
    for sink in sinks:
        sink.flush()
    return sent


def _registry_lines(simulation: Simulation) -> list[bytes]:
    from remsguard.adapters.storage.registry import registry_lines

    return registry_lines(simulation.registry())


def register(ingest_url: str, admin_token: str, simulation: Simulation) -> int:
    """Record the simulation's REMS registry through the API beside `ingest_url`
    (`PUT /v1/clinics/{clinic}/certification` and `/enrollments/{patient}`); how many."""
    base = ingest_url.removesuffix("/").removesuffix("/v1/events")
    headers = {"Authorization": f"Bearer {admin_token}"}
    registry = simulation.registry()
    puts: list[tuple[str, dict[str, object]]] = [
        (
            f"/v1/clinics/{quote(c.clinic_id, safe='')}/certification",
            {"certification_id": c.certification_id, "valid_from": c.valid_from.isoformat()},
        )
        for c in registry.certifications.values()
    ]
    puts += [
        (
            f"/v1/clinics/{quote(e.clinic_id, safe='')}/enrollments/"
            + quote(e.patient_ref, safe=""),
            {"enrolled_on": e.enrolled_on.isoformat()},
        )
        for e in registry.enrollments.values()
    ]
    with httpx.Client(timeout=httpx.Timeout(30.0)) as client:
        for path, body in puts:
            try:
                response = client.put(base + path, json=body, headers=headers)
            except httpx.TransportError as exc:
                raise SinkError(f"{base}{path}: {type(exc).__name__}: {exc}") from None
            if not response.is_success:
                raise SinkError(f"{base}{path}: HTTP {response.status_code}: {response.text[:300]}")
    return len(puts)


def _parse_start(value: str) -> datetime:
    if value == "now":
        return datetime.now(UTC).replace(microsecond=0)
    return aware_time(value, "--start", "2026-11-23T08:00:00Z")


def simulate_command(
    out: Annotated[
        str | None,
        typer.Option(help="write JSON lines in arrival order to FILE ('-' = stdout; default)"),
    ] = None,
    post: Annotated[
        str | None,
        typer.Option(help="POST NDJSON batches to this ingest URL (…/v1/events)"),
    ] = None,
    kafka: Annotated[
        str | None,
        typer.Option(help="publish to the Kafka input topics at this bootstrap address"),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(envvar="REMSGUARD_DEVICE_TOKEN", help="device token for --post"),
    ] = None,
    admin_token: Annotated[
        str | None,
        typer.Option(
            envvar="REMSGUARD_ADMIN_TOKEN",
            help="with --post: an admin token to record the simulated REMS registry (clinics "
            "certified, patients enrolled) through the API before the first event",
        ),
    ] = None,
    registry: Annotated[
        Path | None,
        typer.Option(
            help="write the simulated REMS registry here (JSON lines, for replay --registry)"
        ),
    ] = None,
    manifest: Annotated[
        Path | None, typer.Option(help="write the injection manifest here (default: stderr)")
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="same seed, same output, byte for byte (default: random)")
    ] = None,
    start: Annotated[
        str, typer.Option(help="RFC 3339 time the first chair opens, or 'now'")
    ] = DEFAULT_START,
    clinics: Annotated[int, typer.Option(min=1)] = 2,
    chairs: Annotated[int, typer.Option(min=1, help="chairs per clinic")] = 3,
    sessions_per_chair: Annotated[int, typer.Option(min=1, help="back to back, per day")] = 3,
    days: Annotated[int, typer.Option(min=1)] = 1,
    esketamine_share: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="share of intranasal esketamine sessions"),
    ] = 0.5,
    concomitant_share: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="share of sessions with a concomitant medication"),
    ] = 0.15,
    early_discharge_rate: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.03,
    missed_check_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="no BP at the post-dose (40-minute) check")
    ] = 0.03,
    missing_pre_dose_bp_rate: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.03,
    bp_crisis_rate: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.03,
    desaturation_rate: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.03,
    not_enrolled_rate: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="esketamine patients left out of the REMS registry"),
    ] = 0.0,
    dropout_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="monitor silent past the vitals gap")
    ] = 0.03,
    duplicate_rate: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.01,
    reorder_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="events delivered late (within lateness)")
    ] = 0.03,
    malformed_rate: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.003,
    speed: Annotated[
        float, typer.Option(min=0.0, help="times faster than real time; 0 = no waiting")
    ] = 0.0,
    batch_size: Annotated[int, typer.Option(min=1, help="events per POST")] = 200,
    skip_invalid: Annotated[
        bool,
        typer.Option(
            "--skip-invalid",
            help="with --kafka: skip (and count) malformed lines instead of publishing them "
            "for the processor to dead-letter",
        ),
    ] = False,
) -> None:
    """Generate realistic clinic days with injected violations and transport faults."""
    if post is not None and not token:
        raise typer.BadParameter("--post needs --token (or REMSGUARD_DEVICE_TOKEN)")
    if out is None and post is None and kafka is None:
        out = "-"
    config = SimulationConfig(
        start=_parse_start(start),
        seed=secrets.randbelow(2**31) if seed is None else seed,
        clinics=clinics,
        chairs_per_clinic=chairs,
        sessions_per_chair=sessions_per_chair,
        days=days,
        esketamine_share=esketamine_share,
        concomitant_share=concomitant_share,
        violations=ViolationRates(
            early_discharge=early_discharge_rate,
            missed_post_dose_check=missed_check_rate,
            missing_pre_dose_bp=missing_pre_dose_bp_rate,
            bp_crisis=bp_crisis_rate,
            desaturation=desaturation_rate,
            device_dropout=dropout_rate,
            not_enrolled=not_enrolled_rate,
        ),
        transport=TransportRates(
            duplicate=duplicate_rate, reorder=reorder_rate, malformed=malformed_rate
        ),
    )
    try:
        simulation = simulate(config, load_protocols())
    except (ConfigError, ProtocolError, ValueError) as exc:
        typer.echo(f"remsguard simulate: {exc}", err=True)
        raise typer.Exit(2) from None

    report = simulation.manifest_json()
    if manifest is None:
        sys.stderr.write(report.decode())
        sys.stderr.flush()
    else:
        manifest.write_bytes(report)
    if registry is not None:
        registry.write_bytes(b"".join(line + b"\n" for line in _registry_lines(simulation)))
    if post is not None and admin_token:
        try:
            register(post, admin_token, simulation)
        except SinkError as exc:
            typer.echo(f"remsguard simulate: {exc}", err=True)
            raise typer.Exit(1) from None

    sinks: list[Sink] = []
    handle: BinaryIO | None = None
    client: IngestClient | None = None
    producer: KafkaSink | None = None
    try:
        if out == "-":
            sinks.append(FileSink(sys.stdout.buffer))
        elif out is not None:
            handle = Path(out).open("wb")  # noqa: SIM115 - closed in `finally`
            sinks.append(FileSink(handle))
        if post is not None:
            assert token is not None
            client = IngestClient(post, token)
            sinks.append(PostSink(client, batch_size))
        if kafka is not None:
            producer = KafkaSink(kafka, skip_invalid=skip_invalid)
            sinks.append(producer)
        deliver(simulation.deliveries, sinks, speed)
    except OSError as exc:
        typer.echo(f"remsguard simulate: cannot write {out}: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from None
    except SinkError as exc:
        typer.echo(f"remsguard simulate: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    finally:
        if handle is not None:
            handle.close()
        if client is not None:
            client.close()
        if producer is not None:
            producer.close()
    if producer is not None:
        report = producer.report
        for problem in report.problems[:20] if not report.ok else ():
            sys.stderr.write(f"remsguard simulate: {problem}\n")
        sys.stderr.write(
            f"remsguard simulate: Kafka: {report.summary(producer.topics.deadletter)}\n"
        )
        if not report.ok:
            raise typer.Exit(1)
    if client is not None:
        summary = {
            "posted_lines": client.lines,
            "batches": client.batches,
            "http_statuses": {str(k): v for k, v in sorted(client.statuses.items())},
            "outcomes": dict(sorted(client.outcomes.items())),
        }
        sys.stderr.write("remsguard simulate: " + orjson.dumps(summary).decode() + "\n")
