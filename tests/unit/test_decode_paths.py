"""`decode_event` tries a cheaper accept path first and falls back to the full contract.

Property: the accept path never accepts what the full contract rejects, and when both accept
they build the same domain event. Inputs are valid events with fields mutated, dropped or
added, so most land near the contract's edges (ranges, pairs, types, unknown keys).
"""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from remsguard.contract import decode
from remsguard.contract.decode import decode_event
from remsguard.domain.decisions import Rejection

VALID: dict[str, dict[str, Any]] = {
    "session.opened": {
        "patient_ref": "pt-1",
        "protocol": "ketamine-iv",
        "concomitant_medications": ["opioid"],
    },
    "vitals.recorded": {"systolic": 120, "diastolic": 80, "spo2": 97, "heart_rate": 70},
    "dose.administered": {"drug": "esketamine", "route": "intranasal", "dose_mg": 56},
    "assessment.recorded": {"sedation_moaas": 4, "dissociation": True},
    "session.discharged": {"staff_id": "rn-1", "clinically_stable": True},
}
DATA_KEYS = sorted({key for data in VALID.values() for key in data} | {"respiratory_rate", "x"})

values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 400),
    st.floats(-10, 400, allow_nan=False),
    st.sampled_from(["", "ketamine", "opioid", "maoi", "iv", "esketamine", "12"]),
    st.lists(st.sampled_from(["opioid", "maoi", "tea", 3]), max_size=3),
)


@st.composite
def near_valid_events(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(sorted(VALID)))
    data = dict(VALID[kind])
    for key in draw(st.lists(st.sampled_from(sorted(data)), max_size=2, unique=True)):
        del data[key]
    for key in draw(st.lists(st.sampled_from(DATA_KEYS), max_size=2, unique=True)):
        data[key] = draw(values)
    doc: dict[str, Any] = {
        "event_id": draw(st.sampled_from(["e1"] * 9 + [""])),
        "type": kind,
        "session_id": "s1",
        "clinic_id": "c1",
        "occurred_at": draw(
            st.sampled_from(["2026-11-23T09:00:00Z"] * 8 + ["2026-11-23T09:00:00", "yesterday"])
        ),
        "data": data,
    }
    if draw(st.booleans()):
        doc["device_id"] = draw(st.sampled_from(["cuff-1"] * 3 + ["", None, 7]))
    return orjson.dumps(doc)


@settings(max_examples=1500, deadline=None)
@given(near_valid_events())
def test_the_accept_path_never_accepts_what_the_full_contract_rejects(raw: bytes) -> None:
    try:
        fast = decode._accept_json(raw)
    except ValidationError:
        fast = None
    try:
        full = decode._validate_json(raw)
    except ValidationError:
        full = None
    if fast is not None:
        assert full is not None, f"accept path took what the contract rejects: {raw!r}"
        assert fast == full
    outcome = decode_event(raw)
    assert isinstance(outcome, Rejection) == (full is None)


def test_both_paths_are_exercised() -> None:
    valid = orjson.dumps(
        {
            "event_id": "e1",
            "type": "vitals.recorded",
            "session_id": "s1",
            "clinic_id": "c1",
            "occurred_at": "2026-11-23T09:00:00Z",
            "data": {"systolic": 120, "diastolic": 80},
        }
    )
    assert decode._accept_json(valid) == decode._validate_json(valid)
    out_of_range = valid.replace(b"120", b"400")
    assert isinstance(decode_event(out_of_range), Rejection)
