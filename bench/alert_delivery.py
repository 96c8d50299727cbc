"""Alert delivery latency: event ingested -> alert on a console's SSE stream, at a steady load.

    python3 -m uv run --frozen python -m bench.alert_delivery [--rate 10] [--seconds 30]

Starts `remsguard up` (a subprocess, temp data dir, free port), creates a staff principal,
and follows `GET /v1/stream` as the console does. It opens `--sessions` dosed sessions, then,
open loop at `--rate` per second, posts one vitals reading in the hypertensive-crisis range
for a new session each time (each raises one critical BP_CRISIS), alongside `--background`
ordinary vitals per second on other sessions. The latency of an alert is from just before its
POST leaves the client to the moment its SSE `alert` event is read: it includes the HTTP
request, the fsync'd journal commit, the engine, the compliance-log write of the alert, the
notifier's claim (`alert.notified` record) and the SSE hop. Prints p50/p95/p99/max.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _event(type_: str, event_id: str, session: str, at: datetime, data: dict[str, object]) -> bytes:
    return orjson.dumps(
        {
            "type": type_,
            "event_id": event_id,
            "session_id": session,
            "clinic_id": "bench",
            "occurred_at": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "data": data,
        }
    )


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def follow_alerts(
    base: str,
    token: str,
    ready: threading.Event,
    received: dict[str, float],
    want: int,
    key: Callable[[dict[str, Any]], str | None],
) -> None:
    """Read `GET /v1/stream` as a console does: `ready` once connected; for each new alert
    (`kind` alert) whose `key` is not None, the time it was read, until `want` are in."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.stream("GET", f"{base}/v1/stream", headers=headers, timeout=None) as resp:
        event = ""
        if resp.status_code != 200:
            print(f"stream answered {resp.status_code}: {resp.read()[:300]!r}", file=sys.stderr)
            ready.set()
            return
        for line in resp.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
                if event == "hello":
                    ready.set()
            elif line.startswith("data: ") and event == "alert":
                at = time.perf_counter()
                note = orjson.loads(line[6:])
                name = key(note["alert"]) if note["kind"] == "alert" else None
                if name is not None:
                    received.setdefault(name, at)
                    if len(received) >= want:
                        return


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def print_latencies(latencies: list[float]) -> None:
    """p50/p95/p99/max of latencies in milliseconds, on one line (nothing if none)."""
    if latencies:
        print(
            f"  p50 {statistics.median(latencies):.1f} ms  "
            f"p95 {_percentile(latencies, 0.95):.1f} ms  "
            f"p99 {_percentile(latencies, 0.99):.1f} ms  max {max(latencies):.1f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=10.0, help="critical alerts per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--background", type=float, default=50.0, help="other events per second")
    args = parser.parse_args()
    alerts_total = int(args.rate * args.seconds)

    with tempfile.TemporaryDirectory(prefix="rg-bench-alerts-") as tmp:
        data = Path(tmp) / "data"
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        log_path = Path(tmp) / "up.log"
        env = {**os.environ, "REMSGUARD_LOG_LEVEL": "warning", "REMSGUARD_LOG_FORMAT": "json"}
        with log_path.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "remsguard", "up", "--data-dir", str(data),
                 "--port", str(port)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            )  # fmt: skip
        client = httpx.Client(timeout=30)
        try:
            for _ in range(600):
                try:
                    if client.get(f"{base}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            tokens = dict(
                line.split(": ", 1)
                for line in (data / "first-run-tokens.txt").read_text().split("\n")
                if line
            )
            device = {
                "Authorization": f"Bearer {tokens['device']}",
                "Content-Type": "application/x-ndjson",
            }
            staff = client.post(
                f"{base}/v1/staff", json={"name": "bench-staff"},
                headers={"Authorization": f"Bearer {tokens['admin']}"},
            ).json()  # fmt: skip

            now = datetime.now(UTC)
            prelude: list[bytes] = []
            sessions = [f"s{i:05d}" for i in range(alerts_total)]
            background = [f"bg{i:03d}" for i in range(50)]
            for session in sessions + background:
                prelude += [
                    _event("session.opened", f"{session}-o", session, now - timedelta(minutes=12),
                           {"patient_ref": f"P-{session}"}),
                    _event("vitals.recorded", f"{session}-b", session, now - timedelta(minutes=11),
                           {"systolic": 124, "diastolic": 78}),
                    _event("dose.administered", f"{session}-d", session,
                           now - timedelta(minutes=10),
                           {"drug": "esketamine", "route": "intranasal", "dose_mg": 56}),
                ]  # fmt: skip
            for start in range(0, len(prelude), 5000):
                body = b"\n".join(prelude[start : start + 5000])
                assert (
                    client.post(f"{base}/v1/events", content=body, headers=device).status_code
                    == 200
                )

            sent: dict[str, float] = {}
            received: dict[str, float] = {}
            ready = threading.Event()

            def follow() -> None:
                follow_alerts(
                    base, staff["token"], ready, received, alerts_total,
                    lambda alert: alert["session_id"] if alert["rule"] == "BP_CRISIS" else None,
                )  # fmt: skip

            reader = threading.Thread(target=follow, daemon=True)
            reader.start()
            ready.wait(10)
            time.sleep(0.5)

            def background_load() -> None:
                interval = 1.0 / args.background
                n = 0
                next_at = time.perf_counter()
                with httpx.Client(timeout=30) as bg:
                    while n < args.background * args.seconds:
                        session = background[n % len(background)]
                        at = datetime.now(UTC)
                        line = _event("vitals.recorded", f"{session}-v{n}", session, at,
                                      {"systolic": 128, "diastolic": 82, "spo2": 97})  # fmt: skip
                        bg.post(f"{base}/v1/events", content=line, headers=device)
                        n += 1
                        next_at += interval
                        time.sleep(max(0.0, next_at - time.perf_counter()))

            loader = threading.Thread(target=background_load, daemon=True)
            loader.start()
            interval = 1.0 / args.rate
            next_at = time.perf_counter()
            for i, session in enumerate(sessions):
                line = _event("vitals.recorded", f"{session}-x", session, datetime.now(UTC),
                              {"systolic": 188, "diastolic": 104})  # fmt: skip
                sent[session] = time.perf_counter()
                response = client.post(f"{base}/v1/events", content=line, headers=device)
                assert response.status_code == 200, response.text
                next_at += interval
                time.sleep(max(0.0, next_at - time.perf_counter()))
                if i % max(1, int(args.rate * 5)) == 0:
                    print(f"  {i}/{alerts_total} sent, {len(received)} received", file=sys.stderr)
            reader.join(timeout=30)
            loader.join(timeout=60)
            latencies = [(received[s] - sent[s]) * 1000 for s in sessions if s in received]
            missing = alerts_total - len(latencies)
            print(f"alert delivery, ingest -> SSE: {len(latencies)} critical alerts at "
                  f"{args.rate:g}/s for {args.seconds:g}s, plus {args.background:g} background "
                  f"events/s; missing {missing}")  # fmt: skip
            print_latencies(latencies)
        finally:
            client.close()
            stop_process(proc)


if __name__ == "__main__":
    main()
