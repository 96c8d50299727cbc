"""Domain events back to their wire form (the inbound contract's JSON), for ``session_events``,
and the chained records that vouch for what is stored there.

``decode_event(event_to_json(e)) == e`` for every event the contract accepts, so the stored
payload goes back through the same contract code as live ingest when a form is built.

**Content records.** Every ``session_events`` row the log stores is vouched for by an
``event.stored`` audit record (a service kind, see ``chain.py``) appended in the same
transaction: one record per session and write, ``detail = {"events": {event_id: SHA-256 of
the stored payload text}}``. The form and timeline use only rows whose payload hashes to the
digest of a record whose own hash checks out; ``audit verify`` holds every row to its record
and every record to its rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Final, cast

import orjson

from remsguard.adapters.storage.chain import EVENT_STORED
from remsguard.domain.decisions import AuditKind, AuditRecord, stable_id
from remsguard.domain.events import Event

__all__ = [
    "StoredEvent",
    "content_digest",
    "content_records",
    "digests_of",
    "event_to_json",
    "event_to_wire",
]

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


def content_digest(payload: str) -> str:
    """SHA-256 (hex) of a stored event's payload text, as ``event.stored`` records carry it."""
    return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """A ``session_events`` row as written (what its content record is made of)."""

    session_id: str
    event_id: str
    clinic_id: str
    occurred_at: datetime
    payload: str


def content_records(stored: Iterable[StoredEvent]) -> list[AuditRecord]:
    """The ``event.stored`` records of newly stored rows: one per (session, clinic)."""
    groups: dict[tuple[str, str], dict[str, str]] = {}
    for row in stored:
        groups.setdefault((row.session_id, row.clinic_id), {})[row.event_id] = content_digest(
            row.payload
        )
    return [
        AuditRecord(
            record_id=stable_id(EVENT_STORED, session_id, clinic_id, *sorted(digests)),
            kind=cast(AuditKind, EVENT_STORED),
            subject_id=session_id,
            session_id=session_id,
            clinic_id=clinic_id,
            occurred_at=None,
            detail={"events": digests},
        )
        for (session_id, clinic_id), digests in groups.items()
    ]


def digests_of(detail: Mapping[str, Any]) -> dict[str, str]:
    """The event id -> digest map of an ``event.stored`` record's detail ({} if malformed)."""
    events = detail.get("events")
    if not isinstance(events, dict):
        return {}
    return {str(k): v for k, v in events.items() if isinstance(v, str)}
