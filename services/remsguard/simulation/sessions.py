"""One treatment session: a plausible clinical course, and at most one injected violation.

Everything is planned in event time from the session's own random generator, against the
*effective* protocol (the session's protocol tightened by its concomitant medications), so a
compliant session stays clear of every threshold with a margin and an injected violation raises
exactly the alerts it names, at the times it names.

Physiology (see REMS-REFERENCE.md): blood pressure rises to a peak about 40 minutes after the
dose and declines over hours; SpO2 sits at 96-99% with occasional benign dips that stay at or
above the protocol's low threshold; heart rate follows the pressure a little; respiratory rate
stays normal; dissociation is common early; MOAA/S sedation is mild and recovers to 5 before
discharge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from random import Random
from typing import Any

from remsguard.domain.events import Medication
from remsguard.domain.protocol import MonitoringProtocol
from remsguard.simulation.config import (
    BP_CRISIS,
    DESATURATION,
    DEVICE_DROPOUT,
    EARLY_DISCHARGE,
    MISSED_POST_DOSE_CHECK,
    MISSING_PRE_DOSE_BP,
    NOT_ENROLLED,
)


def stamp(at: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, to the second."""
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class SessionSpec:
    """Who, where and what: drawn by the day planner before the course is simulated."""

    session_id: str
    clinic_id: str
    chair: int
    patient_ref: str
    opened_at: datetime
    protocol: str
    drug: str
    route: str
    medications: tuple[str, ...]
    violation: str | None


@dataclass(frozen=True, slots=True)
class ExpectedAlert:
    rule: str
    triggered_at: datetime


@dataclass(frozen=True, slots=True)
class InjectedViolation:
    kind: str
    detail: str
    expected: tuple[ExpectedAlert, ...]


@dataclass(frozen=True, slots=True)
class SimEvent:
    at: datetime
    doc: dict[str, Any]  # the wire event, exactly as it will be serialised

    @property
    def type(self) -> str:
        return str(self.doc["type"])


@dataclass(frozen=True, slots=True)
class SessionPlan:
    spec: SessionSpec
    dose_mg: float
    dosed_at: datetime
    discharged_at: datetime
    lateness: timedelta
    events: tuple[SimEvent, ...]  # event-time order
    violations: tuple[InjectedViolation, ...]

    @property
    def compliant(self) -> bool:
        return not self.violations

    @property
    def expected_alerts(self) -> list[ExpectedAlert]:
        return [alert for v in self.violations for alert in v.expected]


@dataclass(slots=True)
class _Vitals:
    offset: int  # seconds after the dose (negative before it)
    heart_rate: int
    spo2: int
    respiratory_rate: int
    bp: tuple[int, int] | None = None


@dataclass(slots=True)
class _Limits:
    """The effective protocol's numbers the course must respect (or cross on purpose)."""

    window: int  # seconds of observation after the dose
    pre_lookback: int
    pre_elevated: tuple[float, float]
    check_from: int
    check_until: int
    rise: tuple[float, float]
    crisis: tuple[float, float]
    spo2_low: float
    spo2_critical: float
    rate_below: float
    deep_at_most: float
    final_lookback: int
    gap: int

    @classmethod
    def of(cls, protocol: MonitoringProtocol) -> _Limits:
        def seconds(rule: str, param: str) -> int:
            return round(protocol.rule(rule)[param] * 60)

        rule = protocol.rule
        return cls(
            window=round(protocol.observation_window.total_seconds()),
            pre_lookback=seconds("PRE_DOSE_BP_MISSING", "lookback_minutes"),
            pre_elevated=(
                rule("PRE_DOSE_BP_ELEVATED")["systolic_above"],
                rule("PRE_DOSE_BP_ELEVATED")["diastolic_above"],
            ),
            check_from=seconds("POST_DOSE_BP_MISSED", "from_minutes"),
            check_until=seconds("POST_DOSE_BP_MISSED", "until_minutes"),
            rise=(rule("BP_RISE")["systolic_rise"], rule("BP_RISE")["diastolic_rise"]),
            crisis=(
                rule("BP_CRISIS")["systolic_at_least"],
                rule("BP_CRISIS")["diastolic_at_least"],
            ),
            spo2_low=rule("SPO2_LOW")["below"],
            spo2_critical=rule("SPO2_CRITICAL")["below"],
            rate_below=rule("RESPIRATORY_DEPRESSION")["rate_below"],
            deep_at_most=rule("DEEP_SEDATION")["moaas_at_most"],
            final_lookback=seconds("DISCHARGE_WITHOUT_FINAL_BP", "lookback_minutes"),
            gap=seconds("VITALS_GAP", "max_minutes"),
        )


def _peak(minutes: float) -> float:
    """The dose's effect on blood pressure: up to a peak at 40 minutes, then a slow decline."""
    if minutes <= 0:
        return 0.0
    if minutes < 40:
        return math.sin(math.pi / 2 * minutes / 40)
    return math.exp(-(minutes - 40) / 110)


def _dose_mg(drug: str, route: str, rng: Random) -> float:
    if drug == "esketamine":
        return float(rng.choice((56, 56, 84)))
    weight = rng.uniform(52, 110)  # kg
    if route == "iv":
        return float(round(0.5 * weight))  # 0.5 mg/kg over 40 minutes
    if route == "im":
        return float(round(0.75 * weight))
    return float(rng.choice((100, 150, 200, 300)))  # sublingual lozenge


def plan_session(spec: SessionSpec, protocol: MonitoringProtocol, rng: Random) -> SessionPlan:
    """Simulate one session's events in event time, with `spec.violation` injected if any."""
    effective = protocol.for_medications(frozenset(Medication(m) for m in spec.medications))
    return _Course(spec, effective, protocol.allowed_lateness, rng).plan()


@dataclass
class _Course:
    spec: SessionSpec
    protocol: MonitoringProtocol
    lateness: timedelta
    rng: Random
    limits: _Limits = field(init=False)
    dosed_at: datetime = field(init=False)
    dose_mg: float = field(init=False)

    def __post_init__(self) -> None:
        self.limits = _Limits.of(self.protocol)

    # -- the course -------------------------------------------------------------------------

    def plan(self) -> SessionPlan:
        spec, rng, lim = self.spec, self.rng, self.limits
        violation = spec.violation
        opened = spec.opened_at
        self.dose_mg = _dose_mg(spec.drug, spec.route, rng)
        pre_at = rng.randint(180, 420)  # pre-dose vitals, seconds after opening
        dose_after_open = rng.randint(max(pre_at + 300, 720), 1200)
        if dose_after_open - pre_at >= lim.pre_lookback:
            raise AssertionError("pre-dose reading would fall outside the lookback")
        self.dosed_at = opened + timedelta(seconds=dose_after_open)
        if violation == EARLY_DISCHARGE:
            discharge = lim.window - rng.randint(900, 2100)
            discharge = max(discharge, lim.check_until + 900)
            if discharge >= lim.window:
                raise AssertionError("protocol leaves no room for an early discharge")
        else:
            discharge = lim.window + rng.randint(180, 1500)

        # Baseline: within the pre-dose guide, so PRE_DOSE_BP_ELEVATED stays quiet.
        systolic0 = _clamp(round(rng.gauss(121, 10)), 102, min(136, int(lim.pre_elevated[0]) - 4))
        diastolic0 = _clamp(
            round(rng.gauss(77, 6)), 62, min(86, int(lim.pre_elevated[1]) - 4, systolic0 - 25)
        )
        heart0 = rng.randint(60, 86)
        pre = self._vitals(-(dose_after_open - pre_at), heart0)
        if violation != MISSING_PRE_DOSE_BP:
            pre.bp = (systolic0, diastolic0)

        vitals = self._schedule(discharge, heart0)
        skip_check = violation == MISSED_POST_DOSE_CHECK
        self._blood_pressure(vitals, systolic0, diastolic0, skip_check=skip_check)

        violations: list[InjectedViolation] = []
        if violation == EARLY_DISCHARGE:
            violations.append(
                InjectedViolation(
                    EARLY_DISCHARGE,
                    f"discharged {discharge // 60} min after the dose "
                    f"(observation window {lim.window // 60} min)",
                    (ExpectedAlert("EARLY_DISCHARGE", self._at(discharge)),),
                )
            )
        elif violation == MISSED_POST_DOSE_CHECK:
            violations.append(
                InjectedViolation(
                    MISSED_POST_DOSE_CHECK,
                    f"no BP reading between {lim.check_from // 60} and "
                    f"{lim.check_until // 60} min after the dose",
                    (ExpectedAlert("POST_DOSE_BP_MISSED", self._at(lim.check_until)),),
                )
            )
        elif violation == MISSING_PRE_DOSE_BP:
            violations.append(
                InjectedViolation(
                    MISSING_PRE_DOSE_BP,
                    "pre-dose vitals without a blood pressure",
                    (ExpectedAlert("PRE_DOSE_BP_MISSING", self.dosed_at),),
                )
            )
        elif violation == BP_CRISIS:
            violations.append(self._crisis(vitals, systolic0, diastolic0, pre.bp is not None))
        elif violation == DESATURATION:
            violations.append(self._desaturation(vitals))
        elif violation == DEVICE_DROPOUT:
            violations.append(self._dropout(vitals, discharge))
        elif violation == NOT_ENROLLED:
            gated = self.protocol.rems_gate  # the registry leaves this patient out
            violations.append(
                InjectedViolation(
                    NOT_ENROLLED,
                    "the patient is not enrolled in the REMS registry",
                    (ExpectedAlert("PATIENT_NOT_ENROLLED", self.dosed_at),) if gated else (),
                )
            )
        elif violation is not None:
            raise ValueError(f"unknown violation {violation!r}")

        events = self._events([pre, *vitals], pre_at, discharge)
        return SessionPlan(
            spec=spec,
            dose_mg=self.dose_mg,
            dosed_at=self.dosed_at,
            discharged_at=self._at(discharge),
            lateness=self.lateness,
            events=events,
            violations=tuple(violations),
        )

    def _at(self, offset: int) -> datetime:
        return self.dosed_at + timedelta(seconds=offset)

    def _vitals(self, offset: int, heart0: int) -> _Vitals:
        rng, lim = self.rng, self.limits
        effect = _peak(offset / 60)
        heart = _clamp(round(heart0 + rng.uniform(4, 12) * effect + rng.gauss(0, 3)), 48, 130)
        spo2 = rng.choice((96, 97, 97, 98, 98, 98, 99, 99))
        if rng.random() < 0.04:  # a benign dip (movement, cold fingers): never below the rule
            spo2 = min(spo2, math.ceil(lim.spo2_low) + rng.randint(0, 1))
        rate = rng.randint(max(12, math.ceil(lim.rate_below) + 2), 18)
        return _Vitals(offset, heart, spo2, rate)

    def _schedule(self, discharge: int, heart0: int) -> list[_Vitals]:
        """Monitor readings from the dose to just before discharge, well inside the gap limit."""
        interval = _clamp(self.limits.gap // 3, 100, 300)
        jitter = interval * 15 // 100
        rng = self.rng
        offset = rng.randint(interval * 4 // 10, interval)
        vitals: list[_Vitals] = []
        while offset < discharge - 30:
            vitals.append(self._vitals(offset, heart0))
            offset += interval + rng.randint(-jitter, jitter)
        if not vitals or discharge - vitals[-1].offset >= self.limits.gap:
            raise AssertionError("vitals schedule leaves a gap")
        return vitals

    def _blood_pressure(
        self, vitals: list[_Vitals], systolic0: int, diastolic0: int, *, skip_check: bool
    ) -> None:
        """BP at the post-dose check, every 15-20 minutes, and at the last reading."""
        lim, rng = self.limits, self.rng
        every = 15 * 60 if lim.gap <= 5 * 60 else 20 * 60
        target = (lim.check_from + lim.check_until) // 2
        interval = _clamp(lim.gap // 3, 100, 300)
        systolic_amp = rng.uniform(0.2, 0.55) * lim.rise[0]
        diastolic_amp = rng.uniform(0.2, 0.5) * lim.rise[1]
        # Compliant readings stay a few mmHg under the rise and crisis thresholds.
        systolic_cap = min(math.ceil(systolic0 + lim.rise[0]) - 4, math.ceil(lim.crisis[0]) - 6)
        diastolic_cap = min(math.ceil(diastolic0 + lim.rise[1]) - 3, math.ceil(lim.crisis[1]) - 6)
        last_bp, checked = 0, False
        for index, reading in enumerate(vitals):
            at = reading.offset
            in_check = lim.check_from + 60 <= at <= lim.check_until - 60
            want = (
                (in_check and not checked and at >= target - interval // 2)
                or at - last_bp >= every
                or index == len(vitals) - 1
            )
            if skip_check and lim.check_from - 60 <= at <= lim.check_until + 60:
                want = False
            if not want:
                continue
            effect = _peak(at / 60)
            systolic = round(systolic0 + systolic_amp * effect + rng.gauss(0, 3))
            diastolic = round(diastolic0 + diastolic_amp * effect + rng.gauss(0, 2))
            systolic = _clamp(systolic, systolic0 - 12, systolic_cap)
            diastolic = _clamp(diastolic, diastolic0 - 8, min(diastolic_cap, systolic - 25))
            reading.bp = (systolic, diastolic)
            last_bp = at
            checked = checked or in_check
        if not skip_check and not checked:
            raise AssertionError("no BP reading landed in the post-dose check window")

    # -- violations -------------------------------------------------------------------------

    def _crisis(
        self, vitals: list[_Vitals], systolic0: int, diastolic0: int, has_baseline: bool
    ) -> InjectedViolation:
        """The reading at the post-dose check spikes into the crisis range; the recheck is lower."""
        lim, rng = self.limits, self.rng
        index = next(
            i
            for i, v in enumerate(vitals)
            if v.bp is not None and lim.check_from <= v.offset <= lim.check_until
        )
        systolic = math.ceil(lim.crisis[0]) + rng.randint(0, 14)
        diastolic = rng.randint(96, math.ceil(lim.crisis[1]) - 2)
        spike = vitals[index]
        spike.bp = (systolic, diastolic)
        spike.heart_rate = _clamp(spike.heart_rate + rng.randint(8, 20), 48, 140)
        recheck = vitals[index + 1]  # staff re-measure at the next reading: elevated, not rising
        if recheck.bp is None:
            recheck.bp = (
                math.ceil(systolic0 + lim.rise[0]) - rng.randint(5, 9),
                min(math.ceil(diastolic0 + lim.rise[1]) - 4, diastolic0 + 12),
            )
        at = self._at(spike.offset)
        expected = [ExpectedAlert("BP_CRISIS", at)]
        rises = systolic >= systolic0 + lim.rise[0] or diastolic >= diastolic0 + lim.rise[1]
        if has_baseline and rises:
            expected.append(ExpectedAlert("BP_RISE", at))
        return InjectedViolation(
            BP_CRISIS,
            f"BP {systolic}/{diastolic} mmHg {spike.offset // 60} min after the dose",
            tuple(expected),
        )

    def _desaturation(self, vitals: list[_Vitals]) -> InjectedViolation:
        """One or two readings below the low (or once below the critical) SpO2 threshold."""
        lim, rng = self.limits, self.rng
        choices = [i for i, v in enumerate(vitals[:-3]) if 10 * 60 <= v.offset <= 60 * 60]
        index = rng.choice(choices)
        low, critical = math.ceil(lim.spo2_low), math.ceil(lim.spo2_critical)
        dip = vitals[index]
        if rng.random() < 0.5:
            dip.spo2 = rng.randint(critical, low - 1)
            if rng.random() < 0.5:
                vitals[index + 1].spo2 = rng.randint(critical, low - 1)
                index += 1
            vitals[index + 1].spo2 = rng.randint(max(low, 95), 98)
            rule, level = "SPO2_LOW", "low"
        else:
            dip.spo2 = rng.randint(max(50, critical - 7), critical - 1)
            vitals[index + 1].spo2 = rng.randint(max(low, 94), 97)
            rule, level = "SPO2_CRITICAL", "critical"
        dip.heart_rate = _clamp(dip.heart_rate + rng.randint(5, 15), 48, 140)
        return InjectedViolation(
            DESATURATION,
            f"SpO2 {dip.spo2}% ({level}) {dip.offset // 60} min after the dose",
            (ExpectedAlert(rule, self._at(dip.offset)),),
        )

    def _dropout(self, vitals: list[_Vitals], discharge: int) -> InjectedViolation:
        """The monitor goes silent for longer than the gap limit, away from the BP checks."""
        lim, rng = self.limits, self.rng
        silence = lim.gap + rng.randint(120, 480)
        latest_end = discharge - lim.final_lookback - 120
        choices = [
            i
            for i, v in enumerate(vitals)
            if v.offset >= lim.check_until + 180 and v.offset + silence <= latest_end
        ]
        if not choices:
            raise AssertionError("no room for a device dropout")
        start = vitals[rng.choice(choices)].offset
        vitals[:] = [v for v in vitals if not start < v.offset <= start + silence]
        return InjectedViolation(
            DEVICE_DROPOUT,
            f"no vitals for {silence // 60} min from {start // 60} min after the dose",
            (ExpectedAlert("VITALS_GAP", self._at(start + lim.gap)),),
        )

    # -- the wire events --------------------------------------------------------------------

    def _events(self, vitals: list[_Vitals], pre_at: int, discharge: int) -> tuple[SimEvent, ...]:
        spec, rng = self.spec, self.rng
        monitor = f"{spec.clinic_id}-ch{spec.chair}-monitor"
        tablet = f"{spec.clinic_id}-ch{spec.chair}-tablet"
        rows: list[tuple[datetime, str, str, dict[str, Any]]] = []
        opened: dict[str, Any] = {"patient_ref": spec.patient_ref, "protocol": spec.protocol}
        if spec.medications:
            opened["concomitant_medications"] = list(spec.medications)
        rows.append((spec.opened_at, "session.opened", tablet, opened))
        rows.append(
            (
                spec.opened_at + timedelta(seconds=rng.randint(60, pre_at - 30)),
                "assessment.recorded",
                tablet,
                {"sedation_moaas": 5, "dissociation": False},
            )
        )
        for reading in vitals:
            data: dict[str, Any] = {}
            if reading.bp is not None:
                data["systolic"], data["diastolic"] = reading.bp
            data["heart_rate"] = reading.heart_rate
            data["spo2"] = reading.spo2
            data["respiratory_rate"] = reading.respiratory_rate
            rows.append((self._at(reading.offset), "vitals.recorded", monitor, data))
        lot = "ESK" if spec.drug == "esketamine" else "KET"
        dose: dict[str, Any] = {
            "drug": spec.drug,
            "route": spec.route,
            "dose_mg": self.dose_mg,
            "lot_number": f"{lot}{rng.randint(10000, 99999)}",
        }
        rows.append((self.dosed_at, "dose.administered", tablet, dose))
        for offset, moaas, dissociation in self._assessments(discharge):
            data = {"sedation_moaas": moaas, "dissociation": dissociation}
            rows.append((self._at(offset), "assessment.recorded", tablet, data))
        staff = f"rn-{spec.clinic_id.rsplit('-', 1)[-1]}-{rng.randint(1, 6)}"
        rows.append(
            (
                self._at(discharge),
                "session.discharged",
                tablet,
                {"staff_id": staff, "clinically_stable": True},
            )
        )
        rows.sort(key=lambda row: row[0])  # stable: same-time rows keep their order
        events = []
        for number, (at, kind, device, data) in enumerate(rows, start=1):
            doc = {
                "event_id": f"{spec.session_id}-{number:03d}",
                "type": kind,
                "session_id": spec.session_id,
                "clinic_id": spec.clinic_id,
                "occurred_at": stamp(at),
                "device_id": device,
                "data": data,
            }
            events.append(SimEvent(at, doc))
        return tuple(events)

    def _assessments(self, discharge: int) -> list[tuple[int, int, bool]]:
        """MOAA/S and dissociation: mild and early, fully alert (5) before discharge."""
        rng = self.rng
        lightest = max(3, math.floor(self.limits.deep_at_most) + 1)
        out = [
            (10 * 60 + rng.randint(-60, 90), rng.randint(lightest, 5), rng.random() < 0.75),
            (25 * 60 + rng.randint(-90, 90), rng.randint(max(lightest, 4), 5), rng.random() < 0.45),
            (45 * 60 + rng.randint(-90, 90), rng.choice((4, 5, 5)), rng.random() < 0.1),
        ]
        offset = 75 * 60
        while offset < discharge - 15 * 60:
            out.append((offset + rng.randint(-120, 120), 5, False))
            offset += 30 * 60
        out.append((discharge - rng.randint(120, 360), 5, False))
        return out


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))
