"""One visual language for every picture remsguard draws: the staff console's session chart,
the Patient Monitoring Form PDF, the compliance report and the Grafana dashboards.

Colours are never the only signal: every severity has a glyph and a word, every series a
dash pattern and a label, and rule names are the engine's own (``BP_CRISIS``), never
paraphrased. The console gets this legend inside each chart payload (so the browser never
keeps its own copy), matplotlib and reportlab import it, and a test holds the dashboards to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "INK",
    "MARKS",
    "MUTED",
    "OK",
    "SERIES",
    "SEVERITIES",
    "Mark",
    "Series",
    "Severity",
    "legend_json",
    "severity",
]

INK: Final = "#1c1f24"
MUTED: Final = "#5f6670"
OK: Final = "#1e7a3c"  # compliant, discharged, ready
BRAND: Final = "#12355b"  # the console's header; doses


@dataclass(frozen=True, slots=True)
class Severity:
    name: str
    colour: str
    glyph: str  # drawn next to the name wherever the colour is
    band: str  # translucent fill for a threshold band of this severity


@dataclass(frozen=True, slots=True)
class Series:
    key: str
    label: str
    unit: str
    colour: str
    dash: tuple[int, ...]  # canvas/matplotlib dash pattern in px; () solid
    marker: str  # point shape: circle, square, triangle, diamond


SEVERITIES: Final = {
    "critical": Severity("critical", "#b3261e", "▲", "rgba(179, 38, 30, 0.14)"),
    "warning": Severity("warning", "#b26a00", "◆", "rgba(178, 106, 0, 0.13)"),
    "info": Severity("info", "#2f5f8f", "●", "rgba(47, 95, 143, 0.10)"),
}

SERIES: Final = {
    s.key: s
    for s in (
        Series("systolic", "Systolic", "mmHg", "#12355b", (), "triangle"),
        Series("diastolic", "Diastolic", "mmHg", "#4a7fb5", (6, 4), "circle"),
        Series("spo2", "SpO₂", "%", "#6a3d9a", (), "circle"),
        Series("heart_rate", "Heart rate", "bpm", "#00796b", (), "square"),
        Series("respiratory_rate", "Resp. rate", "/min", "#8d5524", (2, 3), "diamond"),
        Series("moaas", "MOAA/S", "0-5", "#37474f", (), "square"),
    )
}


@dataclass(frozen=True, slots=True)
class Mark:
    """A moment or span on the time axis."""

    key: str
    label: str
    colour: str
    dash: tuple[int, ...]


MARKS: Final = {
    m.key: m
    for m in (
        Mark("dose", "Dose", BRAND, ()),
        Mark("check_window", "40-min BP check", "#2f5f8f", ()),
        Mark("window_end", "Monitoring window ends", MUTED, (8, 4)),
        Mark("discharge", "Discharge", OK, (2, 2)),
    )
}


def severity(name: str | None) -> Severity:
    return SEVERITIES.get(name or "", SEVERITIES["info"])


def legend_json() -> dict[str, Any]:
    """The legend as the console's chart reads it."""
    return {
        "severities": {
            s.name: {"colour": s.colour, "glyph": s.glyph, "band": s.band}
            for s in SEVERITIES.values()
        },
        "series": {
            s.key: {
                "label": s.label,
                "unit": s.unit,
                "colour": s.colour,
                "dash": list(s.dash),
                "marker": s.marker,
            }
            for s in SERIES.values()
        },
        "marks": {
            m.key: {"label": m.label, "colour": m.colour, "dash": list(m.dash)}
            for m in MARKS.values()
        },
        "ok": OK,
        "ink": INK,
        "muted": MUTED,
    }


# -- Grafana ------------------------------------------------------------------------------------
# Dash patterns that tell apart lines of one colour (rules of one severity): solid first.
DASHES: Final = (
    (), (10, 10), (4, 4), (12, 4, 2, 4), (2, 6), (16, 6), (6, 3, 2, 3, 2, 3), (20, 4),
    (8, 2), (2, 2), (14, 4, 4, 4), (3, 9), (10, 3, 3, 3, 3, 3), (24, 8), (5, 10), (1, 4),
)  # fmt: skip
SEVERITY_PANELS: Final = ("Open alerts by severity", "Alerts raised by severity")
RULE_PANELS: Final = ("Violations by rule", "Completed sessions with violations, by rule")


def _fixed(colour: str) -> dict[str, Any]:
    return {"id": "color", "value": {"mode": "fixed", "fixedColor": colour}}


def grafana_rule_overrides(rule_severities: dict[str, str]) -> list[dict[str, Any]]:
    """Per rule: its severity's colour and, within a severity, its own dash pattern."""
    out: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for rule, name in sorted(rule_severities.items()):
        index = seen[name] = seen.get(name, -1) + 1
        props = [_fixed(severity(name).colour)]
        dash = DASHES[index % len(DASHES)]
        if dash:
            props.append({"id": "custom.lineStyle", "value": {"fill": "dash", "dash": list(dash)}})
        out.append({"matcher": {"id": "byName", "options": rule}, "properties": props})
    return out


def apply_to_dashboard(dashboard: dict[str, Any], rule_severities: dict[str, str]) -> None:
    """Set the legend's colours on a dashboard's severity, rule and stat panels."""
    for panel in dashboard.get("panels", []):
        config = panel.setdefault("fieldConfig", {"defaults": {}, "overrides": []})
        steps = config["defaults"].get("thresholds", {}).get("steps")
        if panel.get("title") in SEVERITY_PANELS:
            config["overrides"] = [
                {"matcher": {"id": "byName", "options": s.name}, "properties": [_fixed(s.colour)]}
                for s in SEVERITIES.values()
            ]
        elif panel.get("title") in RULE_PANELS:
            config["overrides"] = grafana_rule_overrides(rule_severities)
        elif panel.get("title") == "Sessions fully compliant":
            config["defaults"]["color"] = {"mode": "fixed", "fixedColor": OK}
        elif steps and len(steps) == 2:  # ok -> trouble stats
            alarm = "critical" if "ritical" in panel.get("title", "") else "warning"
            steps[0]["color"], steps[1]["color"] = OK, SEVERITIES[alarm].colour


def main() -> None:
    """`python -m remsguard.auditing.legend dashboards/*.json`: rewrite them in the legend."""
    import json
    import sys
    from pathlib import Path

    from remsguard.auditing.deadlines import RULE
    from remsguard.protocols import load_protocols

    protocol = load_protocols()["spravato-rems"]
    rules = {name: r.severity.value for name, r in protocol.rules.items()}
    rules[RULE] = "warning"  # the form-overdue alert (auditing.deadlines)
    for name in sys.argv[1:]:
        path = Path(name)
        dashboard = json.loads(path.read_text())
        apply_to_dashboard(dashboard, rules)
        path.write_text(json.dumps(dashboard, indent=2) + "\n")


if __name__ == "__main__":
    main()
