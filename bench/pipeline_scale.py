"""Scale-out of the Kafka path: 1, 2 and 3 workers on 6 partitions, and a worker joining or
killed under load.

    python -m bench.pipeline_scale [--workers 1,2,3] [--events 60000] [--rate 2000]
                                   [--seconds 30] [--churn] [--bootstrap ...]

For each worker count, on fresh topics each time:
1. throughput: the workers start and share the partitions; then a publisher process sends
   `--events` events of interleaved sessions (`bench._pipeline.interleaved`) as fast as it
   can; the aggregate rate is taken over the middle 80% of the `event.accepted` audit records
   by their broker timestamps (start-up and the tail left out);
2. latency: the same workers, fresh topics, `--rate` events/s of live sessions for
   `--seconds` (`bench.pipeline_latency`'s publisher): publish -> alert p50/p99/max.
With `--churn`, two more latency runs: one worker, a second started 10 s in (join); two
workers, one killed with SIGKILL 10 s in (its partitions move after the session timeout).
In every latency run a false alarm is an alert that is not a threshold alert on one of the
stream's abnormal readings (SpO2 85, systolic 190): a deadline alert from a clock that ran
ahead, or an alert on a normal reading. Alerts are counted once per alert id (a redelivered
alert after a kill has the same id).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import suppress
from datetime import timedelta
from pathlib import Path

import orjson
from kafka import KafkaConsumer

from bench._pipeline import Deployment, interleaved, now
from bench.pipeline_latency import THRESHOLD_RULES, WARM_UP_S, publisher_process, stream
from bench.pipeline_throughput import publish


class Worker:
    def __init__(self, deployment: Deployment, index: int) -> None:
        self.log = Path(f"/tmp/{deployment.name}-worker{index}.log")
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "remsguard", "processor"],
                env=deployment.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.port: int | None = None

    def partitions(self) -> int:
        if self.process.poll() is not None:
            raise RuntimeError(f"worker exited: {self.log.read_text()[-3000:]}")
        if self.port is None:
            found = re.search(rb"metrics and health on http://[^:]+:(\d+)/", self.log.read_bytes())
            if not found:
                return 0
            self.port = int(found.group(1))
        with suppress(OSError):
            url = f"http://127.0.0.1:{self.port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as response:
                text = response.read().decode()
            found = re.search(r"^remsguard_processor_partitions (\S+)$", text, re.M)
            return int(float(found.group(1))) if found else 0
        return 0

    def stop(self, kill: bool = False) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        with suppress(OSError):
            self.log.unlink()


def wait_shared(workers: list[Worker], partitions: int, timeout: float = 120) -> None:
    """Until the live workers own every partition between them, each at least one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        owned = [w.partitions() for w in workers]
        if sum(owned) == partitions and all(owned):
            return
        time.sleep(0.25)
    raise RuntimeError("the workers did not share the partitions in time")


def throughput(bootstrap: str, count: int, lines: list[bytes]) -> float:
    deployment = Deployment(bootstrap)
    deployment.create()
    workers = [Worker(deployment, i) for i in range(count)]
    try:
        wait_shared(workers, deployment.partitions)
        consumer = KafkaConsumer(
            deployment.topics.audit,
            bootstrap_servers=bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
        )
        publisher = threading.Thread(target=publish, args=(deployment, lines))
        publisher.start()
        stamps: dict[str, int] = {}
        last_new = time.monotonic()
        while len(stamps) < len(lines):
            for records in consumer.poll(timeout_ms=500, max_records=10_000).values():
                for record in records:
                    if b'"event.accepted"' in record.value:
                        stamps.setdefault(
                            orjson.loads(record.value)["subject_id"], record.timestamp
                        )
                        last_new = time.monotonic()
            if time.monotonic() - last_new > 120:
                raise RuntimeError(f"stalled at {len(stamps)} events")
        publisher.join()
        consumer.close()
    finally:
        for worker in workers:
            worker.stop()
        deployment.delete()
    times = sorted(stamps.values())
    low, high = int(0.1 * len(times)), int(0.9 * len(times))
    return (high - low) / ((times[high] - times[low]) / 1000)


def latency(
    bootstrap: str, count: int, rate: int, seconds: float, churn: str | None = None
) -> dict[str, float]:
    """p50/p99/max publish -> alert, and false alarms; `churn`: "join" or "kill" at 10 s."""
    total = int(rate * seconds)
    docs = stream(total // 40 + 1)[:total]
    abnormal = {
        str(d["event_id"])
        for d in docs
        if isinstance(d["data"], dict)
        and (d["data"].get("spo2") == 85 or d["data"].get("systolic") == 190)
    }
    deployment = Deployment(bootstrap)
    deployment.create()
    workers = [Worker(deployment, i) for i in range(count)]
    sent: dict[str, float] = {}
    arrivals: dict[str, float] = {}
    alerts: dict[str, dict[str, object]] = {}
    churned_at = None
    try:
        wait_shared(workers, deployment.partitions)
        consumer = KafkaConsumer(
            deployment.topics.alerts,
            bootstrap_servers=bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=5,
        )
        handed_back: multiprocessing.Queue[dict[str, float]] = multiprocessing.Queue()
        process = multiprocessing.Process(
            target=publisher_process, args=(deployment, docs, rate, handed_back)
        )
        started = time.perf_counter()
        process.start()
        quiet_since = None
        last_alert = time.perf_counter()
        while True:
            batch = consumer.poll(timeout_ms=50)
            arrived = time.perf_counter()
            for records in batch.values():
                for record in records:
                    alert = orjson.loads(record.value)
                    if "kind" in alert:
                        continue  # a withdrawal
                    alerts.setdefault(str(alert["alert_id"]), alert)
                    last_alert = arrived
                    if alert["rule"] in THRESHOLD_RULES:
                        arrivals.setdefault(alert["evidence"][0], arrived)
            if churn and churned_at is None and arrived - started >= 10:
                churned_at = arrived - started
                if churn == "join":
                    workers.append(Worker(deployment, len(workers)))
                else:
                    workers[0].stop(kill=True)
            if not sent and not handed_back.empty():
                sent = handed_back.get()
            elif not sent and not process.is_alive() and handed_back.empty():
                raise RuntimeError(f"the publisher exited with code {process.exitcode}")
            if sent:
                quiet_since = quiet_since or time.perf_counter()
                # Published: wait until no alert came for a while (a lagging worker catches
                # up; after a kill, the partitions move and the input is redone).
                quiet = time.perf_counter() - max(quiet_since, last_alert)
                if quiet > (25 if churn == "kill" else 8):
                    break
        process.join(timeout=30)
        consumer.close()
    finally:
        for worker in workers:
            worker.stop()
        deployment.delete()
    latencies = sorted(
        arrived - sent[event_id]
        for event_id, arrived in arrivals.items()
        if event_id in sent and sent[event_id] - started >= WARM_UP_S
    )
    missing = [e for e in abnormal if e in sent and e not in arrivals]
    false = [
        a
        for a in alerts.values()
        if a["rule"] not in THRESHOLD_RULES or not set(map(str, a["evidence"])) & abnormal
    ]

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    return {
        "published_rate": sent.get("__rate__", 0.0),
        "measured": len(latencies),
        "p50": pct(0.5),
        "p99": pct(0.99),
        "max": latencies[-1] * 1000,
        "false_alarms": len(false),
        "abnormal_without_alert": len(missing),
    }


def show(label: str, result: dict[str, float]) -> None:
    print(
        f"{label}: published {result['published_rate']:,.0f} events/s; "
        f"p50 {result['p50']:.0f} ms, p99 {result['p99']:.0f} ms, max {result['max']:.0f} ms "
        f"({result['measured']:,.0f} alerting events); false alarms "
        f"{result['false_alarms']:.0f}; abnormal readings with no alert of their own (a "
        f"standing alert covers repeats; the same in every run unless one is lost) "
        f"{result['abnormal_without_alert']:.0f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", default="1,2,3")
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--churn", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",") if n]
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    if not args.skip_throughput:
        lines = interleaved(args.events, now() - timedelta(days=2))
        for count in counts:
            rate = throughput(args.bootstrap, count, lines)
            print(f"{count} worker(s): {rate:,.0f} events/s aggregate", flush=True)
    for count in counts:
        show(
            f"{count} worker(s) at {args.rate}/s",
            latency(args.bootstrap, count, args.rate, args.seconds),
        )
    if args.churn:
        show(
            "1 worker, a 2nd joins at 10 s",
            latency(args.bootstrap, 1, args.rate, args.seconds, "join"),
        )
        show(
            "2 workers, one killed at 10 s",
            latency(args.bootstrap, 2, args.rate, args.seconds, "kill"),
        )
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
