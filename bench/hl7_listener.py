"""HL7 v2 over MLLP into embedded mode, against the same events posted as JSON, in one run.

    python3 -m uv run --frozen python -m bench.hl7_listener [--sessions 2000] [--connections 8]
        [--rate 100] [--seconds 20]

Starts `remsguard up --hl7-port` (a subprocess, temp data dir) and measures:

1. **Throughput.** `--sessions` sessions, 3 readings each (BP, SpO2 + pulse, respiratory rate)
   as IHE PCD-01 `ORU^R01` messages (one reading per message, as a monitor sends them), over
   `--connections` MLLP connections, each waiting for a message's ACK before the next (as
   senders do): messages/s. Then the same readings as JSON, one event per `POST /v1/events`
   over as many concurrent HTTP clients (a device posting each reading): events/s. Both wait
   for the journal's fsync before they are answered. The ratio HL7 / JSON is printed.
2. **Latency.** Open loop at `--rate` messages per second for `--seconds`, over
   `--connections` connections: from the message's last byte sent to its ACK read, p50, p99.

The MLLP client is python-hl7's asyncio stream (`hl7.mllp.open_hl7_connection`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
from hl7.mllp import open_hl7_connection


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ts(at: datetime) -> str:
    return at.strftime("%Y%m%d%H%M%S+0000")


_OBX = {
    "bp": [
        "OBX|1|NM|150021^MDC_PRESS_BLD_NONINV_SYS^MDC|1.1.1.1|{a}|266016^MDC_DIM_MMHG^MDC|||||R",
        "OBX|2|NM|150022^MDC_PRESS_BLD_NONINV_DIA^MDC|1.1.1.2|{b}|266016^MDC_DIM_MMHG^MDC|||||R",
    ],
    "ox": [
        "OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.6.1.1|{a}|262688^MDC_DIM_PERCENT^MDC|||||R",
        "OBX|2|NM|149530^MDC_PULS_OXIM_PULS_RATE^MDC|1.6.1.2|{b}|264864^MDC_DIM_BEAT_PER_MIN^MDC"
        "|||||R",
    ],
    "rr": ["OBX|1|NM|151562^MDC_RESP_RATE^MDC|1.2.1.1|{a}|264928^MDC_DIM_RESP_PER_MIN^MDC|||||R"],
}
_JSON = {
    "bp": lambda a, b: {"systolic": a, "diastolic": b},
    "ox": lambda a, b: {"spo2": a, "heart_rate": b},
    "rr": lambda a, b: {"respiratory_rate": a},
}


def _readings(sessions: int, tag: str) -> list[tuple[str, str, datetime, int, int]]:
    """(session, kind, time, a, b) for every reading, interleaved across sessions."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20)
    out = []
    for step, (kind, a, b) in enumerate((("bp", 124, 78), ("ox", 97, 72), ("rr", 14, 0))):
        for n in range(sessions):
            at = start + timedelta(minutes=2 * step, seconds=n % 60)
            out.append((f"{tag}-{n:05d}", kind, at, a + (n % 5 if kind == "bp" else 0), b))
    return out


def _message(control: str, session: str, kind: str, at: datetime, a: int, b: int) -> bytes:
    lines = [
        rf"MSH|^~\&|VSP^0800^EUI-64|bench|||{_ts(at)}||ORU^R01^ORU_R01|{control}|P|2.6",
        r"PID|||PAT-1^^^PID^MR",
        rf"PV1||O|||||||||||||||||{session}",
        rf"OBR|1|||182777000^monitoring of patient^SCT|||{_ts(at)}",
        *(line.format(a=a, b=b) for line in _OBX[kind]),
    ]
    return "\r".join(lines).encode()


def _json(n: int, session: str, kind: str, at: datetime, a: int, b: int) -> bytes:
    return orjson.dumps(
        {
            "type": "vitals.recorded",
            "event_id": f"j{n}",
            "session_id": session,
            "clinic_id": "bench",
            "occurred_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "data": _JSON[kind](a, b),
        }
    )


async def _send_all(port: int, messages: list[bytes], connections: int) -> list[float]:
    """Each connection sends its share, one message after the other's ACK; latencies."""
    latencies: list[float] = []

    async def worker(share: list[bytes]) -> None:
        reader, writer = await open_hl7_connection("127.0.0.1", port, limit=1 << 20)
        try:
            for message in share:
                started = time.perf_counter()
                writer.writeblock(message)
                await writer.drain()
                ack = await reader.readblock()
                latencies.append(time.perf_counter() - started)
                if b"MSA|AA" not in ack:
                    raise SystemExit(f"not acknowledged: {ack[:200]!r}")
        finally:
            writer.close()

    await asyncio.gather(*(worker(messages[i::connections]) for i in range(connections)))
    return latencies


async def _post_all(base: str, token: str, bodies: list[bytes], clients: int) -> None:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    async def worker(share: list[bytes]) -> None:
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client:
            for body in share:
                response = await client.post("/v1/events", content=body)
                if response.status_code != 200 or b'"accepted":1' not in response.content:
                    raise SystemExit(f"not accepted: {response.text[:200]}")

    await asyncio.gather(*(worker(bodies[i::clients]) for i in range(clients)))


async def _steady(port: int, messages: list[bytes], rate: float, connections: int) -> list[float]:
    """Open loop: message i is due at i / rate; latency from its last byte to its ACK."""
    latencies: list[float] = []
    start = time.perf_counter() + 0.5

    async def worker(index: int) -> None:
        reader, writer = await open_hl7_connection("127.0.0.1", port, limit=1 << 20)
        try:
            for i in range(index, len(messages), connections):
                wait = start + i / rate - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.writeblock(messages[i])
                await writer.drain()
                sent = time.perf_counter()
                await reader.readblock()
                latencies.append(time.perf_counter() - sent)
        finally:
            writer.close()

    await asyncio.gather(*(worker(i) for i in range(connections)))
    return latencies


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _start(data: Path, port: int, hl7_port: int | None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REMSGUARD_LOG_LEVEL": "warning", "REMSGUARD_LOG_FORMAT": "json"}
    hl7 = [] if hl7_port is None else ["--hl7-port", str(hl7_port)]
    process = subprocess.Popen(
        [sys.executable, "-m", "remsguard", "up", "--data-dir", str(data), "--port", str(port),
         *hl7],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise SystemExit("remsguard up did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--json-only", action="store_true", help="only the JSON half (e.g. on an older build)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rg-bench-hl7-") as tmp:
        port, hl7_port = _free_port(), _free_port()
        process = _start(Path(tmp) / "data", port, None if args.json_only else hl7_port)
        try:
            tokens = dict(
                line.split(": ", 1)
                for line in (Path(tmp) / "data" / "first-run-tokens.txt").read_text().splitlines()
            )
            bodies = [_json(n, *r) for n, r in enumerate(_readings(args.sessions, "j"))]
            started = time.perf_counter()
            asyncio.run(_post_all(f"http://127.0.0.1:{port}", tokens["device"], bodies,
                                  args.connections))  # fmt: skip
            json_seconds = time.perf_counter() - started
            json_rate = len(bodies) / json_seconds
            print(
                f"JSON: {json_rate:,.0f} events/s ({len(bodies):,} single-event posts in "
                f"{json_seconds:.1f} s, {args.connections} clients)"
            )
            if args.json_only:
                return
            hl7_readings = _readings(args.sessions, "h")
            messages = [_message(f"M{n}", *r) for n, r in enumerate(hl7_readings)]
            started = time.perf_counter()
            asyncio.run(_send_all(hl7_port, messages, args.connections))
            hl7_seconds = time.perf_counter() - started
            hl7_rate = len(messages) / hl7_seconds
            print(
                f"throughput: HL7 {hl7_rate:,.0f} messages/s ({len(messages):,} in "
                f"{hl7_seconds:.1f} s), JSON {json_rate:,.0f} events/s ({len(bodies):,} in "
                f"{json_seconds:.1f} s), HL7/JSON {hl7_rate / json_rate:.2f}x, "
                f"{args.connections} connections each"
            )
            total = int(args.rate * args.seconds)
            steady = [_message(f"S{n}", *r) for n, r in enumerate(_readings(total // 3 + 1, "s"))]
            latencies = asyncio.run(_steady(hl7_port, steady[:total], args.rate, args.connections))
            print(
                f"latency at {args.rate:g} messages/s for {args.seconds:g} s "
                f"({len(latencies):,} messages): p50 {_percentile(latencies, 0.5) * 1000:.1f} ms, "
                f"p99 {_percentile(latencies, 0.99) * 1000:.1f} ms, "
                f"max {max(latencies) * 1000:.1f} ms"
            )
        finally:
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
