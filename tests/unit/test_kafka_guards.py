"""Issue 15 without a broker: worker health, the metrics server's index and health, JSON-safe
log keys, the CLI's one-line failures, and principals refusing to guess a database."""

from __future__ import annotations

import http.client
import io
import json
import logging
import urllib.request
from pathlib import Path

import pytest
import structlog
from typer.testing import CliRunner

from remsguard.adapters.kafka.errors import BrokerUnreachable, TopicLayoutError
from remsguard.adapters.kafka.health import WorkerHealth
from remsguard.adapters.logs import configure_logging
from remsguard.adapters.metrics import new_registry, serve_metrics
from remsguard.entrypoints.cli import app, explain


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_health_turns_unhealthy_on_a_stall_a_crash_or_a_stopped_timer() -> None:
    clock = Clock()
    health = WorkerHealth(60, monotonic=clock)
    assert health.check() is None  # starting
    health.timer_ran(rebalancing=False)
    health.heartbeats_sent({0, 1})
    clock.now += 30
    health.heartbeat_seen(0)
    health.timer_ran(rebalancing=False)
    assert health.check() is None
    clock.now += 31  # partition 1's heartbeat never came back: stalled, lost broker, stuck
    health.timer_ran(rebalancing=False)
    assert "partition(s) [1] processed nothing" in (health.check() or "")
    health.heartbeat_seen(1)
    assert health.check() is None
    health.crashed(AssertionError("Unrecognized partition"))
    assert "crashed 1 time(s)" in (health.check() or "")
    clock.now += 61
    health.timer_ran(rebalancing=False)
    assert health.check() is None  # no crash for a whole stall period
    clock.now += 61  # the timer stopped (event loop blocked, worker gone)
    assert "timer has not run" in (health.check() or "")
    health.timer_ran(rebalancing=True)
    clock.now += 61
    health.timer_ran(rebalancing=True)
    assert "rebalancing" in (health.check() or "")


def test_the_metrics_server_has_an_index_and_answers_503_when_unhealthy() -> None:
    problem: list[str | None] = [None]
    with serve_metrics(new_registry(), "127.0.0.1", 0, health=lambda: problem[0]) as server:
        base = f"http://127.0.0.1:{server.port}"
        with urllib.request.urlopen(f"{base}/", timeout=5) as index:
            assert b'href="/metrics"' in index.read()
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as ok:
            assert ok.read() == b"ok"
        problem[0] = "partition(s) [2] processed nothing for 61 s"
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        assert response.status == 503
        assert b"partition(s) [2]" in response.read()
        connection.close()


def test_json_logs_stay_json_whatever_the_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 5: a dict with tuple keys used to be a `--- Logging error ---` every 10 s."""
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    configure_logging("info", "json")
    structlog.get_logger("t").info("processor state", ends={("rems.vitals.v1", 0): 5})
    logging.getLogger("faust").info("plain %s", "record")
    lines = stream.getvalue().splitlines()
    assert [json.loads(line)["event"] for line in lines] == ["processor state", "plain record"]
    assert json.loads(lines[0])["ends"] == {"rems.vitals.v1/0": 5}


def test_expected_failures_are_one_line_with_their_exit_code() -> None:
    unreachable = explain(BrokerUnreachable("127.0.0.1:1", 2))
    assert unreachable is not None and unreachable[1] == 1
    assert "127.0.0.1:1 within 2 s" in unreachable[0]
    layout = explain(TopicLayoutError({"x-rems.vitals.v1": 4}, 3))
    assert layout is not None and layout[1] == 2 and "x-rems.vitals.v1 has 4" in layout[0]
    assert explain(RuntimeError("a bug")) is None  # a bug keeps its traceback


def test_principals_refuse_to_guess_a_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 7: without --db, --data-dir or REMSGUARD_DATABASE_URL, `principals create` used
    to create ./remsguard.db, which no API reads."""
    from remsguard.config import get_settings

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REMSGUARD_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["principals", "create", "--role", "admin", "--name", "a"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2
    assert "give --db URL" in result.stderr
    assert not list(tmp_path.iterdir())


def test_every_metric_is_documented() -> None:
    """Item 8: each metric's meaning is in docs/METRICS.md."""
    from remsguard.adapters.kafka.processor import ProcessorMetrics
    from remsguard.adapters.telemetry import Telemetry

    registry = new_registry()
    Telemetry(registry)
    ProcessorMetrics(registry)
    doc = (Path(__file__).parents[2] / "docs" / "METRICS.md").read_text()
    for family in registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        assert f"| `{name}` |" in doc, name
