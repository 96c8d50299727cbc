"""The MLLP listener: HL7 v2 messages over TCP (optionally TLS), each answered with an ACK.

Framing is python-hl7's asyncio MLLP stream (`hl7.mllp.start_hl7_server`, `readblock`,
`writeblock`), whose buffer limit is the maximum message size. Each connection carries many
messages, one after the other; many connections are served at once, up to a cap. A
connection that sends nothing for `read_timeout` seconds (or trickles a message slower than
that: a slow-loris) is closed, as is one that breaks the framing.

**An ACK is a promise.** `AA` is sent only after the `Door` says every event the message gave
is durably accepted (journaled in embedded mode, acknowledged by Kafka on the gateway); a
duplicate counts as accepted (a re-sent message changes nothing). `AE` names what was wrong
(an ERR segment per problem: where, HL7 error code, text); `AR` refuses the message (wrong
type, unknown facility, too large). A sender that gets no ACK (a crash in between) re-sends,
and the stable event ids make that harmless.

Privacy: the raw message (patient names in PID-5) is never stored or logged; a refusal is
recorded by sender, control id and reason only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Protocol

import orjson
import structlog
from hl7.mllp import InvalidBlockError, start_hl7_server
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from remsguard.doors import Answer
from remsguard.hl7v2.messages import Header, Reader, Refusal, Translation, translate

__all__ = [
    "Door",
    "ListenerSettings",
    "ListenerUnavailable",
    "MLLPListener",
    "tls_context",
]

log = structlog.get_logger(__name__)

_SEND_TIMEOUT: Final = 10.0


class ListenerUnavailable(OSError):
    """The listener's address cannot be bound (in use, not permitted)."""


class Door(Protocol):
    """Where a message's events go (embedded ingest, or Kafka); durable when it returns."""

    async def accept(self, events: Sequence[bytes], clinic: str) -> list[Answer]: ...

    async def refused(self, header: Header, clinic: str | None, refusal: Refusal) -> None:
        """Record a refused message (no raw content) so staff can see a device talking to
        nobody."""

    def open_session(self, clinic: str, patient_ref: str) -> str | None: ...


@dataclass(frozen=True, slots=True)
class ListenerSettings:
    host: str = "127.0.0.1"
    port: int = 2575
    max_message_bytes: int = 1024 * 1024
    read_timeout: float = 30.0
    max_connections: int = 1000
    tls: ssl.SSLContext | None = None


def tls_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    """A server TLS context; with `client_ca`, clients must present a certificate it signed."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


@dataclass(slots=True)
class _Metrics:
    messages: Counter
    unknown_codes: Counter
    connections: Gauge
    ack_seconds: Histogram

    @classmethod
    def of(cls, registry: CollectorRegistry) -> _Metrics:
        return cls(
            Counter(
                "remsguard_hl7_messages_total",
                "HL7 v2 messages answered, by acknowledgement code and reason.",
                ["ack", "reason"],
                registry=registry,
            ),
            Counter(
                "remsguard_hl7_unknown_codes_total",
                "OBX observations with a code the code table does not map (ignored).",
                ["clinic"],
                registry=registry,
            ),
            Gauge(
                "remsguard_hl7_connections",
                "Open MLLP connections.",
                registry=registry,
            ),
            Histogram(
                "remsguard_hl7_ack_seconds",
                "From a message's last byte to its ACK written (durable acceptance included).",
                registry=registry,
                buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            ),
        )


class MLLPListener:
    def __init__(
        self,
        door: Door,
        reader: Reader,
        settings: ListenerSettings,
        registry: CollectorRegistry,
        *,
        clinic_label: Callable[[str], str] = lambda clinic: clinic,
    ) -> None:
        """`clinic_label` bounds the metric's clinic values (`ClinicLabels.label`)."""
        self._door = door
        self._reader = Reader(reader.codes, reader.timezone, reader.facilities, door.open_session)
        self.settings = settings
        self._metrics = _Metrics.of(registry)
        self._clinic_label = clinic_label
        self._server: asyncio.Server | None = None
        self._open = 0
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The bound port (the configured one, or the one the OS chose for port 0)."""
        if self._server is None or not self._server.sockets:
            return self.settings.port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Listen; `ListenerUnavailable` (one clear line) when the address cannot be bound."""
        s = self.settings
        try:
            self._server = await start_hl7_server(
                self._serve, s.host, s.port, limit=s.max_message_bytes, ssl=s.tls
            )
        except OSError as exc:
            raise ListenerUnavailable(
                f"cannot listen for HL7 on {s.host}:{s.port}: {exc.strerror or exc}"
            ) from None

    async def can_listen(self) -> None:
        """Bind and let go at once: `ListenerUnavailable` now rather than at `start`."""
        await self.start()
        await self.stop()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=5)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._open += 1
        self._metrics.connections.inc()
        try:
            if self._open > self.settings.max_connections:
                log.warning("hl7.connection_refused", reason="too many connections")
                return
            await self._messages(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._open -= 1
            self._metrics.connections.dec()
            if task is not None:
                self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), timeout=1)

    async def _messages(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        limit = self.settings.max_message_bytes
        while True:
            try:
                block: bytes = await asyncio.wait_for(
                    reader.readblock(),  # type: ignore[attr-defined]
                    timeout=self.settings.read_timeout,
                )
            except (TimeoutError, asyncio.IncompleteReadError, InvalidBlockError):
                return  # idle, slow, closed, or not MLLP: close the connection
            except ValueError:  # over the limit; the stream cannot be trusted after it
                refusal = Refusal("AR", "too_large", f"message larger than {limit} bytes")
                self._metrics.messages.labels("AR", refusal.reason).inc()
                await self._send(writer, _ack(Header(), refusal))
                return
            started = time.perf_counter()
            ack = await self.handle(block)
            await self._send(writer, ack)
            self._metrics.ack_seconds.observe(time.perf_counter() - started)

    async def _send(self, writer: asyncio.StreamWriter, ack: bytes) -> None:
        writer.writeblock(ack)  # type: ignore[attr-defined]
        await asyncio.wait_for(writer.drain(), timeout=_SEND_TIMEOUT)

    async def handle(self, block: bytes) -> bytes:
        """One message to its ACK (the bytes inside the MLLP frame)."""
        translation = translate(_text(block), self._reader)
        header, clinic = translation.header, translation.clinic
        for _code, count in translation.unknown_codes.items():
            self._metrics.unknown_codes.labels(self._clinic_label(clinic or "")).inc(count)
        refusal = translation.refusal or await self._deliver(translation)
        if refusal is not None:
            self._metrics.messages.labels(refusal.ack_code, refusal.reason).inc()
            log.warning(
                "hl7.message_refused",
                sender=header.sender,
                control_id=header.control_id,
                ack=refusal.ack_code,
                reason=refusal.reason,
                detail=refusal.text[:200],
            )
            if translation.refusal is not None:
                await self._door.refused(header, clinic, refusal)
            return _ack(header, refusal)
        self._metrics.messages.labels("AA", "accepted").inc()
        if translation.ignored:
            log.info("hl7.message_parts_ignored", control_id=header.control_id,
                     ignored=dict(translation.ignored))  # fmt: skip
        return _ack(header, None)

    async def _deliver(self, translation: Translation) -> Refusal | None:
        if not translation.events:
            return None  # nothing to record (e.g. only other drugs): acknowledged
        assert translation.clinic is not None
        raws = [orjson.dumps(event) for event in translation.events]
        try:
            answers = await self._door.accept(raws, translation.clinic)
        except Exception as exc:  # not durable: never AA; the sender may retry
            log.warning("hl7.door_unavailable", error=str(exc)[:200])
            return Refusal("AR", "unavailable", f"events not accepted now: {exc}"[:200])
        problems = [a for a in answers if a.outcome == "rejected"]
        if not problems:
            return None
        first = problems[0]
        text = "; ".join(f"{a.reason}: {a.detail}" for a in problems[:5])
        return Refusal("AE", first.reason or "rejected", text)


def _text(block: bytes) -> str:
    try:
        return block.decode("utf-8")
    except UnicodeDecodeError:
        return block.decode("latin-1")  # HL7's historical default; never fails


def _ack(header: Header, refusal: Refusal | None) -> bytes:
    """`ACK` with MSA-1 AA/AE/AR, MSA-2 the message's control id, and an ERR on refusal."""
    now = datetime.now(UTC).strftime("%Y%m%d%H%M%S+0000")
    kind = header.message_type.split("^")[1] if header.message_type.count("^") else ""
    control = f"ACK{int(time.time() * 1000)}"
    msh = [
        "MSH", "^~\\&", "remsguard", "remsguard", header.sending_application,
        header.sending_facility, now, "", f"ACK^{kind}^ACK" if kind else "ACK", control, "P",
        header.version,
    ]  # fmt: skip
    segments = [
        "|".join(msh),
        f"MSA|{'AA' if refusal is None else refusal.ack_code}|{_escape(header.control_id)}",
    ]
    if refusal is not None:
        segments.append(
            f"ERR||{refusal.location}|{refusal.error}|E||||{_escape(refusal.text[:200])}"
        )
    return ("\r".join(segments) + "\r").encode("utf-8")


def _escape(text: str) -> str:
    """HL7 escape sequences for the delimiters, so a text cannot break the ACK's fields."""
    out = text.replace("\\", "\\E\\").replace("|", "\\F\\").replace("^", "\\S\\")
    return out.replace("&", "\\T\\").replace("~", "\\R\\").replace("\r", " ").replace("\n", " ")
