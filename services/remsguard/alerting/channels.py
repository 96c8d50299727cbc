"""Delivery channels behind one small interface.

A `Notification` is one thing to tell people about an alert: it was raised (`alert`), an
escalation step came due (`escalation`, with its `target`), or its lifecycle changed
(`acknowledged`, `resolved`), the engine took it back (`withdrawn`, with the reason), staff
shelved a warning (`shelved`, until when and why) or its shelf expired (`unshelved`: notified
again). A `Channel` delivers it somewhere; `deliver` never raises (a channel retries and
dead-letters on its own) and returns whether it got through.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal, Protocol

import orjson

from remsguard.domain.decisions import stable_id

__all__ = ["Channel", "Notification", "NotificationKind"]

NotificationKind = Literal[
    "alert", "escalation", "acknowledged", "resolved", "withdrawn", "shelved", "unshelved"
]
_OPTS: Final = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC


@dataclass(frozen=True, slots=True)
class Notification:
    kind: NotificationKind
    alert: dict[str, Any]  # the alert as `GET /v1/alerts` shows it (with lifecycle fields)
    created_at: datetime
    target: str = "clinic"  # who it is for: the clinic's staff, or an escalation target
    step: int | None = None  # escalation step index (0-based)
    by: str | None = None  # acknowledged/resolved: the staff principal id
    by_name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def alert_id(self) -> str:
        return str(self.alert["alert_id"])

    @property
    def clinic_id(self) -> str:
        return str(self.alert["clinic_id"])

    @property
    def notification_id(self) -> str:
        """Stable: a retried or re-derived notification keeps its id (receivers dedupe)."""
        return stable_id("notification", self.kind, self.alert_id, str(self.step), self.target)

    def payload(self) -> dict[str, Any]:
        return {
            "notification_id": self.notification_id,
            "kind": self.kind,
            "target": self.target,
            "step": self.step,
            "by": self.by,
            "by_name": self.by_name,
            "created_at": self.created_at.astimezone(UTC),
            "alert": self.alert,
            **self.extra,
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.payload(), option=_OPTS)


class Channel(Protocol):
    """Somewhere notifications go: `deliver` does not raise; True when delivered."""

    name: str

    async def deliver(self, notification: Notification) -> bool: ...

    async def aclose(self) -> None: ...
