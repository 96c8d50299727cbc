"""Discharge readiness and the next check due: what staff see before a patient may leave.

Computed from the same session state and protocol the rules use, so the console never
disagrees with the alerts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from remsguard.domain.deadlines import bp_elevated
from remsguard.domain.protocol import MonitoringProtocol
from remsguard.domain.session import Session, latest_instant


@dataclass(frozen=True, slots=True)
class CheckDue:
    label: str
    due_at: datetime


@dataclass(frozen=True, slots=True)
class DischargeReadiness:
    session_id: str
    ready: bool
    earliest_discharge_at: datetime | None
    reasons: tuple[str, ...]
    next_checks: tuple[CheckDue, ...] = field(default=())


def discharge_readiness(
    session: Session,
    protocol: MonitoringProtocol,
    now: datetime,
    open_critical_rules: tuple[str, ...] = (),
) -> DischargeReadiness:
    """Whether the patient may leave at `now`, and in plain words what still stands in the way."""
    dose = session.latest_dose
    if dose is None:
        return DischargeReadiness(session.session_id, True, None, (), ())
    earliest = dose.at + protocol.observation_window
    reasons: list[str] = []
    if now < earliest:
        left = int((earliest - now).total_seconds() // 60) + 1
        reasons.append(f"Observation window not elapsed: {left} min left")
    lookback = protocol.rule("DISCHARGE_WITHOUT_FINAL_BP").minutes("lookback_minutes")
    recent = session.bp_between(now - lookback, now)
    if not recent:
        reasons.append(f"No blood pressure reading in the last {lookback.seconds // 60} min")
    elif elevated := [r for r in latest_instant(recent) if bp_elevated(session, protocol, r)]:
        last = elevated[0]
        reasons.append(f"Blood pressure {last.systolic:g}/{last.diastolic:g} still elevated")
    sedation = session.latest_sedation_until(now)
    required = protocol.rule("DISCHARGE_SEDATED")["moaas_below"]
    if sedation is None or sedation.at < dose.at:
        reasons.append("No sedation assessment since the dose")
    elif sedation.value < required:
        reasons.append(f"Sedation not resolved: latest MOAA/S {sedation.value:g}")
    if open_critical_rules:
        rules = ", ".join(sorted(set(open_critical_rules)))
        reasons.append(f"Open critical alerts: {rules}")
    return DischargeReadiness(
        session.session_id, not reasons, earliest, tuple(reasons), next_checks(session, protocol)
    )


def next_checks(session: Session, protocol: MonitoringProtocol) -> tuple[CheckDue, ...]:
    """Checks still owed for the latest dose, e.g. the 40-minute BP and the end of the window."""
    dose = session.latest_dose
    if dose is None or session.discharge is not None:
        return ()
    checks: list[CheckDue] = []
    post = protocol.rule("POST_DOSE_BP_MISSED")
    start = dose.at + post.minutes("from_minutes")
    end = dose.at + post.minutes("until_minutes")
    if post.enabled and not session.bp_between(start, end):
        minutes = (post["from_minutes"] + post["until_minutes"]) / 2
        checks.append(CheckDue(f"{minutes:g}-minute BP", start))
    checks.append(CheckDue("End of observation window", dose.at + protocol.observation_window))
    return tuple(checks)
