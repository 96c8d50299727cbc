"""What the staff console's session chart draws, from the session's vouched events, its alerts
and its protocol: the readings per vital sign, the protocol's thresholds as bands, the doses,
the 40-minute check window, the end of the monitoring window, the assessments, the alerts
and the discharge. Pure: the route reads the compliance log and hands everything in.

Every threshold comes from the protocol (tightened by the session's concomitant medications,
as the engine and the form judge it); a rule the protocol turns off draws no band.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from remsguard.auditing.legend import legend_json
from remsguard.domain.events import (
    AssessmentRecorded,
    DoseAdministered,
    Event,
    SessionDischarged,
    SessionOpened,
    VitalsRecorded,
)
from remsguard.domain.protocol import MonitoringProtocol, session_protocol

__all__ = ["ChartAlert", "Panel", "session_chart"]

VITALS: Final = ("systolic", "diastolic", "spo2", "heart_rate", "respiratory_rate")
_BP_SERIES: Final = (("systolic", "sys"), ("diastolic", "dia"))  # a BP rule's series, short
# The panel an alert is drawn on (rules about time or paperwork go on the first, BP, panel).
PANEL_OF_RULE: Final = {
    "SPO2_LOW": "spo2",
    "SPO2_CRITICAL": "spo2",
    "RESPIRATORY_DEPRESSION": "respiratory_rate",
    "DEEP_SEDATION": "moaas",
    "DISCHARGE_SEDATED": "moaas",
}


@dataclass(frozen=True, slots=True)
class ChartAlert:
    alert_id: str
    rule: str
    severity: str
    at: datetime
    status: str
    message: str


@dataclass(frozen=True, slots=True)
class Band:
    """A range of one series that a rule judges: [low, high) in the series' unit, over
    [start, end) of the time axis (None: the whole session)."""

    rule: str
    severity: str
    series: str
    low: float | None
    high: float | None
    label: str
    start: datetime | None = None
    end: datetime | None = None

    @property
    def threshold(self) -> float:
        """The protocol's value: the band's lower edge ("at least", "above"), else its upper
        edge ("below")."""
        edge = self.low if self.low is not None and self.high is None else self.high
        assert edge is not None
        return edge

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "series": self.series,
            "low": self.low,
            "high": self.high,
            "threshold": self.threshold,
            "label": self.label,
            "from": self.start,
            "until": self.end,
        }


@dataclass(frozen=True, slots=True)
class Panel:
    key: str
    title: str
    unit: str
    series: tuple[str, ...]
    range: tuple[float, float]  # the y range always shown (readings widen it)
    bands: tuple[Band, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "unit": self.unit,
            "series": list(self.series),
            "range": list(self.range),
            "bands": [b.to_json() for b in self.bands],
        }


def _param(protocol: MonitoringProtocol, rule: str, param: str) -> float | None:
    settings = protocol.rules.get(rule)
    if settings is None or not settings.enabled:
        return None
    return settings.params.get(param)


def _severity(protocol: MonitoringProtocol, rule: str) -> str:
    return protocol.rules[rule].severity.value


def _bp_limits(protocol: MonitoringProtocol, rule: str, param: str) -> list[tuple[str, str, float]]:
    """(series, short name, value) of a BP rule's `systolic_<param>` and `diastolic_<param>`;
    none when the rule is off."""
    limits = ((s, n, _param(protocol, rule, f"{s}_{param}")) for s, n in _BP_SERIES)
    return [(series, name, value) for series, name, value in limits if value is not None]


def _bp_bands(
    protocol: MonitoringProtocol, first_dose: datetime | None, baseline: VitalsRecorded | None
) -> list[Band]:
    bands: list[Band] = []
    for series, name, limit in _bp_limits(protocol, "BP_CRISIS", "at_least"):
        sev = _severity(protocol, "BP_CRISIS")
        bands.append(Band("BP_CRISIS", sev, series, limit, None, f"{name} ≥ {limit:g}"))
    for series, name, limit in _bp_limits(protocol, "PRE_DOSE_BP_ELEVATED", "above"):
        sev = _severity(protocol, "PRE_DOSE_BP_ELEVATED")
        label = f"{name} > {limit:g} (before the dose)"
        bands.append(Band("PRE_DOSE_BP_ELEVATED", sev, series, limit, None, label, end=first_dose))
    if baseline is not None and first_dose is not None:
        for series, name, rise in _bp_limits(protocol, "BP_RISE", "rise"):
            base = baseline.systolic if series == "systolic" else baseline.diastolic
            if base is not None:
                sev = _severity(protocol, "BP_RISE")
                label = f"{name} ≥ {base + rise:g} (+{rise:g} over {base:g})"
                bands.append(
                    Band("BP_RISE", sev, series, base + rise, None, label, start=first_dose)
                )
    return bands


def _below(protocol: MonitoringProtocol, rule: str, param: str, series: str, name: str) -> Band:
    limit = _param(protocol, rule, param)
    assert limit is not None
    return Band(rule, _severity(protocol, rule), series, None, limit, f"{name} < {limit:g}")


def _panels(
    protocol: MonitoringProtocol | None,
    first_dose: datetime | None,
    baseline: VitalsRecorded | None,
) -> list[Panel]:
    bp: list[Band] = []
    spo2: list[Band] = []
    rr: list[Band] = []
    moaas: list[Band] = []
    if protocol is not None:
        bp = _bp_bands(protocol, first_dose, baseline)
        low = _param(protocol, "SPO2_LOW", "below")
        critical = _param(protocol, "SPO2_CRITICAL", "below")
        if critical is not None:
            spo2.append(_below(protocol, "SPO2_CRITICAL", "below", "spo2", "SpO₂"))
        if low is not None:
            band = _below(protocol, "SPO2_LOW", "below", "spo2", "SpO₂")
            spo2.append(
                Band(band.rule, band.severity, "spo2", critical, low, band.label)
                if critical is not None and critical < low
                else band
            )
        if _param(protocol, "RESPIRATORY_DEPRESSION", "rate_below") is not None:
            rr.append(
                _below(protocol, "RESPIRATORY_DEPRESSION", "rate_below", "respiratory_rate", "RR")
            )
        deep = _param(protocol, "DEEP_SEDATION", "moaas_at_most")
        if deep is not None:
            sev = _severity(protocol, "DEEP_SEDATION")
            moaas.append(Band("DEEP_SEDATION", sev, "moaas", None, deep + 0.5, f"≤ {deep:g}"))
    return [
        Panel("bp", "Blood pressure", "mmHg", ("systolic", "diastolic"), (50, 200), tuple(bp)),
        Panel("spo2", "SpO₂", "%", ("spo2",), (85, 100), tuple(spo2)),
        Panel("heart_rate", "Heart rate", "bpm", ("heart_rate",), (50, 110), ()),
        Panel(
            "respiratory_rate",
            "Respiratory rate",
            "/min",
            ("respiratory_rate",),
            (6, 24),
            tuple(rr),
        ),
        Panel("moaas", "Sedation (MOAA/S)", "0-5", ("moaas",), (0, 5), tuple(moaas)),
    ]


def _minutes(value: float) -> timedelta:
    return timedelta(minutes=value)


def session_chart(
    session_id: str,
    clinic_id: str,
    events: Iterable[Event],
    alerts: Iterable[ChartAlert],
    protocols: Mapping[str, MonitoringProtocol],
    *,
    default_protocol: str,
    patient_ref: str | None = None,
) -> dict[str, Any]:
    """The chart's payload (JSON-ready but for datetimes)."""
    ordered = sorted(events, key=lambda e: (e.occurred_at, e.event_id))
    name, protocol = session_protocol(ordered, protocols, default_protocol)
    opened = next((e for e in ordered if isinstance(e, SessionOpened)), None)
    doses = [e for e in ordered if isinstance(e, DoseAdministered)]
    first = doses[0].occurred_at if doses else None
    readings: dict[str, list[dict[str, Any]]] = {key: [] for key in (*VITALS, "moaas")}
    baseline: VitalsRecorded | None = None
    for e in ordered:
        if isinstance(e, VitalsRecorded):
            if e.is_bp_reading and (first is None or e.occurred_at <= first):
                baseline = e
            for key in VITALS:
                value = getattr(e, key)
                if value is not None:
                    readings[key].append({"at": e.occurred_at, "value": value, "id": e.event_id})
        elif isinstance(e, AssessmentRecorded) and e.sedation_moaas is not None:
            readings["moaas"].append(
                {"at": e.occurred_at, "value": e.sedation_moaas, "id": e.event_id}
            )
    if first is None:
        baseline = None
    marks: list[dict[str, Any]] = [
        {
            "kind": "dose",
            "at": d.occurred_at,
            "label": f"Dose {d.dose_mg:g} mg {d.drug}",
            "id": d.event_id,
        }
        for d in doses
    ]
    if protocol is not None and first is not None:
        check = protocol.rules.get("POST_DOSE_BP_MISSED")
        if check is not None and check.enabled:
            marks.append(
                {
                    "kind": "check_window",
                    "at": first + check.minutes("from_minutes"),
                    "until": first + check.minutes("until_minutes"),
                    "label": (
                        f"40-min BP check ({check['from_minutes']:g}-"
                        f"{check['until_minutes']:g} min)"
                    ),
                    "rule": "POST_DOSE_BP_MISSED",
                }
            )
        assert doses
        end = doses[-1].occurred_at + protocol.observation_window
        window = protocol.observation_window / _minutes(1)
        marks.append(
            {"kind": "window_end", "at": end, "label": f"Window ends ({window:g} min after dose)"}
        )
    for e in ordered:
        if isinstance(e, SessionDischarged):
            stable = "stable" if e.clinically_stable else "NOT stable"
            marks.append(
                {"kind": "discharge", "at": e.occurred_at, "label": f"Discharge ({stable})"}
            )
    assessments = [
        {
            "at": e.occurred_at,
            "id": e.event_id,
            "moaas": e.sedation_moaas,
            "dissociation": e.dissociation,
            "respiratory_depression": e.respiratory_depression,
        }
        for e in ordered
        if isinstance(e, AssessmentRecorded)
    ]
    return {
        "session_id": session_id,
        "clinic_id": clinic_id,
        "patient_ref": opened.patient_ref if opened is not None else patient_ref,
        "protocol": name,
        "protocol_known": protocol is not None,
        "panels": [p.to_json() for p in _panels(protocol, first, baseline)],
        "readings": readings,
        "marks": sorted(marks, key=lambda m: m["at"]),
        "assessments": assessments,
        "alerts": [
            {
                "alert_id": a.alert_id,
                "rule": a.rule,
                "severity": a.severity,
                "at": a.at,
                "status": a.status,
                "message": a.message,
                "panel": PANEL_OF_RULE.get(a.rule, "bp"),
            }
            for a in sorted(alerts, key=lambda a: (a.at, a.alert_id))
        ],
        "legend": legend_json(),
    }
