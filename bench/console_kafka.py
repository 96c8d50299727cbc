"""Alert delivery latency on the Kafka deployment: alert on `rems.alerts.v1` -> a console's SSE.

    REMSGUARD_KAFKA_BOOTSTRAP=... REMSGUARD_DATABASE_URL=postgresql+psycopg://... \\
        python3 -m uv run --frozen python -m bench.console_kafka [--rate 10] [--seconds 30]

Creates the topics under a fresh prefix and a fresh PostgreSQL database on that server, starts
`remsguard api` with the staff console (`REMSGUARD_API_STAFF_CONSOLE=true`), creates a staff
principal and follows `GET /v1/stream` as the console does. Then, open loop at `--rate` per
second, produces one critical alert to the alerts topic (acks=all, flushed). The latency of an
alert is from just before it is produced to the moment its SSE `alert` event is read: the
broker round trip, the API's consumer (`AlertFeed`), the idempotent insert into the compliance
log (`AlertingService.relay`) and the SSE hop. Prints p50/p95/p99/max.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
from kafka import KafkaProducer
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench.alert_delivery import _free_port, follow_alerts, print_latencies, stop_process
from remsguard.adapters.kafka.topics import Topics, create_topics
from remsguard.adapters.storage import ComplianceLog, PrincipalRole
from remsguard.contract.outbound import alert_to_json
from remsguard.domain.decisions import Alert, Severity


def _alert(index: int, run: str) -> Alert:
    session = f"{run}-s{index:06d}"
    return Alert(
        alert_id=f"{run}-a{index:06d}",
        rule="BP_CRISIS",
        severity=Severity.CRITICAL,
        session_id=session,
        clinic_id="bench",
        triggered_at=datetime.now(UTC),
        message="Blood pressure 188/104 mmHg is in the hypertensive-crisis range.",
        evidence=(f"{session}-x",),
        protocol="spravato-rems",
        protocol_version="bench",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=10.0, help="critical alerts per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    bootstrap = os.environ.get("REMSGUARD_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    server = os.environ["REMSGUARD_DATABASE_URL"]
    total = int(args.rate * args.seconds)
    run = f"bench{uuid.uuid4().hex[:8]}"
    topics = Topics.named(f"{run}-")
    create_topics(bootstrap, topics, 3, 1)
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{run}"'))
    db = make_url(server).set(database=run).render_as_string(hide_password=False)
    with ComplianceLog.open(db) as log:
        _, token = log.create_principal("bench-staff", PrincipalRole.STAFF, [])

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "REMSGUARD_KAFKA_BOOTSTRAP": bootstrap,
        "REMSGUARD_DATABASE_URL": db,
        "REMSGUARD_TOPIC_PREFIX": f"{run}-",
        "REMSGUARD_PROCESSOR_APP_ID": f"{run}-app",
        "REMSGUARD_API_STAFF_CONSOLE": "true",
        "REMSGUARD_LOG_LEVEL": "warning",
        "REMSGUARD_LOG_FORMAT": "json",
    }
    with tempfile.TemporaryDirectory(prefix="rg-bench-console-") as tmp:
        log_path = Path(tmp) / "api.log"
        with log_path.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "remsguard", "api", "--port", str(port)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            )  # fmt: skip
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
        try:
            for _ in range(600):
                try:
                    if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            sent: dict[str, float] = {}
            received: dict[str, float] = {}
            ready = threading.Event()

            def follow() -> None:
                follow_alerts(base, token, ready, received, total, lambda a: a["alert_id"])

            reader = threading.Thread(target=follow, daemon=True)
            reader.start()
            ready.wait(30)
            time.sleep(3.0)  # the API's alerts consumer has its partitions (it reads from the end)
            interval = 1.0 / args.rate
            next_at = time.perf_counter()
            for index in range(total):
                alert = _alert(index, run)
                sent[alert.alert_id] = time.perf_counter()
                producer.send(topics.alerts, alert_to_json(alert), key=alert.session_id.encode())
                producer.flush()
                next_at += interval
                time.sleep(max(0.0, next_at - time.perf_counter()))
            reader.join(timeout=30)
            latencies = [(received[a] - sent[a]) * 1000 for a in sent if a in received]
            print(
                f"alert delivery, alerts topic -> SSE (remsguard api, PostgreSQL): "
                f"{len(latencies)} critical alerts at {args.rate:g}/s for {args.seconds:g}s; "
                f"missing {total - len(latencies)}"
            )
            print_latencies(latencies)
        finally:
            producer.close()
            stop_process(proc)
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{run}" WITH (FORCE)'))
            from kafka.admin import KafkaAdminClient

            client = KafkaAdminClient(bootstrap_servers=bootstrap)
            names = [n for n in client.list_topics() if n.startswith(run)]
            if names:
                client.delete_topics(names)
            client.close()


if __name__ == "__main__":
    main()
