"""The staff console on the Kafka/PostgreSQL deployment, end to end with real components: a
Kafka broker, PostgreSQL, `remsguard processor`, `remsguard notifier` and `remsguard api`
(staff console on) as subprocesses, and Debian's Chromium driven by Playwright.

Events are published to the input topics -> the processor raises BP_CRISIS -> the alert is
on the console within 2 seconds -> the staff member clicks Acknowledge -> the compliance log
(PostgreSQL) holds the acknowledgement with that staff member's id, and the notifier never
escalates it, while a second critical alert nobody acknowledges escalates on time. The
sessions board and `GET /sessions/{id}/discharge-readiness` come from the processor's own
session state (its table's changelog). Screenshots: `artifacts/console-kafka*.png`.

A warning shelved on the API's console for a minute comes back to "Open" there by itself
within seconds of its shelf's expiry (the notifier owns the shelf timer), is notified again
once (the webhook) and escalates again, while one shelved for an hour stays shelved.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from remsguard.adapters.storage import (
    AlertQuery,
    ApiPrincipal,
    AuditQuery,
    ComplianceLog,
    PrincipalRole,
)

from .processor_kit import SessionWriter, Stack, stack, stamp, to_lines
from .test_console_browser import ARTIFACTS, CHROMIUM, signed_in

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.postgres,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"{CHROMIUM} missing: run deploy/chromium/install.sh"
    ),
]

ESCALATE_AFTER_S = 8  # critical, unacknowledged this long -> lead on call (the test policy)
START_TIMEOUT_S = 60


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    name = f"rg_console_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _start(the_stack: Stack, name: str, *args: str) -> Service:
    log = the_stack.log_dir / f"{name}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "remsguard", *args],
        env=the_stack.env(),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    return Service(process, log)


def _wait(
    what: str, ready: Callable[[], bool], service: Service, timeout: float = START_TIMEOUT_S
) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if service.process.poll() is not None:
            raise AssertionError(f"{what} exited {service.process.returncode}:\n{service.tail()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not ready after {timeout}s:\n{service.tail()}")
        time.sleep(0.2)


def _escalated(db: str) -> dict[str, list[int]]:
    with ComplianceLog.open(db) as log:
        rows = log.audit_records(AuditQuery(kind="alert.escalated", limit=100)).items
    out: dict[str, list[int]] = {}
    for row in rows:
        out.setdefault(row.subject_id, []).append(orjson.loads(row.detail)["step"])
    return out


@dataclass
class Deployment:
    """The processor, the notifier and the API (staff console on) over one fresh database."""

    db: str
    base: str
    staff: ApiPrincipal
    token: str  # the staff member's, clinic c1
    stack: Stack
    notifier: Service
    api: Service


@contextmanager
def deployment(
    kafka_bootstrap: str,
    database_url: str,
    tmp_path: Path,
    escalate: dict[str, tuple[int, str]],
    **env: str,
) -> Iterator[Deployment]:
    """Everything started and ready: the worker has its partitions, the API answers.
    `escalate`: severity -> (after seconds, target), the one step of the default policy."""
    pytest.importorskip("playwright.sync_api")
    policy_file = tmp_path / "policy.toml"
    steps = {
        severity: f'{{ after_seconds = {after}, target = "{target}" }}'
        for severity, (after, target) in escalate.items()
    }
    policy_file.write_text(
        "[default]\n" + "".join(f"{s} = [{steps.get(s, '')}]\n" for s in ("critical", "warning"))
    )
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with (
        fresh_database(database_url) as db,
        stack(
            kafka_bootstrap,
            tmp_path,
            REMSGUARD_DATABASE_URL=db,
            REMSGUARD_API_STAFF_CONSOLE="true",
            REMSGUARD_ALERTING_POLICY_FILE=str(policy_file),
            REMSGUARD_ESCALATION_TICK_SECONDS="0.25",
            REMSGUARD_LOG_LEVEL="info",
            **env,
        ) as the_stack,
    ):
        the_stack.extra_env["REMSGUARD_NOTIFIER_GROUP_ID"] = f"{the_stack.name}-notifier"
        with ComplianceLog.open(db) as log:  # migrates; the staff member signs in with this
            staff, token = log.create_principal("rn-jane.doe", PrincipalRole.STAFF, ["c1"])
        worker = the_stack.start_worker()
        notifier = _start(the_stack, "notifier", "notifier")
        api = _start(the_stack, "api", "api", "--port", str(port))
        try:
            worker.wait_assigned()

            def api_up() -> bool:
                with suppress(httpx.HTTPError):
                    return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
                return False

            _wait("remsguard api", api_up, api)
            yield Deployment(db, base, staff, token, the_stack, notifier, api)
        finally:
            api.stop()
            notifier.stop()
            worker.stop()


def test_kafka_alert_reaches_console_ack_is_audited_and_stops_escalation(
    kafka_bootstrap: str, database_url: str, tmp_path: Path
) -> None:
    escalate = {"critical": (ESCALATE_AFTER_S, "lead_on_call")}
    with deployment(kafka_bootstrap, database_url, tmp_path, escalate) as up:
        db, base, staff, token, the_stack = up.db, up.base, up.staff, up.token, up.stack
        notifier = up.notifier
        now = datetime.now(UTC)
        quiet = SessionWriter("s-quiet", now - timedelta(minutes=65), clinic="c1")
        quiet.opened(-10, patient_ref="PT-1187")
        quiet.bp(-5, 128, 80)
        quiet.dose(0)
        quiet.vitals(40, systolic=141, diastolic=86, spo2=97)
        quiet.assess(45, 5)
        crit = SessionWriter("s-crit", now - timedelta(minutes=22), clinic="c1")
        crit.opened(-8, patient_ref="PT-0042")
        crit.bp(-4, 132, 84)
        crit.dose(0)
        other = SessionWriter("s-other", now - timedelta(minutes=30), clinic="c1")
        other.opened(-8, patient_ref="PT-0077")
        other.bp(-4, 130, 82)
        other.dose(0)
        other.vitals(29, systolic=190, diastolic=112)  # BP_CRISIS nobody acknowledges
        the_stack.publish(to_lines(quiet.events + crit.events + other.events))

        with signed_in(tmp_path, base, token) as page:
            # the board is the processor's state, read from its changelog
            page.wait_for_selector('[data-session="s-crit"]', timeout=30_000)
            page.locator('[data-session="s-quiet"]', has_text="BP 141/86").wait_for(timeout=10_000)
            page.locator('[data-session="s-crit"]', has_text="40-minute").wait_for(
                timeout=10_000
            )  # the next check due, from the engine
            page.locator("li.alert.critical", has_text="PT-0077").wait_for(timeout=10_000)

            started = time.monotonic()
            crit.vitals(21.5, systolic=192, diastolic=104, spo2=96)
            the_stack.publish(to_lines(crit.events[-1:]))
            alert = page.locator("li.alert.critical", has_text="PT-0042")
            alert.wait_for(state="visible", timeout=2_000)
            elapsed = time.monotonic() - started
            assert elapsed < 2.0, f"alert took {elapsed:.2f}s to reach the console"
            print(f"publish -> alert on the console: {elapsed * 1000:.0f} ms")
            assert "BP_CRISIS" in alert.inner_text()
            page.locator('[data-session="s-crit"]', has_text="BP 192/104").wait_for(timeout=5_000)
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "console-kafka.png"), full_page=True)

            alert.locator("button.ack").click()
            page.wait_for_selector('li.alert.critical[data-status="acknowledged"]', timeout=5_000)
            assert "acknowledged by rn-jane.doe" in alert.inner_text()
            page.screenshot(path=str(ARTIFACTS / "console-kafka-acknowledged.png"), full_page=True)

        readiness = httpx.get(
            f"{base}/sessions/s-crit/discharge-readiness",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert readiness.status_code == 200, readiness.text
        body = readiness.json()
        assert body["ready"] is False and body["patient_ref"] == "PT-0042"
        assert body["earliest_discharge_at"] == stamp(crit.dose_at + timedelta(hours=2))
        assert "Open critical alerts: BP_CRISIS" in body["reasons"]  # acknowledged, open
        assert any(r.startswith("Observation window not elapsed") for r in body["reasons"])

        with ComplianceLog.open(db) as log:
            rows = log.alerts(AlertQuery(rule="BP_CRISIS", limit=100)).items
        by_session = {a.session_id: a for a in rows}
        acked, ignored = by_session["s-crit"], by_session["s-other"]
        assert (acked.status, acked.acknowledged_by) == ("acknowledged", staff.principal_id)
        assert ignored.status == "open"

        # the notifier escalates the ignored one on time, never the acknowledged one
        deadline = time.monotonic() + ESCALATE_AFTER_S + 20
        while ignored.alert_id not in _escalated(db) and time.monotonic() < deadline:
            time.sleep(0.25)
        quiet_until = acked.recorded_at.replace(tzinfo=UTC) + timedelta(
            seconds=ESCALATE_AFTER_S + 3
        )
        time.sleep(max(0.0, (quiet_until - datetime.now(UTC)).total_seconds()))
        escalated = _escalated(db)
        assert escalated.get(ignored.alert_id) == [0], notifier.tail()
        assert acked.alert_id not in escalated

        with ComplianceLog.open(db) as log:
            acks = log.audit_records(AuditQuery(kind="alert.acknowledged", limit=10)).items
        # The crisis card carries the BP_RISE of the same reading: one click, both records.
        [record] = [r for r in acks if r.subject_id == acked.alert_id]
        assert all(
            orjson.loads(r.detail).get("with") == acked.alert_id for r in acks if r is not record
        )
        detail = orjson.loads(record.detail)
        assert record.subject_id == acked.alert_id
        assert detail["by"] == staff.principal_id and detail["by_name"] == "rn-jane.doe"
        assert record.clinic_id == "c1" and record.session_id == "s-crit"


class _Hook(ThreadingHTTPServer):
    """The notifier's webhook receiver: every notification it was sent, in order."""

    def __init__(self) -> None:
        self.notes: list[dict[str, Any]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.notes.append(orjson.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"

    def kinds(self, alert_id: str) -> list[str]:
        return [n["kind"] for n in list(self.notes) if n["alert"]["alert_id"] == alert_id]


@contextmanager
def webhook_receiver() -> Iterator[_Hook]:
    hook = _Hook()
    thread = threading.Thread(target=hook.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        hook.shutdown()
        hook.server_close()


SHELF_ESCALATE_AFTER_S = 15  # a warning left open this long -> the charge nurse


def test_kafka_shelf_expiry_reopens_the_card_live_notifies_once_and_escalates_again(
    kafka_bootstrap: str, database_url: str, tmp_path: Path
) -> None:
    with (
        webhook_receiver() as hook,
        deployment(
            kafka_bootstrap,
            database_url,
            tmp_path,
            {"warning": (SHELF_ESCALATE_AFTER_S, "charge_nurse")},
            REMSGUARD_WEBHOOK_URL=hook.url,
            REMSGUARD_WEBHOOK_SECRET="test-secret",
            REMSGUARD_ALERTING_GROUP_SECONDS="0",
        ) as up,
    ):
        now = datetime.now(UTC)
        writers = {}
        for sid in ("s-short", "s-long"):
            writer = SessionWriter(sid, now - timedelta(minutes=20), clinic="c1")
            writer.opened(-8, patient_ref=f"PT-{sid}")
            writer.bp(-4, 124, 80)
            writer.dose(0)
            writer.vitals(19, spo2=91)  # SPO2_LOW, a warning
            writers[sid] = writer
        auth = {"Authorization": f"Bearer {up.token}"}
        with signed_in(tmp_path, up.base, up.token) as page:
            up.stack.publish(to_lines([e for w in writers.values() for e in w.events]))
            ids: dict[str, str] = {}
            for sid in writers:
                card = page.locator("#alerts li.alert", has_text=f"PT-{sid}").filter(
                    has_text="SPO2_LOW"
                )
                card.wait_for(timeout=30_000)
                ids[sid] = str(card.get_attribute("data-alert"))
            shelves = {}
            for sid, minutes in (("s-short", 1), ("s-long", 60)):
                answer = httpx.post(
                    f"{up.base}/v1/alerts/{ids[sid]}/shelve",
                    json={"minutes": minutes, "reason": "probe off the finger"},
                    headers=auth,
                    timeout=10,
                )
                assert answer.status_code == 200, answer.text
                shelves[sid] = datetime.fromisoformat(answer.json()["alert"]["shelved_until"])
                page.locator(f'#shelved li.alert[data-alert="{ids[sid]}"]').wait_for(timeout=5_000)

            back = page.locator(f'#alerts li.alert[data-alert="{ids["s-short"]}"]')
            back.wait_for(timeout=90_000)
            late = (datetime.now(UTC) - shelves["s-short"]).total_seconds()
            print(f"shelf expiry -> card open on the API's console: {late * 1000:.0f} ms")
            assert late < 5.0, f"the card came back {late:.1f}s after its shelf expired"
            assert back.get_attribute("data-status") == "open"
            # the hour-long shelf has not expired: still shelved
            page.locator(f'#shelved li.alert[data-alert="{ids["s-long"]}"]').wait_for(timeout=1_000)
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "console-kafka-unshelved.png"), full_page=True)

        # escalation resumes for the one back on the list, from its shelf's expiry
        short, long_ = ids["s-short"], ids["s-long"]
        deadline = time.monotonic() + SHELF_ESCALATE_AFTER_S + 20
        while short not in _escalated(up.db) and time.monotonic() < deadline:
            time.sleep(0.25)
        escalated = _escalated(up.db)
        assert escalated.get(short) == [0], up.notifier.tail()
        assert long_ not in escalated
        deadline = time.monotonic() + 10
        while "escalation" not in hook.kinds(short) and time.monotonic() < deadline:
            time.sleep(0.1)
        # the notifier pushes it when raised, back from its shelf and escalated, once each;
        # the shelf was made on the API, which tells the webhook too (as embedded mode does)
        assert hook.kinds(short) == ["alert", "shelved", "unshelved", "escalation"]
        assert hook.kinds(long_) == ["alert", "shelved"]
        with ComplianceLog.open(up.db) as log:
            unshelved = log.audit_records(AuditQuery(kind="alert.unshelved", limit=10)).items
            statuses = log.alert_statuses([short, long_])
        assert [r.subject_id for r in unshelved] == [short]
        assert statuses == {short: "open", long_: "shelved"}
