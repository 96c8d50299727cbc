"""deploy/prometheus: the scrape configuration and alerting rules, checked by promtool itself."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from remsguard.adapters.telemetry import METRIC_NAMES, SERVICES
from remsguard.config import Settings

REPO = Path(__file__).resolve().parents[2]
PROM = REPO / "deploy" / "prometheus"
CONFIGS = [PROM / "prometheus.yml", PROM / "embedded.yml"]
RULES = sorted((PROM / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROM / "tests").glob("*_test.yml"))
REQUIRED_ALERTS = {
    "RemsguardProcessorDown",
    "RemsguardConsumerLagGrowing",
    "RemsguardDeadLetterSpike",
    "RemsguardCriticalAlertUnacknowledged",
    "RemsguardAuditSinkStalled",
}
# Series Prometheus makes itself, allowed in rules besides the remsguard catalogue.
PROMETHEUS_SERIES = {"up"}


def _run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=PROM, check=False)
    assert done.returncode == 0, f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _alerts() -> list[dict[str, Any]]:
    return [rule for path in RULES for g in _load(path)["groups"] for rule in g["rules"]]


def series_names(expr: str) -> set[str]:
    """Metric names used in a PromQL expression (identifiers followed by `{`, `[`, or alone)."""
    without_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    without_labels = re.sub(r"\{[^}]*\}", "{}", without_strings)
    without_ranges = re.sub(r"\[[^\]]*\]", "[]", without_labels)
    keywords = {
        "sum", "avg", "min", "max", "count", "by", "without", "on", "ignoring", "group_left",
        "group_right", "and", "or", "unless", "rate", "irate", "increase", "deriv", "absent",
        "histogram_quantile", "time", "clamp_min", "clamp_max", "topk", "bottomk", "offset",
        "vector", "scalar", "label_replace", "delta", "idelta", "changes", "resets", "le",
        "max_over_time", "min_over_time", "avg_over_time", "last_over_time", "bool", "abs",
    }  # fmt: skip
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_ranges))
    # Label names inside by(...)/on(...) are identifiers too; keep only metric-looking ones.
    return {n for n in names - keywords if n.startswith("remsguard_") or n in PROMETHEUS_SERIES}


def test_promtool_checks_the_configs_and_their_rule_files(promtool: str) -> None:
    for config in CONFIGS:
        out = _run(promtool, "check", "config", str(config))
        assert "SUCCESS" in out


def test_promtool_checks_the_rules(promtool: str) -> None:
    assert RULES
    out = _run(promtool, "check", "rules", *map(str, RULES))
    assert "SUCCESS" in out


def test_promtool_unit_tests_of_the_rules_pass(promtool: str) -> None:
    assert RULE_TESTS
    out = _run(promtool, "test", "rules", *map(str, RULE_TESTS))
    assert "SUCCESS" in out and "FAILED" not in out


def test_every_required_alert_exists_and_has_a_unit_test() -> None:
    names = {rule["alert"] for rule in _alerts() if "alert" in rule}
    assert names >= REQUIRED_ALERTS
    tested: dict[str, list[bool]] = {}
    for path in RULE_TESTS:
        for case in _load(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                tested.setdefault(check["alertname"], []).append(bool(check.get("exp_alerts")))
    for name in names:
        assert name in tested, f"{name} has no promtool test"
        outcomes = tested[name]
        assert True in outcomes and False in outcomes, f"{name}: test both firing and quiet"


def test_rules_use_only_catalogue_metrics() -> None:
    for rule in _alerts():
        used = series_names(rule["expr"])
        assert used, rule["expr"]
        unknown = used - METRIC_NAMES - PROMETHEUS_SERIES
        assert not unknown, f"{rule.get('alert')}: unknown metrics {unknown}"
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["annotations"]["summary"]


def test_series_names_helper() -> None:
    expr = 'sum by (topic) (rate(remsguard_x_total{topic="a{b}"}[5m])) and on() up == 0'
    assert series_names(expr) == {"remsguard_x_total", "up"}


def _targets(config: dict[str, Any], job_name: str) -> dict[str, tuple[int, str]]:
    """host -> (port, service label) of one job's static targets."""
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == job_name]
    found = {}
    for static in job["static_configs"]:
        [target] = static["targets"]
        host, port = target.rsplit(":", 1)
        found[host] = (int(port), static["labels"]["service"])
    return found


def test_scrape_targets_are_the_compose_services_on_their_metrics_ports() -> None:
    config = _load(PROM / "prometheus.yml")
    port = Settings.model_fields["metrics_port"].default
    compose = _load(REPO / "docker-compose.yml")
    assert str(compose["x-remsguard"]["environment"]["REMSGUARD_METRICS_PORT"]) == str(port)
    services = _targets(config, "remsguard")
    # The API serves /metrics on its HTTP port; the other services on the metrics port.
    api_port = Settings.model_fields["api_port"].default
    for host, (target_port, label) in services.items():
        assert target_port == (api_port if host == "api" else port) and label == host, host
    assert set(services) == set(SERVICES) - {"up"}
    # Embedded mode serves /metrics on its HTTP port (`up --port N` in compose).
    embedded = _targets(config, "remsguard-embedded")
    for host, (target_port, label) in embedded.items():
        assert label == "up"
        command = [str(c) for c in compose["services"][host]["command"]]
        assert command[0] == "up" and command[command.index("--port") + 1] == str(target_port)
    # Long-running compose services that run the remsguard image must all be scraped (one-shot
    # jobs such as `topics create`, restarted only on failure, have nothing to scrape).
    remsguard = {
        name
        for name, spec in compose["services"].items()
        if (spec.get("image") == "remsguard:local" or "build" in spec)
        and spec.get("restart") != "on-failure"
    }
    scraped = set(services) | set(embedded)
    assert remsguard <= scraped, f"not scraped: {remsguard - scraped}"
