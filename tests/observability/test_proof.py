"""The proof of issue 7: a real Prometheus scrapes the real services during an end-to-end run over
the real broker, then every query of every dashboard panel, evaluated through Prometheus' HTTP
API, returns data.

Running: `remsguard processor` and `remsguard audit-sink` (on the broker, each with its own
topics and consumer group) and `remsguard up` (embedded mode, SQLite, with its notifier and the
form deadline task). Simulated clinic days (back-dated, so every deadline is past and sessions
complete; the first 9 days back, so their monitoring forms are overdue) are published to Kafka
and posted to the embedded ingest in three waves a few seconds apart, with garbage messages that
must be dead-lettered. A staff member acknowledges alerts through the API in every wave, and an
escalation policy with steps seconds apart escalates the others past their last step.
Prometheus (Debian's package) scrapes all three every second and loads the alerting rules of
deploy/prometheus/rules/, which must evaluate without error on real data.

Every query of every panel must return data; none is excused.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from remsguard.adapters.kafka.topics import Topics, create_topics

from .dashboards import REPO, Query, queries, substitute

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(480)]

PARTITIONS = 2
WAVE_DAYS_AGO = (9, 3, 2)  # the first wave's forms are overdue (7 days after discharge)
WAVE_GAP_S = 8.0
SCRAPE_S = 1
START_TIMEOUT_S = 90.0
ACKS_PER_WAVE = 2
# Escalation in seconds, so alerts escalate, and pass their last step, during the run.
POLICY = """
[default]
critical = [
  { after_seconds = 2, target = "lead_on_call" },
  { after_seconds = 4, target = "medical_director" },
]
warning = [{ after_seconds = 3, target = "lead_on_call" }]
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body: bytes = response.read()
        return body


def wait_for(what: str, check: Callable[[], bool], timeout: float, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with suppress(Exception):
            if check():
                return
        time.sleep(0.5)
    tails = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in logs)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{tails}", pytrace=False)


@contextmanager
def process(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as handle:
        proc = subprocess.Popen(
            argv, env=env, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)


def remsguard(*args: str) -> list[str]:
    return [sys.executable, "-m", "remsguard", *args]


def prometheus_config(targets: dict[str, int], path: Path) -> None:
    rules = sorted(str(p) for p in (REPO / "deploy/prometheus/rules").glob("*.yml"))
    config = {
        "global": {"scrape_interval": f"{SCRAPE_S}s", "evaluation_interval": f"{SCRAPE_S}s"},
        "rule_files": rules,
        "scrape_configs": [
            {
                "job_name": "remsguard",
                "static_configs": [
                    {"targets": [f"127.0.0.1:{port}"], "labels": {"service": service}}
                    for service, port in targets.items()
                ],
            }
        ],
    }
    path.write_text(yaml.safe_dump(config))


class PrometheusAPI:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, **params: Any) -> Any:
        url = f"{self.base}{path}?{urllib.parse.urlencode(params)}"
        body = orjson.loads(http_get(url, timeout=30))
        assert body["status"] == "success", body
        return body["data"]

    def values(self, expr: str, start: float, end: float) -> list[float]:
        """Every value of every series of a range query over [start, end]."""
        data = self.get("/api/v1/query_range", query=expr, start=start, end=end, step=2)
        return [float(v) for series in data["result"] for _, v in series["values"]]

    def instant(self, expr: str) -> list[float]:
        return [float(s["value"][1]) for s in self.get("/api/v1/query", query=expr)["result"]]


def has_data(values: list[float]) -> bool:
    return any(math.isfinite(v) for v in values)


def simulated_day(out: Path, seed: int, start: datetime, env: dict[str, str]) -> list[bytes]:
    done = subprocess.run(
        remsguard(
            "simulate",
            "--out",
            str(out),
            "--seed",
            str(seed),
            "--start",
            start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "--clinics",
            "2",
            "--chairs",
            "2",
            "--sessions-per-chair",
            "3",
            "--malformed-rate",
            "0",
            "--manifest",
            str(out.with_suffix(".manifest")),
        ),
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    return [line for line in out.read_bytes().splitlines() if line.strip()]


def live_sessions(wave: int) -> list[bytes]:
    """One session per clinic dosed minutes ago and not discharged: under monitoring now."""
    now = datetime.now(UTC)
    lines = []
    for clinic in ("clinic-01", "clinic-02"):
        session = f"{clinic}-live-{wave}"
        events: list[tuple[str, timedelta, dict[str, Any]]] = [
            ("session.opened", timedelta(minutes=12), {"patient_ref": f"pt-live-{wave}"}),
            ("vitals.recorded", timedelta(minutes=10), {"systolic": 122, "diastolic": 78}),
            (
                "dose.administered",
                timedelta(minutes=5),
                {"drug": "esketamine", "route": "intranasal", "dose_mg": 56.0},
            ),
        ]
        for number, (kind, ago, data) in enumerate(events):
            event = {
                "event_id": f"{session}-{number}",
                "type": kind,
                "session_id": session,
                "clinic_id": clinic,
                "occurred_at": (now - ago).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "data": data,
            }
            lines.append(orjson.dumps(event))
    return lines


def post_events(port: int, token: str, lines: list[bytes]) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/events",
        data=b"\n".join(lines) + b"\n",
        headers={"Content-Type": "application/x-ndjson", "Authorization": f"Bearer {token}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        assert 200 <= response.status < 300


def device_token(data_dir: Path) -> str:
    for line in (data_dir / "first-run-tokens.txt").read_text().splitlines():
        name, _, token = line.partition(": ")
        if name == "device":
            return token
    raise AssertionError("no device token")


def first_run_token(data_dir: Path, role: str) -> str:
    for line in (data_dir / "first-run-tokens.txt").read_text().splitlines():
        name, _, token = line.partition(": ")
        if name == role:
            return token
    raise AssertionError(f"no {role} token")


def api(port: int, method: str, path: str, token: str, body: Any = None) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=None if body is None else orjson.dumps(body),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method=method,
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return orjson.loads(response.read())


def acknowledge_some(port: int, token: str, count: int) -> int:
    """A staff member acknowledges up to `count` open alerts, one per (clinic, severity)."""
    alerts = api(port, "GET", "/v1/alerts?limit=10000", token)["alerts"]
    done: set[tuple[str, str]] = set()
    for alert in alerts:
        key = (alert["clinic_id"], alert["severity"])
        if alert["status"] != "open" or key in done or len(done) >= count:
            continue
        answer = api(port, "POST", f"/v1/alerts/{alert['alert_id']}/acknowledge", token)
        assert answer["alert"]["status"] == "acknowledged", answer
        done.add(key)
    return len(done)


def test_every_panel_query_returns_data_from_the_running_services(
    kafka_bootstrap: str, prometheus_bin: str, tmp_path: Path
) -> None:
    from kafka import KafkaProducer

    name = f"proof-{uuid.uuid4().hex[:10]}"
    prefix = f"{name}-"
    topics = Topics.named(prefix)
    create_topics(kafka_bootstrap, topics, PARTITIONS, 1)
    ports = {"processor": free_port(), "audit-sink": free_port(), "up": free_port()}
    prom_port = free_port()
    base_env = dict(os.environ)
    base_env.update(
        REMSGUARD_KAFKA_BOOTSTRAP=kafka_bootstrap,
        REMSGUARD_TOPIC_PREFIX=prefix,
        REMSGUARD_TOPIC_PARTITIONS=str(PARTITIONS),
        REMSGUARD_PROCESSOR_APP_ID=f"{name}-app",
        REMSGUARD_LOG_FORMAT="json",
        REMSGUARD_LOG_LEVEL="warning",
        REMSGUARD_CLOCK_IDLE_GRACE_SECONDS="1",
        REMSGUARD_CLOCK_TICK_SECONDS="0.25",
    )
    logs = {k: tmp_path / f"{k}.log" for k in ("processor", "audit-sink", "up", "prometheus")}
    data_dir = tmp_path / "embedded"
    policy = tmp_path / "escalation.toml"
    policy.write_text(POLICY)
    prometheus_config(ports, tmp_path / "prometheus.yml")

    with ExitStack() as stack:
        stack.enter_context(
            process(
                remsguard("processor"),
                {**base_env, "REMSGUARD_METRICS_PORT": str(ports["processor"])},
                logs["processor"],
            )
        )
        stack.enter_context(
            process(
                remsguard(
                    "audit-sink", "--db", f"sqlite:///{tmp_path / 'log.db'}", "--batch", "500"
                ),
                {**base_env, "REMSGUARD_METRICS_PORT": str(ports["audit-sink"])},
                logs["audit-sink"],
            )
        )
        stack.enter_context(
            process(
                remsguard("up", "--data-dir", str(data_dir), "--port", str(ports["up"])),
                {
                    **base_env,
                    "REMSGUARD_METRICS_PORT": "0",
                    "REMSGUARD_ALERTING_POLICY_FILE": str(policy),
                    "REMSGUARD_ESCALATION_TICK_SECONDS": "0.5",
                    "REMSGUARD_FORM_CHECK_SECONDS": "1",
                },
                logs["up"],
            )
        )
        stack.enter_context(
            process(
                [
                    prometheus_bin,
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                    "--storage.tsdb.retention.time=1h",
                ],
                base_env,
                logs["prometheus"],
            )
        )
        log_files = list(logs.values())
        prom = PrometheusAPI(prom_port)
        for service, port in ports.items():
            wait_for(
                f"{service} /healthz",
                lambda p=port: http_get(f"http://127.0.0.1:{p}/healthz") is not None,
                START_TIMEOUT_S,
                log_files,
            )
        wait_for(
            "prometheus ready",
            lambda: http_get(f"{prom.base}/-/ready") is not None,
            START_TIMEOUT_S,
            log_files,
        )
        wait_for(
            "the processor to own its partitions",
            lambda: (
                b'remsguard_worker_up{service="processor"} 1.0'
                in http_get(f"http://127.0.0.1:{ports['processor']}/metrics")
            ),
            START_TIMEOUT_S,
            log_files,
        )
        token = device_token(data_dir)
        staff = api(
            ports["up"],
            "POST",
            "/v1/staff",
            first_run_token(data_dir, "admin"),
            {"name": "rn-proof"},
        )["token"]
        started = time.time()
        acknowledged = 0

        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        stack.callback(producer.close)
        today = datetime.now(UTC).replace(hour=8, minute=0, second=0, microsecond=0)
        for wave, days_ago in enumerate(WAVE_DAYS_AGO):
            day = today - timedelta(days=days_ago)
            path = tmp_path / f"wave-{wave}.jsonl"
            lines = [*simulated_day(path, 100 + wave, day, base_env), *live_sessions(wave)]
            path.write_bytes(b"\n".join(lines) + b"\n")
            published = subprocess.run(
                remsguard("publish", str(tmp_path / f"wave-{wave}.jsonl")),
                env=base_env,
                capture_output=True,
                timeout=120,
                check=False,
            )
            assert published.returncode == 0, published.stderr.decode(errors="replace")
            for garbage in (b"{not json", b'{"type": "vitals.recorded"}', b"\x00\xff"):
                producer.send(topics.inputs[1], key=b"garbage", value=garbage)
            producer.flush(timeout=30)
            post_events(ports["up"], token, [*lines, b'{"type": "dose.administered"}'])
            # Acknowledge a few seconds later: the acknowledgement histogram's series exist
            # from the alerts' opening, so rate() sees these as increases.
            time.sleep(WAVE_GAP_S / 2)
            acknowledged += acknowledge_some(ports["up"], staff, ACKS_PER_WAVE)
            time.sleep(WAVE_GAP_S / 2)
        assert acknowledged >= len(WAVE_DAYS_AGO)

        # Everything processed and scraped: completed sessions on both paths, audit rows stored.
        for expr in (
            'sum(remsguard_sessions_completed_total{service="processor"})',
            'sum(remsguard_sessions_completed_total{service="up"})',
            'sum(remsguard_audit_sink_rows_total{service="audit-sink", result="inserted"})',
            'sum(remsguard_dead_letters_total{service="processor"}) >= 9',
            'sum(remsguard_forms_overdue{service="up"})',
            'sum(remsguard_escalations_total{service="up"})',
            'sum(remsguard_alerts_open_past_escalation{service="up"})',
            'sum(remsguard_alert_acknowledgement_seconds_count{service="up"})',
        ):
            wait_for(
                f"Prometheus to see {expr}",
                lambda e=expr: has_data(prom.instant(e)) and prom.instant(e)[0] > 0,
                90,
                log_files,
            )
        time.sleep(3 * SCRAPE_S + WAVE_GAP_S)
        end = time.time()

        range_ = f"{int(end - started) + 60}s"
        results: dict[Query, bool] = {}
        for query in queries():
            expr = substitute(query.expr, rate_interval="15s", range_=range_)
            results[query] = has_data(prom.values(expr, started - 30, end))

        rules = prom.get("/api/v1/rules")["groups"]
        unhealthy = [
            (r["name"], r.get("lastError"))
            for g in rules
            for r in g["rules"]
            if r.get("health") != "ok"
        ]
        firing = {a["labels"]["alertname"] for a in prom.get("/api/v1/alerts")["alerts"]}

    def describe(q: Query) -> str:
        return f"{q.dashboard} #{q.panel_id} {q.panel_title!r} {q.ref_id}: {q.expr}"

    empty = [describe(q) for q, ok in results.items() if not ok]
    assert len(results) >= 25
    assert not empty, "panel queries with no data:\n" + "\n".join(empty)
    print(f"all {len(results)} panel queries have data")
    assert sum(rules_ok := [len(g["rules"]) for g in rules]) >= 5, rules_ok
    assert not unhealthy, unhealthy
    assert "RemsguardProcessorDown" not in firing
