"""Grouping of a patient's alert notifications (Alertmanager's `group_interval`, per session).

The first alert of a session goes out at once. Alerts of the same session raised within
`window` after a notification went out wait, and go out together at the end of the window as
one message listing them, most severe first. A critical alert never waits: it goes out at
once, carrying whatever of its session was waiting. The consoles are not grouped (they show
every card live); this is for the channels that interrupt people (webhook, pager, SMS).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Final

from remsguard.alerting.channels import Notification

__all__ = ["NotificationGroups"]

_RANK: Final = {"critical": 0, "warning": 1, "info": 2}


@dataclass(slots=True)
class _Group:
    sent_at: datetime
    waiting: list[Notification] = field(default_factory=list)


class NotificationGroups:
    def __init__(self, window: timedelta) -> None:
        self.window = window
        self._groups: dict[str, _Group] = {}

    def offer(self, note: Notification, now: datetime) -> list[Notification]:
        """The messages to send now for a new alert's notification (none: it waits)."""
        if self.window <= timedelta(0):
            return [note]
        session = str(note.alert.get("session_id", ""))
        group = self._groups.get(session)
        critical = note.alert.get("severity") == "critical"
        if group is None or critical or now - group.sent_at >= self.window:
            waiting = [] if group is None else group.waiting
            self._groups[session] = _Group(now)
            return [combine([*waiting, note])]
        group.waiting.append(note)
        return []

    def drop(self, alert_ids: set[str]) -> set[str]:
        """Take these alerts out of what is waiting (the engine withdrew them before they
        went out); returns the ones that were waiting."""
        dropped: set[str] = set()
        for group in self._groups.values():
            keep = [n for n in group.waiting if n.alert_id not in alert_ids]
            dropped |= {n.alert_id for n in group.waiting} - {n.alert_id for n in keep}
            group.waiting = keep
        return dropped

    def due(self, now: datetime) -> list[Notification]:
        """Messages whose window has ended; forgets sessions quiet for a whole window."""
        out: list[Notification] = []
        for session, group in list(self._groups.items()):
            if now - group.sent_at < self.window:
                continue
            if group.waiting:
                out.append(combine(group.waiting))
                self._groups[session] = _Group(now)
            else:
                del self._groups[session]
        return out


def combine(notes: list[Notification]) -> Notification:
    """One message for several alerts of a patient: the most severe leads (`alert`), and
    `group` lists every alert, most severe first."""
    if len(notes) == 1:
        return notes[0]
    ordered = sorted(notes, key=lambda n: _RANK.get(str(n.alert.get("severity")), 9))
    lead = ordered[0]
    return replace(lead, extra={**lead.extra, "group": [n.alert for n in ordered]})
