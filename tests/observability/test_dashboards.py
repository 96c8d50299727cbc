"""dashboards/: Grafana JSON that passes the dashboard-linter rules; the provisioning."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import pytest
import yaml

from .dashboards import DASHBOARDS, REPO, lint, load, queries, substitute

EXPECTED = {"compliance-overview.json", "pipeline-health.json"}


def test_the_two_dashboards_exist_with_distinct_uids() -> None:
    assert {p.name for p in DASHBOARDS} >= EXPECTED
    uids = [load(p)["uid"] for p in DASHBOARDS]
    assert len(uids) == len(set(uids))


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_passes_the_linter(path: Path) -> None:
    assert lint(load(path), path.name) == []


def test_the_linter_catches_what_it_should() -> None:
    good = load(REPO / "dashboards" / "compliance-overview.json")
    bad = copy.deepcopy(good)
    bad["editable"] = True
    bad["templating"]["list"] = [v for v in bad["templating"]["list"] if v["name"] != "clinic"]
    first, second = bad["panels"][0], bad["panels"][1]
    second["id"] = first["id"]
    first["datasource"] = {"type": "prometheus", "uid": "P1809F7CD0C75ACF3"}
    first["targets"][0]["expr"] = "sum(remsguard_sessions_under_monitoring)"
    second["targets"][0]["expr"] = 'sum(remsguard_alerts_raised_total{clinic=~"$clinic"})'
    bad["panels"][2]["targets"][0]["expr"] = "sum(rate(remsguard_no_such_thing_total[5m]))"
    bad["panels"][3]["description"] = ""
    bad["panels"][4]["fieldConfig"]["defaults"]["unit"] = "parsecs"
    text = "\n".join(lint(bad, "bad.json"))
    for expected in (
        "uneditable-dashboard",
        "needs a `clinic` query variable",
        "panel ids must be present and unique",
        "panel-datasource-rule",
        "hard-coded data source uid",
        'filter it with clinic=~"$clinic"',
        "target-counter-agg-rule: remsguard_alerts_raised_total",
        "remsguard_no_such_thing_total is not in the Telemetry catalogue",
        "panel-title-description-rule",
        "panel-units-rule",
    ):
        assert expected in text, f"{expected!r} not reported:\n{text}"


def test_every_query_is_valid_promql_for_promtool(promtool: str, tmp_path: Path) -> None:
    """target-promql-rule: each query, with Grafana's variables expanded, parses."""
    rules = [
        {
            "record": f"check:{q.dashboard[:-5].replace('-', '_')}:{q.panel_id}_{q.ref_id}",
            "expr": substitute(q.expr),
        }
        for q in queries()
    ]
    assert len(rules) >= 20
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    done = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_compliance_overview_covers_the_issue() -> None:
    exprs = " ".join(q.expr for q in queries([REPO / "dashboards" / "compliance-overview.json"]))
    for metric in (
        "remsguard_sessions_under_monitoring",  # sessions under monitoring per clinic
        "remsguard_alerts_raised_total",  # violations by rule over time
        'outcome="compliant"',  # share of sessions fully compliant
        'remsguard_alerts_open{clinic=~"$clinic", severity="critical"}',  # critical open now
        "histogram_quantile(0.5, sum by (le) (rate(remsguard_alert_acknowledgement_seconds",
        "histogram_quantile(0.9, sum by (le) (rate(remsguard_alert_acknowledgement_seconds",
        "remsguard_forms_overdue",
    ):
        assert metric in exprs, metric


def test_pipeline_health_covers_the_issue() -> None:
    exprs = " ".join(q.expr for q in queries([REPO / "dashboards" / "pipeline-health.json"]))
    for metric in (
        "sum by (topic) (rate(remsguard_events_consumed_total",  # events/s by topic
        "remsguard_consumer_lag_messages",
        "histogram_quantile(0.5, sum by (le) (rate(remsguard_ingest_to_decision_seconds_bucket",
        "histogram_quantile(0.99, sum by (le) (rate(remsguard_ingest_to_decision_seconds_bucket",
        "rate(remsguard_dead_letters_total",
        "rate(remsguard_audit_sink_rows_total",
        'remsguard_consumer_lag_messages{topic="rems.audit.v1"}',
        "remsguard_worker_up",
    ):
        assert metric in exprs, metric


def test_provisioning_points_grafana_at_these_files() -> None:
    provider = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/dashboards/remsguard.yml").read_text()
    )["providers"][0]
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./dashboards:{provider['options']['path']}:ro" in mounts
    datasource = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]
    assert datasource["type"] == "prometheus"  # what the `datasource` variable lists
