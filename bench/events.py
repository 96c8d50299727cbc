"""Deterministic synthetic clinic traffic for benchmarks: many interleaved sessions."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson

START = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def _stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def session_events(index: int, rng: random.Random) -> list[tuple[datetime, dict[str, object]]]:
    """One session: open, pre-dose BP, dose, vitals every ~2 minutes, assessments, discharge."""
    sid, clinic = f"sess-{index:07d}", f"clinic-{index % 40:02d}"
    start = START + timedelta(minutes=rng.randrange(0, 60 * 24 * 30))
    dose_at = start + timedelta(minutes=20)
    n = 0

    def event(
        at: datetime, kind: str, data: dict[str, object]
    ) -> tuple[datetime, dict[str, object]]:
        nonlocal n
        n += 1
        return at, {
            "event_id": f"{sid}-{n:04d}",
            "type": kind,
            "session_id": sid,
            "clinic_id": clinic,
            "occurred_at": _stamp(at),
            "device_id": f"dev-{index % 7}",
            "data": data,
        }

    out = [event(start, "session.opened", {"patient_ref": f"pt-{rng.getrandbits(48):012x}"})]
    out.append(event(start + timedelta(minutes=10), "vitals.recorded", _vitals(rng, 0)))
    out.append(
        event(
            dose_at,
            "dose.administered",
            {"drug": "esketamine", "route": "intranasal", "dose_mg": 56},
        )
    )
    minute = 2
    while minute <= 126:
        data = _vitals(rng, minute)
        out.append(event(dose_at + timedelta(minutes=minute), "vitals.recorded", data))
        if minute % 30 == 0:
            moaas = 5 if minute > 60 else rng.choice([3, 4, 5, 5])
            out.append(
                event(
                    dose_at + timedelta(minutes=minute, seconds=30),
                    "assessment.recorded",
                    {"sedation_moaas": moaas, "dissociation": minute < 60},
                )
            )
        minute += 2
    out.append(
        event(
            dose_at + timedelta(minutes=127),
            "session.discharged",
            {"staff_id": "rn-1", "clinically_stable": True},
        )
    )
    return out


def _vitals(rng: random.Random, minute: int) -> dict[str, object]:
    peak = max(0.0, 1 - abs(minute - 40) / 120)
    systolic = round(118 + 35 * peak + rng.gauss(0, 8))
    diastolic = round(76 + 15 * peak + rng.gauss(0, 5))
    data: dict[str, object] = {
        "heart_rate": round(rng.gauss(78, 8)),
        "spo2": min(100, round(rng.gauss(97, 1.5))),
    }
    if minute % 10 == 0:
        data.update(systolic=systolic, diastolic=max(30, min(diastolic, systolic - 20)))
    return data


def generate(total: int, seed: int = 7, concurrent: int = 200) -> Iterator[bytes]:
    """At least `total` events as JSON lines, `concurrent` sessions interleaved by event time."""
    rng = random.Random(seed)
    produced, index = 0, 0
    while produced < total:
        batch: list[tuple[datetime, dict[str, object]]] = []
        for _ in range(concurrent):
            batch.extend(session_events(index, rng))
            index += 1
        batch.sort(key=lambda pair: (pair[0], pair[1]["event_id"]))
        for _, doc in batch:
            yield orjson.dumps(doc) + b"\n"
        produced += len(batch)
