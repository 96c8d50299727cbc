"""Alarm inhibition (IEC 60601-1-8's priorities, Alertmanager's inhibit rules), as data.

A protocol's `[inhibitions]` says which rule's alert carries a reading: `BP_CRISIS` over
`BP_RISE`, `SPO2_CRITICAL` over `SPO2_LOW`. Among alerts raised together, one whose evidence
shares a reading with an alert of a rule that inhibits its own is marked `inhibited_by` that
alert: it stays in the compliance log, and the notification and console card are the
inhibitor's ("also: BP_RISE"). Alerts raised at other times are never inhibited, so a lower
alert raised first (a rise before the crisis) has already been shown.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from remsguard.domain.decisions import Alert

__all__ = ["inhibit"]


def inhibit(alerts: list[Alert], inhibitions: Mapping[str, frozenset[str]]) -> list[Alert]:
    """The alerts, in order, each lower one marked with the first alert that inhibits it."""
    out: list[Alert] = []
    for alert in alerts:
        over = next(
            (
                other
                for other in alerts
                if alert.rule in inhibitions.get(other.rule, ())
                and not set(alert.evidence).isdisjoint(other.evidence)
            ),
            None,
        )
        out.append(alert if over is None else replace(alert, inhibited_by=over.alert_id))
    return out
