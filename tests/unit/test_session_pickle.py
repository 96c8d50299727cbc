"""A session as the stream processor's changelog stores it: fast to write, and every earlier
shape still readable (a worker taking over reads what the one before it wrote)."""

from __future__ import annotations

import pickle
from dataclasses import fields
from datetime import UTC, datetime, timedelta

import orjson

from remsguard.bootstrap import build_engine
from remsguard.contract.decode import decode_event
from remsguard.domain.session import BPReading, Mark, Measurement, Session

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)

# Written by the code before rows were pickled as plain tuples (dataclass default state), for
# the session that `session()` builds.
BEFORE = bytes.fromhex(
    "8005954b030000000000008c1872656d7367756172642e646f6d61696e2e73657373696f6e948c0753657373696f6e9493942981944e7d94288c0a73657373696f6e5f6964948c027331948c09636c696e69635f6964948c026331948c0870726f746f636f6c948c0d737072617661746f2d72656d73948c0b70617469656e745f726566948c027031948c066f70656e656494888c0b6d656469636174696f6e7394288c1772656d7367756172642e646f6d61696e2e6576656e7473948c0a4d656469636174696f6e9493948c066f70696f6964948594529491948c047365656e948f94288c0473312d34948c0473312d33948c0473312d32948c0473312d31948c0473312d36948c0473312d3594908c05646f736573945d9468008c044d61726b9493948c086461746574696d65948c086461746574696d65949394430a07ea0b14090000000000948c1c707964616e7469635f636f72652e5f707964616e7469635f636f7265948c06547a496e666f9493944b008594529486945294681986948194618c0a64697363686172676573945d9468216824430a07ea0b140b0a0000000094682a86945294681c86948194618c06766974616c73945d942868216824430a07ea0b1408320000000094682a86945294681a8694819468216824430a07ea0b1409280000000094682a86945294681d86948194658c026270945d942868008c09425052656164696e6794939428683a681a47406040000000000047405540000000000074948194684528683f681d474067c00000000000474057c0000000000074948194658c0473706f32945d942868008c0b4d6561737572656d656e74949394683a681a47405840000000000087948194684d683f681d47405580000000000087948194658c1072657370697261746f72795f72617465945d94684d683a681a47402c00000000000087948194618c087365646174696f6e945d94684d6824430a07ea0b1409140000000094682a8694529468184b0387948194618c056669726564948f94288c0c42505f524953453a73312d35948c0e42505f4352495349533a73312d35948c1253504f325f435249544943414c3a73312d3594908c0a6761705f637572736f72944e8c097363686564756c6564946824430a07ea0b1409050000000094682a86945294758694622e"
)


def event(n: int, kind: str, minute: float, **data: object) -> bytes:
    at = (T0 + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return orjson.dumps(
        {"event_id": f"s1-{n}", "type": kind, "session_id": "s1", "clinic_id": "c1",
         "occurred_at": at, "data": data}
    )  # fmt: skip


def session() -> Session:
    engine = build_engine("spravato-rems")
    for raw in (
        event(1, "session.opened", -20, patient_ref="p1", concomitant_medications=["opioid"]),
        event(2, "vitals.recorded", -10, systolic=130, diastolic=85, spo2=97, respiratory_rate=14),
        event(3, "dose.administered", 0, drug="esketamine", route="intranasal", dose_mg=56),
        event(4, "assessment.recorded", 20, sedation_moaas=3, dissociation=True),
        event(5, "vitals.recorded", 40, systolic=190, diastolic=95, spo2=86),
        event(6, "session.discharged", 130, staff_id="rn", clinically_stable=True),
    ):
        decoded = decode_event(raw)
        assert not hasattr(decoded, "reason"), decoded
        engine.handle(decoded)  # type: ignore[arg-type]
    return engine.sessions["s1"]


def assert_same(got: Session, want: Session) -> None:
    for spec in fields(Session):
        assert getattr(got, spec.name) == getattr(want, spec.name), spec.name
    row_kinds = {
        "doses": Mark, "discharges": Mark, "vitals": Mark, "bp": BPReading,
        "spo2": Measurement, "respiratory_rate": Measurement, "sedation": Measurement,
    }  # fmt: skip
    for name, kind in row_kinds.items():
        rows = getattr(got, name)
        assert rows, name  # the fixture has rows of every kind
        assert all(type(row) is kind for row in rows), name  # not plain tuples


def test_a_session_round_trips_with_its_row_types() -> None:
    original = session()
    assert_same(pickle.loads(pickle.dumps(original, protocol=pickle.HIGHEST_PROTOCOL)), original)


def test_a_pickle_written_before_the_change_still_loads() -> None:
    assert_same(pickle.loads(BEFORE), session())


def test_rows_are_written_as_plain_tuples() -> None:
    state = session().__getstate__()
    assert all(type(row) is tuple for value in state if isinstance(value, list) for row in value)
    assert b"Mark" not in pickle.dumps(session(), protocol=pickle.HIGHEST_PROTOCOL)


def test_a_field_added_since_the_pickle_was_written_gets_its_default() -> None:
    state = session().__getstate__()
    restored = Session.__new__(Session)
    restored.__setstate__(state[:-6])  # as if the last six fields were added later
    assert restored.gap_cursor is None and restored.scheduled is None
    assert restored.observed == [] and restored.unstable == [] and restored.withdrawn == set()
    assert restored.raised_again == {}
    assert restored.bp == session().bp
