"""Threshold rules: raised when a condition becomes true, re-armed once it stops being true."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from math import inf
from operator import itemgetter
from typing import TypeVar

from remsguard.domain.protocol import MonitoringProtocol
from remsguard.domain.session import LAST_ID, BPReading, Measurement

Row = TypeVar("Row", BPReading, Measurement)


def starts_at(rows: Sequence[Row], index: int, meets: Callable[[Row], bool]) -> list[Row]:
    """Episode starts the row just appended at `index` can create: itself, if it meets the
    condition and the instant before it does not. Only for a row that came last, at an instant
    of its own; any other insertion is judged by `all_starts` over the whole sequence."""
    row = rows[index]
    if not meets(row):
        return []
    if index and _decides(rows, index - 1, meets) is not None:
        return []
    return [row]


def all_starts(
    rows: Sequence[Row], meets: Callable[[Row], bool], end: datetime | None = None
) -> list[Row]:
    """Every episode start among the rows up to `end` (inclusive), judged per instant.

    Readings stamped at the same instant (a monitor and a manual entry) are one observation:
    the instant is judged by its worst value (`_decides`), whatever their ids or arrival order.
    """
    starts: list[Row] = []
    before = False
    stop = len(rows) if end is None else bisect_right(rows, (end, LAST_ID))
    index = 0
    while index < stop:
        at = rows[index].at
        last = index
        while last + 1 < stop and rows[last + 1].at == at:
            last += 1
        row = (
            _decides(rows, last, meets)
            if last > index
            else (rows[index] if meets(rows[index]) else None)
        )
        if row is not None and not before:
            starts.append(row)
        before = row is not None
        index = last + 1
    return starts


def _decides(rows: Sequence[Row], index: int, meets: Callable[[Row], bool]) -> Row | None:
    """The row that makes the instant of `rows[index]` meet the condition, or None.

    A blood-pressure instant meets it when any of its readings does (the conditions are
    "systolic or diastolic at least"), decided by the first such reading; a measurement
    instant is judged by its lowest value (every such rule is about a value too low, and
    SPO2_LOW is a band: 90 and 85 at one instant are critical, not low).
    """
    at = rows[index].at
    low = index
    while low and rows[low - 1].at == at:
        low -= 1
    high = index + 1
    while high < len(rows) and rows[high].at == at:
        high += 1
    if high - low == 1:  # the usual instant: one reading
        row = rows[index]
        return row if meets(row) else None
    group = rows[low:high]
    if type(group[0]) is BPReading:
        return next((r for r in group if meets(r)), None)
    worst = min(group, key=_VALUE)  # ties: the first by event id
    return worst if meets(worst) else None


_VALUE = itemgetter(2)  # a measurement's value


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
