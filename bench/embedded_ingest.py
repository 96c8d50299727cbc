"""Embedded ingest (issue 19): single-event posts from 1 and N concurrent clients, batches, and
auditor queries while ingest runs.

    python3 -m uv run --frozen python -m bench.embedded_ingest [--seconds 10] [--clients 8]
        [--batch 100] [--rate 4000] [--workers 2] [--only 1,n,wrk,batch,auditor,runtime]
        [--auditor-qps 0]

Starts `remsguard up` on a fresh data directory (REMS gate off), then runs, one after the
other, each for `--seconds` and each once the compliance log and its session summaries have
caught up with the one before (it says how long that took; after the batches, seconds):
1. one client posting one event per request, back to back;
2. `--clients` clients doing the same at once;
2b. (`wrk`) `--clients` connections of `wrk` doing the same: a C load generator, so the
   client's CPU does not crowd the server's (httpx costs about 0.8 ms of CPU a request);
   prints the server's CPU per request too. Needs `wrk` (Debian: apt-get install wrk);
3. one client posting `--batch` events per request;
4. ingest paced at `--rate` events/s (batches of `--rate`/100 every 10 ms) while one auditor
   client asks, back to back (or `--auditor-qps` a second), for the latest alerts of a clinic
   (`/v1/alerts`, 100) and one session's audit records (`/v1/audit/records`).
5. (`--only runtime`) the same single-event clients in process, straight to
   `EmbeddedRuntime.submit` of a real container (no HTTP, no token check), with the time of
   each part of a step: the journal append (answered after it), and the compliance log's
   write just behind (`record_decisions`), and how far behind the answers it ran.
Events are `bench.engine_scale` sessions (33 events each) that started in the last hours, so
they are within the door's time bounds; each request's latency is measured at the client.
The load comes from `--workers` processes (asyncio + httpx), so the client's own CPU is split
from the server's; they share the machine's cores with it. Prints events/s, p50/p99/max
latency per phase, and the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson

from bench import _wrk
from bench.engine_scale import session

JSON = {"Content-Type": "application/json"}


def events(worker: int, hours_ago: float = 6.0) -> Iterator[bytes]:
    """Endless events of sessions opened in the last `hours_ago` hours, ids unique per worker."""
    rng = random.Random(worker)
    start = datetime.now(UTC) - timedelta(hours=hours_ago)
    index = 0
    while True:
        rows = []
        for _ in range(50):
            opened = start + timedelta(seconds=rng.randrange(0, int(hours_ago * 3600) - 9000))
            rows += session(worker * 10_000_000 + index, opened.replace(microsecond=0), 5, rng)
            index += 1
        rows.sort(key=lambda row: row[0])
        for _, doc in rows:
            yield orjson.dumps(doc)


def _percentiles(latencies: list[float]) -> str:
    if not latencies:
        return "no requests"
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"p50 {statistics.median(ordered) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
        f"max {ordered[-1] * 1000:.1f} ms ({len(ordered)} requests)"
    )


async def _post_loop(
    client: httpx.AsyncClient,
    base: str,
    token: str,
    source: Iterator[bytes],
    batch: int,
    until: float,
    latencies: list[float],
    pace: float | None = None,
) -> int:
    headers = {**JSON, "Authorization": f"Bearer {token}"}
    sent = 0
    next_at = time.monotonic()
    while time.monotonic() < until:
        if pace is not None:
            next_at += pace
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        body = b"[" + b",".join(next(source) for _ in range(batch)) + b"]"
        started = time.perf_counter()
        response = await client.post(f"{base}/v1/events", content=body, headers=headers)
        latencies.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise SystemExit(f"ingest answered {response.status_code}: {response.text[:300]}")
        sent += batch
    return sent


async def _ingest(
    base: str, token: str, worker: int, tasks: int, batch: int, seconds: float, pace: float | None
) -> tuple[int, list[float], float]:
    source = events(worker)
    latencies: list[float] = []
    cpu = time.process_time()
    limits = httpx.Limits(max_connections=tasks + 2)
    async with httpx.AsyncClient(timeout=30.0, limits=limits) as client:
        until = time.monotonic() + seconds
        sent = await asyncio.gather(
            *[
                _post_loop(client, base, token, source, batch, until, latencies, pace)
                for _ in range(tasks)
            ]
        )
    return sum(sent), latencies, time.process_time() - cpu


def _worker(
    args: tuple[str, str, int, int, int, float, float | None],
) -> tuple[int, list[float], float]:
    return asyncio.run(_ingest(*args))


async def _auditor(base: str, token: str, seconds: float, per_second: float) -> list[float]:
    """Queries back to back, or `per_second` of them at a steady pace (a closed loop asks
    more the faster it is answered, and takes that CPU from ingest)."""
    headers = {"Authorization": f"Bearer {token}"}
    latencies: list[float] = []
    rng = random.Random(1)
    async with httpx.AsyncClient(timeout=30.0) as client:
        until = time.monotonic() + seconds
        next_at = time.monotonic()
        while time.monotonic() < until:
            if per_second > 0:
                next_at += 1 / per_second
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if rng.random() < 0.5:
                params = {"clinic_id": f"clinic-{rng.randrange(40):02d}", "limit": "100"}
                url = f"{base}/v1/alerts"
            else:
                params = {"session_id": f"sess-{rng.randrange(2000):07d}", "limit": "100"}
                url = f"{base}/v1/audit/records"
            started = time.perf_counter()
            response = await client.get(url, params=params, headers=headers)
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise SystemExit(f"auditor query answered {response.status_code}")
    return latencies


def _phase(
    pool: multiprocessing.pool.Pool,
    base: str,
    token: str,
    clients: int,
    batch: int,
    seconds: float,
    workers: int,
    first_worker: int,
    pace: float | None = None,
) -> tuple[float, list[float], float]:
    """`clients` concurrent clients over up to `workers` processes: (events/s, latencies)."""
    per = [clients // workers + (1 if i < clients % workers else 0) for i in range(workers)]
    jobs = [
        (base, token, first_worker + i, n, batch, seconds, pace) for i, n in enumerate(per) if n
    ]
    started = time.monotonic()
    results = pool.map(_worker, jobs)
    elapsed = time.monotonic() - started
    sent = sum(r[0] for r in results)
    latencies = [x for r in results for x in r[1]]
    return sent / elapsed, latencies, sum(r[2] for r in results)


async def _runtime_only(clients: int, seconds: float) -> None:
    """Phase 5: the runtime alone, each part of its step timed."""
    from collections import defaultdict
    from collections.abc import Callable

    from remsguard.config import Settings
    from remsguard.contract.decode import decode_event
    from remsguard.embedded.container import EmbeddedContainer
    from remsguard.embedded.ingest import Incoming

    parts: defaultdict[str, list[float]] = defaultdict(list)

    def timed(owner: object, name: str) -> None:
        call: Callable[..., object] = getattr(owner, name)

        def measured(*args: object, **kwargs: object) -> object:
            started = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                parts[name].append(time.perf_counter() - started)

        setattr(owner, name, measured)

    with tempfile.TemporaryDirectory(prefix="remsguard-ingest-") as scratch:
        data = Path(scratch) / "data"
        settings = Settings(data_dir=data, rems_gate=False, log_level="warning")
        container = EmbeddedContainer.open(settings, data)
        await container.start()
        timed(container.journal, "append")
        for name in ("record_decisions", "save_alerts", "append_audit"):
            timed(container.compliance, name)
        source = events(99)
        latencies: list[float] = []

        async def client(until: float) -> int:
            sent = 0
            while time.monotonic() < until:
                raw = next(source)
                started = time.perf_counter()
                await container.runtime.submit([Incoming(raw, decode_event(raw))], None)
                latencies.append(time.perf_counter() - started)
                sent += 1
            return sent

        began = time.monotonic()
        sent = await asyncio.gather(*[client(began + seconds) for _ in range(clients)])
        rate = sum(sent) / (time.monotonic() - began)
        await container.runtime.caught_up()
        registry = container.telemetry.registry
        lag_sum = registry.get_sample_value("remsguard_compliance_record_lag_seconds_sum") or 0.0
        lag_count = registry.get_sample_value("remsguard_compliance_record_lag_seconds_count")
        await container.stop()
    steps = ", ".join(
        f"{name} {statistics.fmean(values) * 1000:.2f} ms ({len(values)})"
        for name, values in parts.items()
    )
    lag = f"{lag_sum / lag_count * 1000:.1f} ms" if lag_count else "n/a"
    print(
        f"in process, {clients} clients, single events: {rate:,.0f} events/s; "
        f"{_percentiles(latencies)}; mean per call: {steps}; compliance log behind the answer "
        f"by {lag} on average; load {os.getloadavg()[0]:.2f}"
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_up(
    data: Path, extra: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """`remsguard up` on `data` (REMS gate off); its process and base URL once healthy."""
    port = _free_port()
    env = {**os.environ, "REMSGUARD_REMS_GATE": "false", "REMSGUARD_LOG_LEVEL": "warning"}
    log = (data.parent / "up.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "remsguard", "up", "--data-dir", str(data), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**env, **(extra or {})},
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"remsguard up exited {process.returncode}")
        try:
            if httpx.get(f"{base}/healthz", timeout=2.0).status_code == 200:
                return process, base
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit("remsguard up did not become healthy")


def tokens(data: Path) -> dict[str, str]:
    lines = (data / "first-run-tokens.txt").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if ": " in line)


def auditor_token(data: Path) -> str:
    """A new auditor principal's token, made as an operator would (`remsguard principals`)."""
    create = ["principals", "create", "--role", "auditor", "--name", f"bench-{os.getpid()}"]
    made = subprocess.run(
        [sys.executable, "-m", "remsguard", *create, "--data-dir", str(data)],
        capture_output=True,
        text=True,
        check=True,
    )
    return next(w for w in made.stdout.split() if w.startswith("rg_"))


def _settle(base: str, admin: str) -> None:
    """Wait until the compliance log holds everything ingested so far, so a phase does not
    pay for the one before it; says how long that took when it was not at once. An admin
    read waits for the log (up to 5 s, then it is answered from what the log holds), so a
    read answered well inside that bound means the log was caught up."""
    start = time.monotonic()
    while time.monotonic() - start < 120:
        asked = time.monotonic()
        answer = httpx.get(
            f"{base}/v1/alerts",
            params={"limit": 1},
            headers={"Authorization": f"Bearer {admin}"},
            timeout=30.0,
        )
        answer.raise_for_status()
        if time.monotonic() - asked < 4.0:
            break
    logged = time.monotonic() - start
    while time.monotonic() - start < 120 and _summary_seconds(base, admin, 1.0) > 0.05:
        pass  # the session summaries of what was recorded are still being refreshed
    waited = time.monotonic() - start
    if waited > 0.5:
        print(
            f"(the compliance log caught up with the phase before in {logged:.1f} s, "
            f"its session summaries in {waited:.1f} s)"
        )


def _summary_seconds(base: str, admin: str, seconds: float) -> float:
    """Seconds spent refreshing session summaries over the next `seconds` (its metric)."""
    name = "remsguard_session_summary_refresh_seconds_sum"

    def spent() -> float:
        text = httpx.get(
            f"{base}/metrics", headers={"Authorization": f"Bearer {admin}"}, timeout=30.0
        ).text
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))

    before = spent()
    time.sleep(seconds)
    return spent() - before


def _cpu_seconds(pid: int) -> float:
    """User and system CPU seconds a process has used (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rate", type=int, default=4000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", help="phases to run (default: 1,n,wrk,batch,auditor)")
    parser.add_argument(
        "--auditor-qps", type=float, default=0.0, help="auditor queries/s (0: back to back)"
    )
    args = parser.parse_args()
    if args.only is None:
        args.only = "1,n,wrk,batch,auditor"
        if shutil.which("wrk") is None:
            print("no wrk on PATH: the wrk phase is skipped (Debian: apt-get install wrk)")
            args.only = "1,n,batch,auditor"
    phases = set(args.only.split(","))
    if "runtime" in phases:
        for clients in (1, args.clients):
            asyncio.run(_runtime_only(clients, args.seconds))
        phases.discard("runtime")
        if not phases:
            return
    with tempfile.TemporaryDirectory(prefix="remsguard-ingest-") as scratch:
        data = Path(scratch) / "data"
        process, base = start_up(data)
        try:
            token = tokens(data)
            device = token["device"]
            print(f"load average {os.getloadavg()[0]:.2f} at the start (2 shared cores)")
            with multiprocessing.Pool(args.workers) as pool:
                worker = 0
                # Phases of clients posting back to back, by name: label, clients, batch.
                posting = {
                    "1": ("1 client, single events", 1, 1),
                    "n": (f"{args.clients} clients, single events", args.clients, 1),
                    "batch": (f"1 client, batches of {args.batch}", 1, args.batch),
                }
                for name in [p for p in ("1", "n", "wrk", "batch") if p in phases]:
                    _settle(base, token["admin"])
                    if name == "wrk":
                        cpu_before = _cpu_seconds(process.pid)
                        rate, latency = _wrk.run(
                            base, device, args.clients, args.seconds, events, worker + 100
                        )
                        cpu = (_cpu_seconds(process.pid) - cpu_before) / (rate * args.seconds)
                        print(
                            f"{args.clients} connections from wrk, single events: {rate:,.0f} "
                            f"events/s; {latency}; server CPU {cpu * 1000:.2f} ms a request; "
                            f"load {os.getloadavg()[0]:.2f}"
                        )
                        continue
                    label, clients, batch = posting[name]
                    rate, latencies, cpu = _phase(
                        pool, base, device, clients, batch, args.seconds, args.workers, worker, None
                    )
                    worker += args.workers
                    print(
                        f"{label}: {rate:,.0f} events/s; {_percentiles(latencies)}; "
                        f"client CPU {cpu:.1f} s; load {os.getloadavg()[0]:.2f}"
                    )
                if "auditor" in phases:
                    _settle(base, token["admin"])
                    per_tick = max(1, args.rate // 100)
                    job = pool.apply_async(
                        _worker,
                        ((base, device, worker, 1, per_tick, args.seconds, 0.01),),
                    )
                    auditor = auditor_token(data)
                    queried = asyncio.run(_auditor(base, auditor, args.seconds, args.auditor_qps))
                    sent, ingest_latencies, _ = job.get()
                    print(
                        f"auditor queries ({len(queried) / args.seconds:,.0f}/s) during "
                        f"ingest at {sent / args.seconds:,.0f} events/s "
                        f"(asked {args.rate:,}): {_percentiles(queried)}; ingest "
                        f"{_percentiles(ingest_latencies)}; load {os.getloadavg()[0]:.2f}"
                    )
        finally:
            stop(process)


if __name__ == "__main__":
    main()
