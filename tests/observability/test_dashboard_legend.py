"""The Grafana dashboards speak the same visual language as the console's chart, the form and
the report (`remsguard.auditing.legend`): severities in the legend's colours, every rule in its
severity's colour and, where several rules share a colour, told apart by a dash pattern.
A protocol rule added later needs `python -m remsguard.auditing.legend dashboards/*.json`."""

from __future__ import annotations

from typing import Any

from remsguard.auditing.legend import OK, RULE_PANELS, SEVERITIES, SEVERITY_PANELS
from remsguard.bootstrap import load_protocols

from .dashboards import DASHBOARDS, load, panels


def _overrides(panel: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        o["matcher"]["options"]: {p["id"]: p["value"] for p in o["properties"]}
        for o in panel["fieldConfig"]["overrides"]
    }


def _all_panels() -> dict[str, dict[str, Any]]:
    return {p["title"]: p for path in DASHBOARDS for p in panels(load(path))}


def test_severities_and_rules_use_the_legend_colours() -> None:
    found = _all_panels()
    for title in SEVERITY_PANELS:
        colours = {k: v["color"]["fixedColor"] for k, v in _overrides(found[title]).items()}
        assert colours == {s.name: s.colour for s in SEVERITIES.values()}, title
    rules = load_protocols()["spravato-rems"].rules
    for title in RULE_PANELS:
        overrides = _overrides(found[title])
        for name, settings in rules.items():
            assert overrides[name]["color"]["fixedColor"] == SEVERITIES[settings.severity].colour
        styles = [
            (o["color"]["fixedColor"], str(o.get("custom.lineStyle"))) for o in overrides.values()
        ]
        assert len(set(styles)) == len(styles), f"{title}: two rules look alike"


def test_stat_thresholds_use_the_legend_colours() -> None:
    found = _all_panels()

    def steps(title: str) -> list[str]:
        defaults = found[title]["fieldConfig"]["defaults"]
        return [s["color"] for s in defaults["thresholds"]["steps"]]

    assert steps("Critical alerts open now") == [OK, SEVERITIES["critical"].colour]
    assert steps("Forms overdue") == [OK, SEVERITIES["warning"].colour]
    assert found["Sessions fully compliant"]["fieldConfig"]["defaults"]["color"]["fixedColor"] == OK
