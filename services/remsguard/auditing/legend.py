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
