"""Shared by the dashboard tests: load dashboards, list their queries, substitute Grafana variables.

The lint rules follow Grafana's dashboard-linter (github.com/grafana/dashboard-linter), whose Go
module cannot be fetched here, re-implemented against its rule list: template-datasource-rule,
template-on-time-change-reload-rule, template-label-promql-rule, panel-datasource-rule,
panel-title-description-rule, panel-units-rule, panel-no-targets-rule, target-promql-rule
(parsed by promtool), target-rate-interval-rule, target-counter-agg-rule, uneditable-dashboard;
plus remsguard's own: a `clinic` variable used by every query of a clinic-labelled metric,
no hard-coded data source uid, unique panel ids, catalogue metric names only.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from remsguard.adapters.metrics import new_registry
from remsguard.adapters.telemetry import Telemetry

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((REPO / "dashboards").glob("*.json"))
DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}

SELECTOR = re.compile(r"\b(remsguard_[a-zA-Z0-9_]+)\s*(\{[^}]*\})?\s*(\[[^\]]*\])?")
COUNTER_SUFFIXES = ("_total", "_bucket", "_count", "_sum")
# Labels Prometheus attaches to every scraped series (the scrape config adds `service`).
TARGET_LABELS = {"job", "instance", "service"}

# A subset of Grafana's unit ids (grafana/packages/grafana-data valueFormats) that fits here.
GRAFANA_UNITS = {
    "short", "none", "percent", "percentunit", "s", "ms", "µs", "ns", "m", "h", "d",
    "ops", "reqps", "rps", "wps", "rpm", "bool", "bool_yes_no", "bool_on_off", "bytes",
    "decbytes", "dtdurations", "dtdurationms", "dateTimeAsIso", "locale", "sishort",
}  # fmt: skip


@dataclass(frozen=True)
class Query:
    dashboard: str
    panel_id: int
    panel_title: str
    panel_type: str
    ref_id: str
    expr: str


def load(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    assert isinstance(data, dict)
    return data


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including those nested in rows."""
    found: list[dict[str, Any]] = []
    for panel in dashboard.get("panels", []):
        found.append(panel)
        found.extend(panel.get("panels", []))
    return [p for p in found if p.get("type") != "row"]


def queries(paths: list[Path] | None = None) -> list[Query]:
    result = []
    for path in paths or DASHBOARDS:
        for panel in panels(load(path)):
            for target in panel.get("targets", []):
                result.append(
                    Query(
                        path.name,
                        panel["id"],
                        panel["title"],
                        panel["type"],
                        target["refId"],
                        target["expr"],
                    )
                )
    return result


def catalogue_labels() -> dict[str, set[str]]:
    """Sample name -> label names, for every metric the Telemetry catalogue exports."""
    telemetry = Telemetry(new_registry())
    labels: dict[str, set[str]] = {}
    for metric in vars(telemetry).values():
        name = getattr(metric, "_name", None)
        kind = getattr(metric, "_type", None)
        if name is None:
            continue
        names = set(getattr(metric, "_labelnames", ()))
        if kind == "counter":
            labels[name + "_total"] = names
        elif kind == "histogram":
            for suffix in ("_bucket", "_count", "_sum"):
                labels[name + suffix] = names | ({"le"} if suffix == "_bucket" else set())
        else:
            labels[name] = names
    return labels


def substitute(
    expr: str, *, rate_interval: str = "1m", range_: str = "5m", clinic: str = ".*"
) -> str:
    """Grafana's variables as Grafana would expand them (clinic "All" is `.*`)."""
    return (
        expr.replace("$__rate_interval", rate_interval)
        .replace("$__range", range_)
        .replace("$__interval", "15s")
        .replace("${clinic}", clinic)
        .replace("$clinic", clinic)
    )


def lint(dashboard: dict[str, Any], name: str) -> list[str]:
    """Every rule this dashboard breaks, as readable strings (empty when clean)."""
    problems: list[str] = []
    known = catalogue_labels()

    def bad(message: str) -> None:
        problems.append(f"{name}: {message}")

    for key in ("uid", "title", "description"):
        if not dashboard.get(key):
            bad(f"dashboard has no {key}")
    if dashboard.get("editable") is not False:
        bad("uneditable-dashboard: `editable` must be false (provisioned from git)")

    variables = {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        bad("template-datasource-rule: needs a `datasource` variable of type datasource/prometheus")
    elif ds.get("label") not in ("Data source", "Data Source"):
        bad("template-datasource-rule: the datasource variable's label must be `Data source`")
    clinic = variables.get("clinic")
    if not clinic or clinic.get("type") != "query":
        bad("needs a `clinic` query variable")
    for var in variables.values():
        if var.get("type") != "query":
            continue
        if var.get("datasource") != DATASOURCE_REF:
            bad(f"variable {var['name']}: data source must be ${{datasource}}")
        if var.get("refresh") != 2:
            bad(f"template-on-time-change-reload-rule: variable {var['name']} refresh must be 2")
        query = var.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query)
        match = re.fullmatch(r"label_values\((remsguard_[a-z0-9_]+)\s*,\s*([a-z_]+)\)", text)
        if not match or match.group(1) not in known or match.group(2) not in known[match.group(1)]:
            bad(f"template-label-promql-rule: variable {var['name']} query {text!r}")
        if var.get("includeAll") and var.get("allValue") != ".*":
            bad(f"variable {var['name']}: allValue must be `.*` (regex matchers use it)")

    all_panels = panels(dashboard)
    ids = [p.get("id") for p in all_panels]
    if len(ids) != len(set(ids)) or None in ids:
        bad(f"panel ids must be present and unique: {ids}")
    cells: set[tuple[int, int]] = set()
    clinic_used = False
    for panel in all_panels:
        where = f"panel {panel.get('id')} {panel.get('title')!r}"
        if not panel.get("title") or not panel.get("description"):
            bad(f"panel-title-description-rule: {where}")
        if panel.get("datasource") != DATASOURCE_REF:
            bad(f"panel-datasource-rule: {where} data source {panel.get('datasource')}")
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
        if unit not in GRAFANA_UNITS:
            bad(f"panel-units-rule: {where} unit {unit!r}")
        grid = panel.get("gridPos", {})
        if grid.get("x", 0) + grid.get("w", 0) > 24 or not grid.get("w") or not grid.get("h"):
            bad(f"{where}: gridPos {grid}")
        for x in range(grid.get("x", 0), grid.get("x", 0) + grid.get("w", 0)):
            for y in range(grid.get("y", 0), grid.get("y", 0) + grid.get("h", 0)):
                if (x, y) in cells:
                    bad(f"{where}: overlaps another panel at {(x, y)}")
                cells.add((x, y))
        targets = panel.get("targets", [])
        if not targets:
            bad(f"panel-no-targets-rule: {where}")
        refs = [t.get("refId") for t in targets]
        if len(refs) != len(set(refs)):
            bad(f"{where}: duplicate refIds {refs}")
        for target in targets:
            if target.get("datasource", DATASOURCE_REF) != DATASOURCE_REF:
                bad(f"panel-datasource-rule: {where} target {target.get('refId')}")
            expr = target.get("expr", "")
            for problem in lint_expr(expr, known, panel.get("type", "")):
                bad(f"{where} {target.get('refId')}: {problem}")
            clinic_used = clinic_used or "$clinic" in expr
    if not clinic_used:
        bad("the clinic variable is used by no query")
    if "uid" in json.dumps(dashboard).replace('"uid": "${datasource}"', "").replace(
        f'"uid": "{dashboard.get("uid")}"', ""
    ):
        bad("hard-coded data source uid")
    return problems


def lint_expr(expr: str, known: dict[str, set[str]], panel_type: str) -> list[str]:
    problems = []
    if not expr.strip():
        return ["empty query"]
    if expr.count("(") != expr.count(")"):
        problems.append("unbalanced parentheses")
    selectors = SELECTOR.findall(expr)
    if not selectors:
        problems.append("uses no remsguard metric")
    for metric, matchers, range_ in selectors:
        if metric not in known:
            problems.append(f"{metric} is not in the Telemetry catalogue")
            continue
        if "clinic" in known[metric] and 'clinic=~"$clinic"' not in matchers:
            problems.append(f'{metric} has a clinic label: filter it with clinic=~"$clinic"')
        for label in re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", matchers):
            if label not in known[metric] | TARGET_LABELS:
                problems.append(f"{metric} has no label {label}")
        if metric.endswith(COUNTER_SUFFIXES):
            call = re.search(rf"(rate|irate|increase)\(\s*{metric}\b", expr)
            if not call or not range_:
                problems.append(f"target-counter-agg-rule: {metric} must be inside rate/increase")
        if range_:
            allowed = {"[$__rate_interval]"} | ({"[$__range]"} if panel_type == "stat" else set())
            if range_.replace(" ", "") not in allowed:
                problems.append(f"target-rate-interval-rule: {metric}{range_}")
    for by in re.findall(r"\bby\s*\(([^)]*)\)", expr):
        for label in (x.strip() for x in by.split(",")):
            if label and not any(
                label in known[m] | TARGET_LABELS for m, _, _ in selectors if m in known
            ):
                problems.append(f"aggregates by {label}, which no metric of the query has")
    return problems
