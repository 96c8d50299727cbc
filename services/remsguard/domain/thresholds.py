"""Threshold rules: raised when a condition becomes true, re-armed once it stops being true."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

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
