"""The Patient Monitoring Form of one session, filled from the session's accepted events.

Every field is ``{"value": ..., "missing": bool, "reason": str | None, "evidence": [ids]}``:
a field the events cannot fill is ``missing`` with the reason, never guessed. Judgements
("in the acceptable range") use the session's protocol, tightened by its concomitant
medications, exactly as the engine does; the thresholds used are named in ``reason``-free
``basis`` text so an auditor can check them.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from remsguard.domain.events import (
    AssessmentRecorded,
    DoseAdministered,
    Event,
    SessionDischarged,
    SessionOpened,
    VitalsRecorded,
)
from remsguard.domain.protocol import MonitoringProtocol, session_protocol
from remsguard.domain.registry import RemsRegistry, dose_date

__all__ = ["FIELDS", "FormField", "MonitoringFormDoc", "build_form", "form_csv"]

# Field names in form order (the REMS Patient Monitoring Form's questions).
FIELDS = (
    "treatment_date",
    "drug",
    "dose_mg",
    "lot_number",
    "route",
    "concomitant_medications",
    "total_monitoring_minutes",
    "bp_before_administration",
    "bp_at_40_minutes",
    "bp_before_completion",
    "vitals_in_range_before_administration",
    "vitals_in_range_before_completion",
    "sedation_occurred",
    "dissociation_occurred",
    "respiratory_depression_occurred",
)


@dataclass(frozen=True, slots=True)
class FormField:
    value: Any = None
    missing: bool = False
    reason: str | None = None
    evidence: tuple[str, ...] = ()
    basis: str | None = None  # the protocol thresholds behind a judgement

    def to_json(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "missing": self.missing,
            "reason": self.reason,
            "evidence": list(self.evidence),
            "basis": self.basis,
        }


def _missing(reason: str) -> FormField:
    return FormField(missing=True, reason=reason)


@dataclass(frozen=True, slots=True)
class MonitoringFormDoc:
    session_id: str
    clinic_id: str
    patient_ref: str | None
    protocol: str | None
    fields: dict[str, FormField]
    submission: dict[str, Any] = field(default_factory=dict)
    # Stored events of the session whose content the hash chain does not vouch for: left out.
    unvouched_events: tuple[str, ...] = ()
    # The REMS gate's inputs: the certification and enrollment on record for the first
    # dose's date (`rems_basis`); None when the form was built without the registry.
    rems: dict[str, Any] | None = None

    @property
    def missing(self) -> list[str]:
        return [name for name in FIELDS if self.fields[name].missing]

    def to_json(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "clinic_id": self.clinic_id,
            "patient_ref": self.patient_ref,
            "protocol": self.protocol,
            "complete": not self.missing,
            "missing_fields": self.missing,
            "fields": {name: self.fields[name].to_json() for name in FIELDS},
            "submission": self.submission,
            "unvouched_events": list(self.unvouched_events),
            "rems": self.rems,
        }


def _in_range(
    bp_ok: bool,
    bp: VitalsRecorded,
    spo2s: list[VitalsRecorded],
    low_spo2: float,
    bp_basis: str,
) -> FormField:
    """A "vitals in range" judgement: the BP reading judged `bp_ok`, and the latest of `spo2s`
    (when there is one) not below `low_spo2`; both readings are the evidence."""
    ok, evidence = bp_ok, [bp.event_id]
    if spo2s:
        latest = spo2s[-1]
        assert latest.spo2 is not None
        ok = ok and latest.spo2 >= low_spo2
        evidence.append(latest.event_id)
    basis = f"{bp_basis}; SpO2 at least {low_spo2:g}%"
    return FormField(ok, evidence=tuple(_distinct(evidence)), basis=basis)


def _bp(reading: VitalsRecorded) -> dict[str, Any]:
    return {
        "systolic": reading.systolic,
        "diastolic": reading.diastolic,
        "at": reading.occurred_at,
    }


def _distinct(values: Iterable[Any]) -> list[Any]:
    seen: list[Any] = []
    for v in values:
        if v not in seen:
            seen.append(v)
    return seen


def build_form(
    session_id: str,
    clinic_id: str,
    events: Iterable[Event],
    protocols: Mapping[str, MonitoringProtocol],
    *,
    default_protocol: str,
    patient_ref: str | None = None,
    alert_rules: Iterable[tuple[str, str]] = (),
    submission: Mapping[str, Any] | None = None,
    unvouched_events: Iterable[str] = (),
    registry: RemsRegistry | None = None,
) -> MonitoringFormDoc:
    """``events``: the session's accepted events whose content the hash chain vouches for;
    ``alert_rules``: (rule, alert_id) pairs; ``unvouched_events``: ids of stored events
    left out because it does not (named on the form, never used)."""
    ordered = sorted(events, key=lambda e: (e.occurred_at, e.event_id))
    opened = next((e for e in ordered if isinstance(e, SessionOpened)), None)
    doses = [e for e in ordered if isinstance(e, DoseAdministered)]
    discharge = next((e for e in ordered if isinstance(e, SessionDischarged)), None)
    bps = [e for e in ordered if isinstance(e, VitalsRecorded) and e.is_bp_reading]
    spo2s = [e for e in ordered if isinstance(e, VitalsRecorded) and e.spo2 is not None]
    assessments = [e for e in ordered if isinstance(e, AssessmentRecorded)]
    first = doses[0] if doses else None
    end = discharge.occurred_at if discharge is not None else None

    protocol_name, protocol = session_protocol(ordered, protocols, default_protocol)
    no_protocol = f"protocol {protocol_name!r} is not configured in this service"

    f: dict[str, FormField] = {}
    no_dose = "no dose.administered event"
    if first is None:
        for name in ("treatment_date", "drug", "dose_mg", "lot_number", "route"):
            f[name] = _missing(no_dose)
    else:
        ids = tuple(d.event_id for d in doses)
        f["treatment_date"] = FormField(first.occurred_at.date().isoformat(), evidence=ids[:1])
        drugs = _distinct(d.drug for d in doses)
        f["drug"] = FormField(drugs[0] if len(drugs) == 1 else drugs, evidence=ids)
        f["dose_mg"] = FormField(sum(d.dose_mg for d in doses), evidence=ids)
        routes = _distinct(d.route for d in doses)
        f["route"] = FormField(routes[0] if len(routes) == 1 else routes, evidence=ids)
        lots = _distinct(d.lot_number for d in doses if d.lot_number is not None)
        without = [d.event_id for d in doses if d.lot_number is None]
        if without:
            f["lot_number"] = FormField(
                lots or None,
                missing=True,
                reason=f"no lot number on dose event(s) {', '.join(without)}",
                evidence=ids,
            )
        else:
            f["lot_number"] = FormField(lots[0] if len(lots) == 1 else lots, evidence=ids)

    if opened is None:
        f["concomitant_medications"] = _missing("no session.opened event")
    else:
        f["concomitant_medications"] = FormField(
            sorted(m.value for m in opened.concomitant_medications), evidence=(opened.event_id,)
        )

    if first is None or discharge is None:
        f["total_monitoring_minutes"] = _missing(
            no_dose if first is None else "no session.discharged event (monitoring not ended)"
        )
    else:
        minutes = (discharge.occurred_at - first.occurred_at) / timedelta(minutes=1)
        f["total_monitoring_minutes"] = FormField(
            round(minutes, 1), evidence=(first.event_id, discharge.event_id)
        )

    # BP before administration: the latest reading at or before the first dose.
    baseline: VitalsRecorded | None = None
    if first is None:
        f["bp_before_administration"] = _missing(no_dose)
    else:
        before = [b for b in bps if b.occurred_at <= first.occurred_at]
        baseline = before[-1] if before else None
        f["bp_before_administration"] = (
            FormField(_bp(baseline), evidence=(baseline.event_id,))
            if baseline is not None
            else _missing("no blood pressure reading before the first dose")
        )

    # The 40-minute check: the reading in the protocol's window closest to 40 minutes.
    if first is None:
        f["bp_at_40_minutes"] = _missing(no_dose)
    elif protocol is None:
        f["bp_at_40_minutes"] = _missing(no_protocol)
    else:
        rule = protocol.rule("POST_DOSE_BP_MISSED")
        lo = first.occurred_at + rule.minutes("from_minutes")
        hi = first.occurred_at + rule.minutes("until_minutes")
        window = [b for b in bps if lo <= b.occurred_at <= hi]
        basis = f"{rule['from_minutes']:g}-{rule['until_minutes']:g} min after the first dose"
        if window:
            target = first.occurred_at + timedelta(minutes=40)
            best = min(window, key=lambda b: (abs(b.occurred_at - target), b.occurred_at))
            f["bp_at_40_minutes"] = FormField(_bp(best), evidence=(best.event_id,), basis=basis)
        else:
            f["bp_at_40_minutes"] = FormField(
                missing=True, reason=f"no blood pressure reading {basis}", basis=basis
            )

    # BP before completion: the latest reading after the first dose, at or before discharge.
    final: VitalsRecorded | None = None
    if first is None or end is None:
        f["bp_before_completion"] = _missing(
            no_dose if first is None else "no session.discharged event (monitoring not ended)"
        )
    else:
        after = [b for b in bps if first.occurred_at < b.occurred_at <= end]
        final = after[-1] if after else None
        f["bp_before_completion"] = (
            FormField(_bp(final), evidence=(final.event_id,))
            if final is not None
            else _missing("no blood pressure reading between the first dose and discharge")
        )

    # Vitals in range before administration: the baseline BP under PRE_DOSE_BP_ELEVATED's
    # limits and the latest pre-dose SpO2 (if any) not below SPO2_LOW.
    if baseline is None or first is None:
        f["vitals_in_range_before_administration"] = _missing(
            f["bp_before_administration"].reason or no_dose
        )
    elif protocol is None:
        f["vitals_in_range_before_administration"] = _missing(no_protocol)
    else:
        high = protocol.rule("PRE_DOSE_BP_ELEVATED")
        low_spo2 = protocol.rule("SPO2_LOW")["below"]
        assert baseline.systolic is not None and baseline.diastolic is not None
        ok = baseline.systolic <= high["systolic_above"] and (
            baseline.diastolic <= high["diastolic_above"]
        )
        f["vitals_in_range_before_administration"] = _in_range(
            ok,
            baseline,
            [s for s in spo2s if s.occurred_at <= first.occurred_at],
            low_spo2,
            f"BP at most {high['systolic_above']:g}/{high['diastolic_above']:g} mmHg",
        )

    # Vitals in range before completion: the final BP neither a crisis nor a rise over the
    # baseline (as DISCHARGE_BP_ELEVATED judges it), latest SpO2 not below SPO2_LOW.
    if final is None or first is None or end is None:
        f["vitals_in_range_before_completion"] = _missing(
            f["bp_before_completion"].reason or no_dose
        )
    elif protocol is None:
        f["vitals_in_range_before_completion"] = _missing(no_protocol)
    else:
        crisis, rise = protocol.rule("BP_CRISIS"), protocol.rule("BP_RISE")
        low_spo2 = protocol.rule("SPO2_LOW")["below"]
        assert final.systolic is not None and final.diastolic is not None
        elevated = (
            final.systolic >= crisis["systolic_at_least"]
            or final.diastolic >= crisis["diastolic_at_least"]
        )
        if baseline is not None and baseline.systolic is not None and rise.enabled:
            assert baseline.diastolic is not None
            elevated = elevated or (
                final.systolic >= baseline.systolic + rise["systolic_rise"]
                or final.diastolic >= baseline.diastolic + rise["diastolic_rise"]
            )
        f["vitals_in_range_before_completion"] = _in_range(
            not elevated,
            final,
            [s for s in spo2s if first.occurred_at < s.occurred_at <= end],
            low_spo2,
            f"BP below {crisis['systolic_at_least']:g}/{crisis['diastolic_at_least']:g} "
            f"mmHg and less than +{rise['systolic_rise']:g}/+{rise['diastolic_rise']:g} "
            "over the pre-dose reading",
        )

    alerts = list(alert_rules)
    post = [a for a in assessments if first is None or a.occurred_at >= first.occurred_at]
    scored = [a for a in post if a.sedation_moaas is not None]
    if not scored:
        f["sedation_occurred"] = _missing("no sedation (MOAA/S) assessment after the dose")
    else:
        sedated = [
            a.event_id for a in scored if a.sedation_moaas is not None and a.sedation_moaas < 5
        ]
        f["sedation_occurred"] = FormField(
            bool(sedated),
            evidence=tuple(sedated or [a.event_id for a in scored]),
            basis="MOAA/S below 5 at any assessment",
        )
    told = [a for a in post if a.dissociation is not None]
    if not told:
        f["dissociation_occurred"] = _missing("no assessment reports dissociation either way")
    else:
        yes = [a.event_id for a in told if a.dissociation]
        f["dissociation_occurred"] = FormField(
            bool(yes), evidence=tuple(yes or [a.event_id for a in told])
        )
    resp_alerts = [aid for rule, aid in alerts if rule == "RESPIRATORY_DEPRESSION"]
    told = [a for a in post if a.respiratory_depression is not None]
    yes = [a.event_id for a in told if a.respiratory_depression]
    if yes or resp_alerts:
        f["respiratory_depression_occurred"] = FormField(
            True,
            evidence=tuple(yes + resp_alerts),
            basis="an assessment or a RESPIRATORY_DEPRESSION alert",
        )
    elif not told:
        f["respiratory_depression_occurred"] = _missing(
            "no assessment reports respiratory depression either way"
        )
    else:
        f["respiratory_depression_occurred"] = FormField(
            False, evidence=tuple(a.event_id for a in told)
        )

    return MonitoringFormDoc(
        session_id=session_id,
        clinic_id=clinic_id,
        patient_ref=opened.patient_ref if opened is not None else patient_ref,
        protocol=protocol_name if (opened is not None or doses) else None,
        fields=f,
        submission=dict(submission or {}),
        unvouched_events=tuple(unvouched_events),
        rems=None
        if registry is None
        else rems_basis(
            registry,
            protocol is not None and protocol.rems_gate,
            clinic_id,
            opened.patient_ref if opened is not None else patient_ref,
            None if first is None else first.occurred_at,
        ),
    )


def rems_basis(
    registry: RemsRegistry,
    required: bool,
    clinic_id: str,
    patient_ref: str | None,
    dosed_at: datetime | None,
) -> dict[str, Any]:
    """What the REMS gate relied on for this session: the clinic's certification and the
    patient's enrollment as recorded, each with whether it covered the first dose's date
    (`"missing"` when none is on record)."""
    day = None if dosed_at is None else dose_date(dosed_at)
    cert = registry.certification_of(clinic_id)
    enrollment = None if patient_ref is None else registry.enrollment_of(clinic_id, patient_ref)
    return {
        "required": required,
        "dose_date": None if day is None else day.isoformat(),
        "certification": "missing"
        if cert is None
        else {
            "certification_id": cert.certification_id,
            "valid_from": cert.valid_from.isoformat(),
            "valid_to": None if cert.valid_to is None else cert.valid_to.isoformat(),
            "covers_dose_date": None if day is None else cert.covers(day),
        },
        "enrollment": "missing"
        if enrollment is None
        else {
            "patient_ref": enrollment.patient_ref,
            "enrolled_on": enrollment.enrolled_on.isoformat(),
            "covers_dose_date": None if day is None else enrollment.covers(day),
        },
    }


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dict) and "systolic" in value:
        return f"{value['systolic']:g}/{value['diastolic']:g} at {_cell(value['at'])}"
    if isinstance(value, list | tuple):
        return "; ".join(_cell(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def form_csv(doc: MonitoringFormDoc) -> str:
    """One row per field: field, value, missing, reason, evidence, basis."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["session_id", "field", "value", "missing", "reason", "evidence", "basis"])
    for name in FIELDS:
        item = doc.fields[name]
        writer.writerow(
            [
                doc.session_id,
                name,
                _cell(item.value),
                "yes" if item.missing else "no",
                item.reason or "",
                " ".join(item.evidence),
                item.basis or "",
            ]
        )
    if doc.rems is not None:
        for name in ("certification", "enrollment"):
            relied = doc.rems[name]
            value = (
                relied
                if isinstance(relied, str)
                else ", ".join(f"{k}={v}" for k, v in relied.items())
            )
            writer.writerow([doc.session_id, f"rems_{name}", value, "", "", "", ""])
    return out.getvalue()
