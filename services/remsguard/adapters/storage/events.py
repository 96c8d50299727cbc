"""Domain events back to their wire form (the inbound contract's JSON), for ``session_events``.

``decode_event(event_to_json(e)) == e`` for every event the contract accepts, so the stored
payload goes back through the same contract code as live ingest when a form is built.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Final

import orjson

from remsguard.domain.events import Event

__all__ = ["event_to_json", "event_to_wire"]

_ENVELOPE: Final = frozenset({"event_id", "session_id", "clinic_id", "occurred_at", "device_id"})
_OPTS: Final = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC


def event_to_wire(event: Event) -> dict[str, Any]:
    data = {f.name: getattr(event, f.name) for f in fields(event) if f.name not in _ENVELOPE}
    data = {k: (list(v) if isinstance(v, tuple) else v) for k, v in data.items() if v is not None}
    wire: dict[str, Any] = {
        "event_id": event.event_id,
        "type": event.type,
        "session_id": event.session_id,
        "clinic_id": event.clinic_id,
        "occurred_at": event.occurred_at,
        "data": data,
    }
    if event.device_id is not None:
        wire["device_id"] = event.device_id
    return wire


def event_to_json(event: Event) -> bytes:
    return orjson.dumps(event_to_wire(event), option=_OPTS)
