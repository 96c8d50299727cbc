"""Alarm inhibition (IEC 60601-1-8's priorities, Alertmanager's inhibit rules), as data.

A protocol's `[inhibitions]` says which rule's alert carries a reading: `BP_CRISIS` over
`BP_RISE`, `SPO2_CRITICAL` over `SPO2_LOW`. An alert about a reading that an alert of an
inhibiting rule is also about (and still stands: raised, not withdrawn) is marked
`inhibited_by` that alert: it stays in the compliance log, and the notification and console
card are the inhibitor's ("also: BP_RISE").

Decided from the facts, not from arrival order: a crisis reading that arrives before its
session's dose raises the crisis at once and the rise when the dose comes, and the rise is
inhibited just as when both were raised together. The inhibiting rule needs no more facts
than the one it inhibits (a reading against a level, or against a level and a baseline), so
it is never raised after it. Alerts about other readings are never inhibited: a rise on an
earlier reading has already been shown on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

from remsguard.domain.decisions import Alert

__all__ = ["inhibit"]

# (rule, subject) -> the id of that rule's standing alert about the subject, or None
Standing = Callable[[str, str], str | None]


def inhibit(
    alerts: list[tuple[Alert, str]],
    inhibitions: Mapping[str, frozenset[str]],
    standing: Standing,
) -> list[Alert]:
    """The alerts, in order, each marked with the first standing alert that inhibits it.

    `alerts` pairs each alert with its subject (the reading it is about); `standing` answers
    for the alerts raised before and those raised with these."""
    out: list[Alert] = []
    for alert, subject in alerts:
        over = next(
            (
                alert_id
                for higher, lower in inhibitions.items()
                if alert.rule in lower and (alert_id := standing(higher, subject)) is not None
            ),
            None,
        )
        out.append(alert if over is None else replace(alert, inhibited_by=over))
    return out
