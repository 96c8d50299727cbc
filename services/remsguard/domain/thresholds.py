"""Threshold rules: raised when a condition becomes true, re-armed once it stops being true."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from math import inf
from typing import TypeVar

from remsguard.domain.protocol import MonitoringProtocol
from remsguard.domain.session import BPReading, Measurement

Row = TypeVar("Row", BPReading, Measurement)


def starts_at(rows: Sequence[Row], index: int, meets: Callable[[Row], bool]) -> list[Row]:
    """Episode starts a newly inserted row can create: itself, or the row after it (a split)."""
    starts: list[Row] = []
    here = meets(rows[index])
    if here and (index == 0 or not meets(rows[index - 1])):
        starts.append(rows[index])
    if index + 1 < len(rows) and not here and meets(rows[index + 1]):
        starts.append(rows[index + 1])
    return starts


def all_starts(rows: Sequence[Row], meets: Callable[[Row], bool]) -> list[Row]:
    """Every episode start in the sequence, for when the condition itself changed."""
    starts: list[Row] = []
    before = False
    for row in rows:
        now = meets(row)
        if now and not before:
            starts.append(row)
        before = now
    return starts


@dataclass(frozen=True, slots=True)
class Thresholds:
    """A protocol's threshold conditions, built once per protocol; None where a rule is off."""

    crisis: Callable[[BPReading], bool] | None
    spo2_critical: Callable[[Measurement], bool] | None
    spo2_low: Callable[[Measurement], bool] | None
    respiratory_rate: Callable[[Measurement], bool] | None
    deep_sedation: Callable[[Measurement], bool] | None
    spo2_low_below: float
    spo2_critical_below: float
    rate_below: float
    # At or above these a reading meets no enabled rule of its kind: the usual reading, which
    # then starts no episode if it came last (the only other start it could make is a split).
    spo2_quiet_from: float
    rate_quiet_from: float
    crisis_from: tuple[float, float]  # BP_CRISIS's systolic and diastolic levels
    rise: tuple[float, float] | None  # BP_RISE's systolic and diastolic rise; None when off

    @classmethod
    def of(cls, protocol: MonitoringProtocol) -> Thresholds:
        crisis, low, critical = (
            protocol.rule("BP_CRISIS"),
            protocol.rule("SPO2_LOW"),
            protocol.rule("SPO2_CRITICAL"),
        )
        systolic, diastolic = crisis["systolic_at_least"], crisis["diastolic_at_least"]
        low_below, critical_below = low["below"], critical["below"]
        rate_below = protocol.rule("RESPIRATORY_DEPRESSION")["rate_below"]
        deep_at_most = protocol.rule("DEEP_SEDATION")["moaas_at_most"]

        def on(rule: str, condition: Callable[[Row], bool]) -> Callable[[Row], bool] | None:
            return condition if protocol.rule(rule).enabled else None

        def quiet_from(*rules: tuple[str, float]) -> float:
            return max(
                (below for rule, below in rules if protocol.rule(rule).enabled), default=-inf
            )

        rise = protocol.rule("BP_RISE")

        return cls(
            crisis=on("BP_CRISIS", lambda r: r.systolic >= systolic or r.diastolic >= diastolic),
            spo2_critical=on("SPO2_CRITICAL", lambda r: r.value < critical_below),
            spo2_low=on("SPO2_LOW", lambda r: critical_below <= r.value < low_below),
            respiratory_rate=on("RESPIRATORY_DEPRESSION", lambda r: r.value < rate_below),
            deep_sedation=on("DEEP_SEDATION", lambda r: r.value <= deep_at_most),
            spo2_low_below=low_below,
            spo2_critical_below=critical_below,
            rate_below=rate_below,
            spo2_quiet_from=quiet_from(("SPO2_LOW", low_below), ("SPO2_CRITICAL", critical_below)),
            rate_quiet_from=quiet_from(("RESPIRATORY_DEPRESSION", rate_below)),
            crisis_from=(systolic, diastolic),
            rise=(rise["systolic_rise"], rise["diastolic_rise"]) if rise.enabled else None,
        )
