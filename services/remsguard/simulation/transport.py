"""Delivery: when each event reaches the service, and what goes wrong on the way.

Every event arrives a few seconds after it happened. Faults, each at its configured rate:
- **reordered**: delivered late, by half to nearly all of the protocol's allowed lateness, so
  arrival order differs from event-time order but every event still arrives before any
  deadline it could affect is decided. `session.opened` is never held back (it picks the
  protocol), and a session's events of one type stay in event-time order among themselves:
  the engine's guarantee is for reordering across streams, and a device's own readings come
  in order.
- **duplicates**: the same bytes sent again up to 90 seconds later (a retry).
- **malformed**: an extra broken event from the same device, which the contract must reject:
  not JSON (truncated), a required field missing, or a reading out of the plausible range.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from random import Random
from typing import Any, Final

import orjson

from remsguard.contract.decode import RejectionReason as Reason
from remsguard.simulation.config import TransportRates
from remsguard.simulation.sessions import SessionPlan, SimEvent

EVENT: Final = "event"
DUPLICATE: Final = "duplicate"
MALFORMED: Final = "malformed"


@dataclass(frozen=True, slots=True)
class Delivery:
    arrival: datetime
    line: bytes  # one JSON document (or, for some malformed ones, not quite), no newline
    kind: str  # event | duplicate | malformed
    session_id: str
    event_time: datetime
    reason: str | None = None  # the rejection reason a malformed line must get


@dataclass(slots=True)
class TransportSummary:
    delayed: int = 0  # events held back within the lateness
    out_of_order: int = 0  # events that arrived after an event with a later event time
    duplicates: int = 0
    malformed: int = 0
    malformed_by_reason: Counter[str] = field(default_factory=Counter)


def deliver(
    plans: Sequence[SessionPlan], rates: TransportRates, rng: Random
) -> tuple[list[Delivery], TransportSummary]:
    """All deliveries in arrival order (ties in generation order), with what was done."""
    summary = TransportSummary()
    rows: list[tuple[datetime, int, Delivery]] = []

    def add(delivery: Delivery) -> None:
        rows.append((delivery.arrival, len(rows), delivery))

    for plan in plans:
        lateness = int(plan.lateness.total_seconds())
        stream_arrival: dict[str, datetime] = {}
        for event in plan.events:
            delay = rng.randint(0, 3)
            if event.type != "session.opened" and lateness >= 60 and rng.random() < rates.reorder:
                delay = rng.randint(lateness // 2, lateness - 20)
                summary.delayed += 1
            arrival = event.at + timedelta(seconds=delay)
            # Never overtake this session's earlier event of the same type; the earlier one was
            # itself delivered within the lateness, so this one still is.
            arrival = max(arrival, stream_arrival.get(event.type, arrival))
            stream_arrival[event.type] = arrival
            line = orjson.dumps(event.doc)
            add(Delivery(arrival, line, EVENT, plan.spec.session_id, event.at))
            if rng.random() < rates.duplicate:
                again = arrival + timedelta(seconds=rng.randint(1, 90))
                add(Delivery(again, line, DUPLICATE, plan.spec.session_id, event.at))
                summary.duplicates += 1
            if rng.random() < rates.malformed:
                reason, broken = _malformed(event, rng)
                when = arrival + timedelta(seconds=rng.randint(0, 30))
                add(Delivery(when, broken, MALFORMED, plan.spec.session_id, event.at, reason))
                summary.malformed += 1
                summary.malformed_by_reason[reason] += 1
    rows.sort(key=lambda row: (row[0], row[1]))
    deliveries = [row[2] for row in rows]
    latest: datetime | None = None
    for delivery in deliveries:
        if delivery.kind != EVENT:
            continue
        if latest is not None and delivery.event_time < latest:
            summary.out_of_order += 1
        latest = delivery.event_time if latest is None else max(latest, delivery.event_time)
    return deliveries, summary


def _malformed(event: SimEvent, rng: Random) -> tuple[str, bytes]:
    doc: dict[str, Any] = dict(event.doc)
    doc["event_id"] = f"{doc['event_id']}-x"
    # Each kind of break is named by the reason `decode_event` must give it.
    kind = rng.choice((Reason.INVALID_JSON, Reason.MISSING_FIELD, Reason.OUT_OF_RANGE)).value
    if kind == Reason.INVALID_JSON:
        whole = orjson.dumps(doc)
        return kind, whole[: rng.randint(1, len(whole) - 1)]  # any proper prefix of an object
    if kind == Reason.MISSING_FIELD:
        del doc[rng.choice(("occurred_at", "type", "data", "clinic_id"))]
        return kind, orjson.dumps(doc)
    doc["type"] = "vitals.recorded"
    doc["device_id"] = f"{doc['clinic_id']}-monitor-glitch"
    doc["data"] = rng.choice(
        (
            {"heart_rate": rng.randint(60, 90), "spo2": rng.randint(101, 127)},
            {"systolic": rng.randint(301, 399), "diastolic": rng.randint(60, 90)},
            {"heart_rate": rng.randint(301, 400)},
            {"respiratory_rate": rng.randint(81, 120)},
        )
    )
    return kind, orjson.dumps(doc)
