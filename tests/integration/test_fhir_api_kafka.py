"""FHIR through `remsguard api` on the real broker: the API publishes a transaction Bundle's
events to the input topics (answering once Kafka acknowledged them), the processor judges
them, and the alerts equal `remsguard replay` of the same session as JSON."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest
from fhir.resources.R4B.bundle import Bundle

from .embedded_support import free_port, remsguard
from .processor_kit import alerts_of, read_until, replay_alerts, stack
from .test_fhir_embedded import FHIR_JSON, SESSION, core, dose_time, json_lines, session_bundle

pytestmark = pytest.mark.kafka


def test_a_bundle_posted_to_the_api_raises_on_kafka_what_replay_raises(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    with stack(kafka_bootstrap, tmp_path) as deployment:
        worker = deployment.start_worker()
        worker.wait_assigned()
        env = {**deployment.env(), "REMSGUARD_DATABASE_URL": f"sqlite:///{tmp_path / 'log.db'}"}
        made = remsguard("principals", "create", "--role", "device", "--name", "ehr", env=env)
        assert made.returncode == 0, made.stderr
        token = made.stdout.strip().splitlines()[-1].split()[-1]
        port = free_port()
        log = tmp_path / "api.log"
        with log.open("wb") as out:
            api = subprocess.Popen(
                [sys.executable, "-m", "remsguard", "api", "--port", str(port)],
                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                assert api.poll() is None, log.read_text()
                try:
                    if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            dose = dose_time()
            response = httpx.post(
                f"{base}/fhir/r4/Bundle",
                content=orjson.dumps(session_bundle(dose)),
                headers={"Content-Type": FHIR_JSON, "Authorization": f"Bearer {token}"},
                timeout=60,
            )
            assert response.status_code == 200, response.text
            answer = Bundle.model_validate(response.json())
            statuses = [entry.response.status for entry in answer.entry or []]
            assert statuses == ["200 OK", "200 OK"] + ["201 Created"] * 7
        finally:
            api.terminate()
            api.wait(timeout=20)
        until = dt.datetime.now(dt.UTC)
        expected = replay_alerts(json_lines(dose), until)
        rules = {a["rule"] for a in expected}
        assert {"SPO2_LOW", "BP_CRISIS", "BP_RISE"} <= rules
        records = read_until(
            kafka_bootstrap,
            deployment.topics.alerts,
            lambda rs: rules <= {a["rule"] for a in alerts_of(rs) if a["session_id"] == SESSION},
            timeout=90,
            quiet=3.0,
        )
        served = [a for a in alerts_of(records) if a["session_id"] == SESSION]
        assert core(served) == core(expected), worker.tail()
