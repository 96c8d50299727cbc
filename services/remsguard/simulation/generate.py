"""Clinic days: clinics, chairs, sessions back to back; then delivery and the manifest.

Pure: no I/O, no wall clock. The same configuration (seed included) and the same protocol
files always give the same deliveries and the same manifest, byte for byte.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from random import Random
from typing import Any

import orjson

from remsguard.domain.events import Medication
from remsguard.domain.protocol import MonitoringProtocol
from remsguard.domain.registry import Certification, Enrollment, RemsRegistry
from remsguard.simulation.config import NOT_ENROLLED, VIOLATION_KINDS, SimulationConfig
from remsguard.simulation.sessions import SessionPlan, SessionSpec, plan_session, stamp
from remsguard.simulation.transport import Delivery, TransportSummary, deliver

ESKETAMINE_PROTOCOL = "spravato-rems"
KETAMINE_PROTOCOL = "ketamine-iv"
KETAMINE_ROUTES = (("iv", 0.6), ("im", 0.25), ("sublingual", 0.15))
MEDICATIONS = tuple(m.value for m in Medication)


@dataclass(frozen=True, slots=True)
class Simulation:
    config: SimulationConfig
    sessions: tuple[SessionPlan, ...]
    deliveries: tuple[Delivery, ...]  # arrival order
    transport: TransportSummary

    @property
    def until(self) -> datetime:
        """A clock time by which every deadline of every session has been decided."""
        latest = max(p.discharged_at + p.lateness for p in self.sessions)
        return latest + timedelta(minutes=1)

    def lines(self) -> list[bytes]:
        return [d.line + b"\n" for d in self.deliveries]

    def manifest(self) -> dict[str, Any]:
        return build_manifest(self)

    def registry(self) -> RemsRegistry:
        """The REMS registry these clinic days need to stay compliant: every clinic certified
        from a year before the start, open-ended, and every patient enrolled a week before
        their session, but those of `not_enrolled` sessions."""
        since = (self.config.start - timedelta(days=365)).date()
        certifications = [
            Certification(f"clinic-{n:02d}", f"REMS-HCS-{n:04d}", since)
            for n in range(1, self.config.clinics + 1)
        ]
        enrollments = [
            Enrollment(
                p.spec.clinic_id, p.spec.patient_ref, (p.spec.opened_at - timedelta(days=7)).date()
            )
            for p in self.sessions
            if p.spec.violation != NOT_ENROLLED
        ]
        return RemsRegistry.of(certifications, enrollments)

    def manifest_json(self) -> bytes:
        return orjson.dumps(self.manifest(), option=orjson.OPT_INDENT_2) + b"\n"


def simulate(config: SimulationConfig, protocols: Mapping[str, MonitoringProtocol]) -> Simulation:
    """Plan every session of every chair of every clinic, then deliver their events."""
    config.validate()
    for name in (ESKETAMINE_PROTOCOL, KETAMINE_PROTOCOL):
        if name not in protocols:
            raise ValueError(f"the simulator needs the {name!r} protocol")
    plans: list[SessionPlan] = []
    for day in range(config.days):
        day_start = config.start + timedelta(days=day)
        for clinic in range(1, config.clinics + 1):
            clinic_id = f"clinic-{clinic:02d}"
            for chair in range(1, config.chairs_per_clinic + 1):
                chair_rng = Random(f"{config.seed}/{day}/{clinic_id}/{chair}")
                opens = day_start + timedelta(seconds=chair_rng.randint(0, 30 * 60))
                for number in range(1, config.sessions_per_chair + 1):
                    rng = Random(f"{config.seed}/{day}/{clinic_id}/{chair}/{number}")
                    spec = _draw_spec(config, rng, clinic_id, chair, number, day_start, opens)
                    plan = plan_session(spec, protocols[spec.protocol], rng)
                    plans.append(plan)
                    # The chair is cleaned and the next patient settled in.
                    opens = plan.discharged_at + timedelta(seconds=rng.randint(600, 1500))
    deliveries, summary = deliver(plans, config.transport, Random(f"{config.seed}/transport"))
    return Simulation(config, tuple(plans), tuple(deliveries), summary)


def _draw_spec(
    config: SimulationConfig,
    rng: Random,
    clinic_id: str,
    chair: int,
    number: int,
    day_start: datetime,
    opens: datetime,
) -> SessionSpec:
    if rng.random() < config.esketamine_share:
        protocol, drug, route = ESKETAMINE_PROTOCOL, "esketamine", "intranasal"
    else:
        protocol, drug = KETAMINE_PROTOCOL, "ketamine"
        route = _weighted(rng, KETAMINE_ROUTES)
    medications: tuple[str, ...] = ()
    if rng.random() < config.concomitant_share:
        medications = (rng.choice(MEDICATIONS),)
    violation = None
    draw, total = rng.random(), 0.0
    for kind, rate in config.violations.items():
        total += rate
        if draw < total:
            violation = kind
            break
    if violation == NOT_ENROLLED and protocol != ESKETAMINE_PROTOCOL:
        violation = None  # generic ketamine has no REMS: nothing to leave out
    return SessionSpec(
        session_id=f"{clinic_id}-{day_start:%Y%m%d}-ch{chair}-{number:02d}",
        clinic_id=clinic_id,
        chair=chair,
        patient_ref=f"pt-{rng.getrandbits(48):012x}",
        opened_at=opens,
        protocol=protocol,
        drug=drug,
        route=route,
        medications=medications,
        violation=violation,
    )


def _weighted(rng: Random, choices: tuple[tuple[str, float], ...]) -> str:
    draw, total = rng.random(), 0.0
    for value, weight in choices:
        total += weight
        if draw < total:
            return value
    return choices[-1][0]


def build_manifest(simulation: Simulation) -> dict[str, Any]:
    """What was injected, per session and in total, so a run can be checked against alerts."""
    config = simulation.config
    sessions = simulation.sessions
    violations = Counter(v.kind for p in sessions for v in p.violations)
    expected = Counter(a.rule for p in sessions for a in p.expected_alerts)
    protocols = Counter(p.spec.protocol for p in sessions)
    transport = simulation.transport
    line_of = {id(d): n for n, d in enumerate(simulation.deliveries, start=1)}
    events = [d for d in simulation.deliveries if d.kind == "event"]
    return {
        "generator": "remsguard simulate",
        "seed": config.seed,
        "start": stamp(config.start),
        "until": stamp(simulation.until),
        "first_event_at": stamp(min(e.event_time for e in events)),
        "last_event_at": stamp(max(e.event_time for e in events)),
        "clinics": config.clinics,
        "chairs_per_clinic": config.chairs_per_clinic,
        "sessions_per_chair": config.sessions_per_chair,
        "days": config.days,
        "rates": {
            "violations": dict(config.violations.items()),
            "duplicate": config.transport.duplicate,
            "reorder": config.transport.reorder,
            "malformed": config.transport.malformed,
        },
        "counts": {
            "sessions": len(sessions),
            "compliant_sessions": sum(1 for p in sessions if p.compliant),
            "sessions_by_protocol": dict(sorted(protocols.items())),
            "events": len(events),
            "lines": len(simulation.deliveries),
            "violations": {kind: violations.get(kind, 0) for kind in VIOLATION_KINDS},
            "expected_alerts": dict(sorted(expected.items())),
        },
        "transport": {
            "delayed": transport.delayed,
            "out_of_order": transport.out_of_order,
            "duplicates": transport.duplicates,
            "malformed": transport.malformed,
            "malformed_by_reason": dict(sorted(transport.malformed_by_reason.items())),
        },
        "rejections": [
            {"line": line_of[id(d)], "session_id": d.session_id, "reason": d.reason}
            for d in simulation.deliveries
            if d.kind == "malformed"
        ],
        "sessions": [_session_entry(p) for p in sessions],
    }


def _session_entry(plan: SessionPlan) -> dict[str, Any]:
    spec = plan.spec
    return {
        "session_id": spec.session_id,
        "clinic_id": spec.clinic_id,
        "chair": spec.chair,
        "patient_ref": spec.patient_ref,
        "protocol": spec.protocol,
        "drug": spec.drug,
        "route": spec.route,
        "dose_mg": plan.dose_mg,
        "concomitant_medications": list(spec.medications),
        "opened_at": stamp(spec.opened_at),
        "dosed_at": stamp(plan.dosed_at),
        "discharged_at": stamp(plan.discharged_at),
        "compliant": plan.compliant,
        "violations": [
            {
                "kind": v.kind,
                "detail": v.detail,
                "exact": True,
                "expected_alerts": [
                    {"rule": a.rule, "triggered_at": stamp(a.triggered_at)} for a in v.expected
                ],
            }
            for v in plan.violations
        ],
    }
