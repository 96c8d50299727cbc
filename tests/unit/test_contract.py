"""The inbound event contract: decoding, rejection reasons, and the outbound wire forms."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from remsguard.contract.decode import MAX_EVENT_BYTES, RejectionReason, decode_event
from remsguard.contract.events import EventBase, EventCreate
from remsguard.contract.outbound import (
    AlertPublic,
    AlertWithdrawalPublic,
    AuditRecordPublic,
    RejectionPublic,
    alert_from_json,
    alert_to_json,
    alerts_message_from_json,
    audit_record_to_json,
    rejection_to_json,
    withdrawal_to_json,
)
from remsguard.domain.decisions import (
    Alert,
    AuditKind,
    AuditRecord,
    Rejection,
    Severity,
    Withdrawal,
    WithdrawalReason,
    alert_withdrawn,
    withdrawal_of,
)
from remsguard.domain.events import (
    AssessmentRecorded,
    DoseAdministered,
    Event,
    Medication,
    SessionDischarged,
    SessionOpened,
    VitalsRecorded,
)

T0 = "2026-11-23T09:00:00Z"
T0_DT = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)

VALID_DATA: dict[str, dict[str, Any]] = {
    "session.opened": {"patient_ref": "p-1", "concomitant_medications": ["opioid", "maoi"]},
    "vitals.recorded": {
        "systolic": 120,
        "diastolic": 80,
        "heart_rate": 72.5,
        "spo2": 97,
        "respiratory_rate": 14,
    },
    "dose.administered": {
        "drug": "esketamine",
        "route": "intranasal",
        "dose_mg": 56,
        "lot_number": "L-7",
    },
    "assessment.recorded": {
        "sedation_moaas": 4,
        "dissociation": True,
        "respiratory_depression": False,
    },
    "session.discharged": {"staff_id": "nurse-7", "clinically_stable": True},
}


def event(type_: str = "vitals.recorded", data: Any = None, **envelope: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "event_id": "e-1",
        "type": type_,
        "session_id": "s-1",
        "clinic_id": "c-1",
        "occurred_at": T0,
        "device_id": "d-1",
        "data": VALID_DATA[type_] if data is None else data,
    }
    doc.update(envelope)
    return doc


def raw(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def decode(doc: Any) -> Event | Rejection:
    return decode_event(raw(doc))


def reason_of(doc_or_raw: Any) -> str:
    result = decode_event(doc_or_raw) if isinstance(doc_or_raw, bytes | str) else decode(doc_or_raw)
    assert isinstance(result, Rejection), f"expected a rejection, got {result!r}"
    return result.reason


# --------------------------------------------------------------------------- valid events

ENVELOPE: dict[str, Any] = {
    "event_id": "e-1",
    "session_id": "s-1",
    "clinic_id": "c-1",
    "occurred_at": T0_DT,
    "device_id": "d-1",
}


@pytest.mark.parametrize(
    ("type_", "expected"),
    [
        (
            "session.opened",
            SessionOpened(
                **ENVELOPE,
                patient_ref="p-1",
                protocol=None,
                concomitant_medications=(Medication.OPIOID, Medication.MAOI),
            ),
        ),
        (
            "vitals.recorded",
            VitalsRecorded(
                **ENVELOPE,
                systolic=120.0,
                diastolic=80.0,
                heart_rate=72.5,
                spo2=97.0,
                respiratory_rate=14.0,
            ),
        ),
        (
            "dose.administered",
            DoseAdministered(
                **ENVELOPE, drug="esketamine", route="intranasal", dose_mg=56.0, lot_number="L-7"
            ),
        ),
        (
            "assessment.recorded",
            AssessmentRecorded(
                **ENVELOPE, sedation_moaas=4, dissociation=True, respiratory_depression=False
            ),
        ),
        (
            "session.discharged",
            SessionDischarged(**ENVELOPE, staff_id="nurse-7", clinically_stable=True),
        ),
    ],
)
def test_valid_event_of_every_type_decodes_to_its_domain_class(type_: str, expected: Event) -> None:
    result = decode(event(type_))
    assert type(result) is type(expected)
    assert result == expected
    assert isinstance(result, Event)
    assert result.type == type_
    assert result.occurred_at.utcoffset() == timedelta(0)


def test_medications_are_enum_members_in_a_tuple() -> None:
    result = decode(event("session.opened"))
    assert isinstance(result, SessionOpened)
    assert isinstance(result.concomitant_medications, tuple)
    assert all(type(m) is Medication for m in result.concomitant_medications)


def test_optional_fields_take_their_defaults() -> None:
    doc = event("session.opened", {"patient_ref": "p"})
    del doc["device_id"]
    result = decode(doc)
    assert result == SessionOpened(
        event_id="e-1", session_id="s-1", clinic_id="c-1", occurred_at=T0_DT, patient_ref="p"
    )
    assert decode(event("assessment.recorded", {})) == AssessmentRecorded(
        **ENVELOPE
    )  # all assessment fields are optional
    vitals = decode(event("vitals.recorded", {"spo2": 91}))
    assert isinstance(vitals, VitalsRecorded)
    assert vitals.spo2 == 91.0
    assert not vitals.is_bp_reading


def test_offsets_are_kept_and_the_instant_is_exact() -> None:
    result = decode(event(occurred_at="2026-11-23T10:30:00.250+01:30"))
    assert isinstance(result, Event)
    assert result.occurred_at.utcoffset() == timedelta(hours=1, minutes=30)
    assert result.occurred_at == datetime(2026, 11, 23, 9, 0, 0, 250000, tzinfo=UTC)


def test_strings_are_kept_exactly_and_envelope_extras_are_ignored() -> None:
    doc = event("session.discharged", {"staff_id": " nurse 7 ", "clinically_stable": False})
    doc["trace_id"] = "ignored"
    result = decode(doc)
    assert isinstance(result, SessionDischarged)
    assert result.staff_id == " nurse 7 "
    assert result.clinically_stable is False


def test_str_input_is_accepted() -> None:
    assert isinstance(decode_event(raw(event()).decode()), VitalsRecorded)


# --------------------------------------------------------------------------- rejections

REQUIRED_ENVELOPE = ("event_id", "type", "session_id", "clinic_id", "occurred_at", "data")


def without(doc: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != key}


def data_without(type_: str, key: str) -> dict[str, Any]:
    return event(type_, without(VALID_DATA[type_], key))


R = RejectionReason

INVALID_CASES: list[tuple[str, Any, str]] = [
    ("empty input", b"", R.INVALID_JSON),
    ("not json", b"not json", R.INVALID_JSON),
    ("truncated json", raw(event())[:-1], R.INVALID_JSON),
    ("trailing garbage", raw(event()) + b" x", R.INVALID_JSON),
    ("invalid utf-8", b'{"event_id": "\xff"}', R.INVALID_JSON),
    ("lone surrogate escape", b'{"event_id": "\\ud800"}', R.INVALID_JSON),
    ("json array", b"[]", R.NOT_AN_OBJECT),
    ("json number", b"42", R.NOT_AN_OBJECT),
    ("json string", b'"event"', R.NOT_AN_OBJECT),
    ("json null", b"null", R.NOT_AN_OBJECT),
    *[(f"missing {k}", without(event(), k), R.MISSING_FIELD) for k in REQUIRED_ENVELOPE],
    ("missing patient_ref", data_without("session.opened", "patient_ref"), R.MISSING_FIELD),
    ("missing drug", data_without("dose.administered", "drug"), R.MISSING_FIELD),
    ("missing route", data_without("dose.administered", "route"), R.MISSING_FIELD),
    ("missing dose_mg", data_without("dose.administered", "dose_mg"), R.MISSING_FIELD),
    ("missing staff_id", data_without("session.discharged", "staff_id"), R.MISSING_FIELD),
    (
        "missing clinically_stable",
        data_without("session.discharged", "clinically_stable"),
        R.MISSING_FIELD,
    ),
    ("systolic without diastolic", event(data={"systolic": 120}), R.MISSING_FIELD),
    ("diastolic without systolic", event(data={"diastolic": 80}), R.MISSING_FIELD),
    (
        "systolic with null diastolic",
        event(data={"systolic": 120, "diastolic": None}),
        "missing_field",
    ),
    ("empty vitals", event(data={}), R.MISSING_FIELD),
    ("all-null vitals", event(data={"spo2": None}), R.MISSING_FIELD),
    ("unknown type", event(type="vitals.measured"), R.UNKNOWN_TYPE),
    ("non-string type", event(type=5), R.UNKNOWN_TYPE),
    ("null type", event(type=None), R.UNKNOWN_TYPE),
    ("naive time", event(occurred_at="2026-11-23T09:00:00"), R.INVALID_TIME),
    ("garbage time", event(occurred_at="yesterday"), R.INVALID_TIME),
    ("date only", event(occurred_at="2026-11-23"), R.INVALID_TIME),
    ("impossible date", event(occurred_at="2026-02-30T09:00:00Z"), R.INVALID_TIME),
    ("offset of 24h", event(occurred_at="2026-11-23T09:00:00+24:00"), R.INVALID_TIME),
    ("numeric time", event(occurred_at=1700000000), R.INVALID_TIME),
    ("empty time", event(occurred_at=""), R.INVALID_TIME),
    ("systolic == diastolic", event(data={"systolic": 90, "diastolic": 90}), R.INVALID_VALUE),
    ("systolic < diastolic", event(data={"systolic": 80, "diastolic": 90}), R.INVALID_VALUE),
    (
        "bad drug",
        event("dose.administered", {**VALID_DATA["dose.administered"], "drug": "x"}),
        R.INVALID_VALUE,
    ),
    (
        "bad route",
        event("dose.administered", {**VALID_DATA["dose.administered"], "route": "IV"}),
        R.INVALID_VALUE,
    ),
    (
        "bad medication",
        event("session.opened", {"patient_ref": "p", "concomitant_medications": ["aspirin"]}),
        R.INVALID_VALUE,
    ),
    (
        "medications not a list",
        event("session.opened", {"patient_ref": "p", "concomitant_medications": "opioid"}),
        R.INVALID_VALUE,
    ),
    ("extra data key", event(data={"spo2": 97, "temperature": 37}), R.INVALID_VALUE),
    (
        "extra data key on discharge",
        event("session.discharged", {**VALID_DATA["session.discharged"], "note": "ok"}),
        R.INVALID_VALUE,
    ),
    ("data not an object", event(data=[1]), R.INVALID_VALUE),
    ("empty event_id", event(event_id=""), R.INVALID_VALUE),
    ("empty session_id", event(session_id=""), R.INVALID_VALUE),
    ("empty clinic_id", event(clinic_id=""), R.INVALID_VALUE),
    ("empty device_id", event(device_id=""), R.INVALID_VALUE),
    ("numeric event_id", event(event_id=7), R.INVALID_VALUE),
    ("empty patient_ref", event("session.opened", {"patient_ref": ""}), R.INVALID_VALUE),
    ("string number", event(data={"spo2": "97"}), R.INVALID_VALUE),
    ("bool as number", event(data={"spo2": True}), R.INVALID_VALUE),
    ("moaas float", event("assessment.recorded", {"sedation_moaas": 3.0}), R.INVALID_VALUE),
    ("moaas string", event("assessment.recorded", {"sedation_moaas": "3"}), R.INVALID_VALUE),
    ("bool as int", event("assessment.recorded", {"dissociation": 1}), R.INVALID_VALUE),
    (
        "NaN",
        b'{"event_id":"e","type":"vitals.recorded","session_id":"s","clinic_id":"c",'
        b'"occurred_at":"2026-11-23T09:00:00Z","data":{"spo2":NaN}}',
        R.INVALID_VALUE,
    ),
    (
        "Infinity dose",
        b'{"event_id":"e","type":"dose.administered","session_id":"s",'
        b'"clinic_id":"c","occurred_at":"2026-11-23T09:00:00Z","data":{"drug":"ketamine",'
        b'"route":"iv","dose_mg":Infinity}}',
        R.INVALID_VALUE,
    ),
    ("too large", b'{"pad":"' + b"x" * MAX_EVENT_BYTES + b'"}', R.TOO_LARGE),
    ("too large str", '{"pad":"' + "é" * (MAX_EVENT_BYTES // 2) + '"}', R.TOO_LARGE),
]

# Every plausible-range bound, just inside (accepted) and just outside (out_of_range).
RANGES: list[tuple[str, str, float, float]] = [
    # (type, field, low, high)
    ("vitals.recorded", "systolic", 40, 300),
    ("vitals.recorded", "diastolic", 20, 200),
    ("vitals.recorded", "heart_rate", 20, 300),
    ("vitals.recorded", "spo2", 50, 100),
    ("vitals.recorded", "respiratory_rate", 0, 80),
    ("assessment.recorded", "sedation_moaas", 0, 5),
]


def with_value(type_: str, field: str, value: float) -> dict[str, Any]:
    if field == "systolic":
        return event(type_, {"systolic": value, "diastolic": 30})
    if field == "diastolic":
        return event(type_, {"systolic": 250, "diastolic": value})
    return event(type_, {field: value})


def _bound_cases() -> tuple[list[Any], list[Any]]:
    inside, outside = [], []
    for type_, field, low, high in RANGES:
        step: float = 1 if field == "sedation_moaas" else 0.001
        for bound, value in [(f"{field}={low}", low), (f"{field}={high}", high)]:
            inside.append(pytest.param(with_value(type_, field, value), id=bound))
        inside.append(pytest.param(with_value(type_, field, low + step), id=f"{field} low+"))
        inside.append(pytest.param(with_value(type_, field, high - step), id=f"{field} high-"))
        outside.append(pytest.param(with_value(type_, field, low - step), id=f"{field} low-"))
        outside.append(pytest.param(with_value(type_, field, high + step), id=f"{field} high+"))
    for dose in (0.001, 56, 1e6):
        inside.append(
            pytest.param(
                event("dose.administered", {"drug": "ketamine", "route": "iv", "dose_mg": dose}),
                id=f"dose_mg={dose}",
            )
        )
    for dose in (0, -0.001, -50):
        outside.append(
            pytest.param(
                event("dose.administered", {"drug": "ketamine", "route": "iv", "dose_mg": dose}),
                id=f"dose_mg={dose}",
            )
        )
    return inside, outside


INSIDE, OUTSIDE = _bound_cases()


@pytest.mark.parametrize(
    ("doc", "expected"), [pytest.param(d, r, id=name) for name, d, r in INVALID_CASES]
)
def test_invalid_event_is_rejected_with_its_reason(doc: Any, expected: str) -> None:
    result = decode_event(doc) if isinstance(doc, bytes | str) else decode(doc)
    assert isinstance(result, Rejection)
    assert result.reason == expected
    assert result.reason in set(RejectionReason)
    assert result.detail


@pytest.mark.parametrize("doc", INSIDE)
def test_value_just_inside_a_range_is_accepted(doc: dict[str, Any]) -> None:
    assert isinstance(decode(doc), Event)


@pytest.mark.parametrize("doc", OUTSIDE)
def test_value_just_outside_a_range_is_out_of_range(doc: dict[str, Any]) -> None:
    assert reason_of(doc) == RejectionReason.OUT_OF_RANGE


def test_rejection_carries_the_ids_it_could_read() -> None:
    result = decode(event(data={"systolic": 400, "diastolic": 80}))
    assert result == Rejection(
        reason="out_of_range",
        detail="data.systolic: Input should be less than or equal to 300",
        event_id="e-1",
        session_id="s-1",
        clinic_id="c-1",
    )
    partial = decode({"event_id": "e-9", "session_id": 3, "clinic_id": ""})
    assert isinstance(partial, Rejection)
    assert (partial.event_id, partial.session_id, partial.clinic_id) == ("e-9", None, None)
    not_json = decode_event(b"nope")
    assert isinstance(not_json, Rejection)
    assert (not_json.reason, not_json.event_id) == ("invalid_json", None)


def test_precedence_when_several_things_are_wrong() -> None:
    # a missing field beats a bad time, which beats a bad value, which beats a range error
    doc = event(occurred_at="2026-11-23T09:00:00", data={"systolic": 999, "diastolic": 80})
    assert reason_of(doc) == "invalid_time"
    assert reason_of(without(doc, "clinic_id")) == "missing_field"
    doc = event(data={"systolic": 999, "diastolic": 80, "spo2": "high"})
    assert reason_of(doc) == "invalid_value"
    assert reason_of(event(type="nope", occurred_at="bad")) == "unknown_type"


def test_details_are_short_and_name_the_field() -> None:
    result = decode(without(event(), "session_id"))
    assert isinstance(result, Rejection)
    assert result.detail == "session_id: Field required"
    result = decode(without(event(), "type"))
    assert isinstance(result, Rejection)
    assert result.detail == "type: Field required"
    long_type = decode(event(type="x" * 10_000))
    assert isinstance(long_type, Rejection)
    assert len(long_type.detail) <= 200


# --------------------------------------------------------------------------- fast path vs models

_REFERENCE: TypeAdapter[EventBase] = TypeAdapter(EventCreate)


def reference_decode(data: bytes) -> Event | None:
    """The straightforward path: wire model, then `to_domain()`."""
    try:
        return _REFERENCE.validate_json(data).to_domain()
    except ValidationError:
        return None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)

vital = st.one_of(st.integers(-10, 400), st.floats(-10, 400, allow_nan=False), st.none())
data_strategies: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "session.opened": st.fixed_dictionaries(
        {"patient_ref": st.text(max_size=5)},
        optional={
            "protocol": st.text(max_size=5) | st.none(),
            "concomitant_medications": st.lists(
                st.sampled_from([*(m.value for m in Medication), "aspirin"]), max_size=3
            ),
        },
    ),
    "vitals.recorded": st.fixed_dictionaries(
        {},
        optional={
            k: vital for k in ("systolic", "diastolic", "heart_rate", "spo2", "respiratory_rate")
        },
    ),
    "dose.administered": st.fixed_dictionaries(
        {
            "drug": st.sampled_from(["esketamine", "ketamine", "other"]),
            "route": st.sampled_from(["intranasal", "iv", "im", "sublingual", "oral", "x"]),
            "dose_mg": st.floats(-1, 200, allow_nan=False) | st.integers(-1, 200),
        },
        optional={"lot_number": st.text(max_size=3) | st.none()},
    ),
    "assessment.recorded": st.fixed_dictionaries(
        {},
        optional={
            "sedation_moaas": st.integers(-1, 6) | st.floats(0, 5) | st.none(),
            "dissociation": st.booleans() | st.none() | st.integers(0, 1),
            "respiratory_depression": st.booleans() | st.none(),
        },
    ),
    "session.discharged": st.fixed_dictionaries(
        {"staff_id": st.text(max_size=3), "clinically_stable": st.booleans() | st.none()}
    ),
}
times = st.one_of(
    st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5))])).map(
        datetime.isoformat
    ),
    st.datetimes().map(datetime.isoformat),
    st.sampled_from([T0, "2026-11-23T09:00:00+05:30", "garbage", ""]),
)
near_valid_events = st.sampled_from(sorted(data_strategies)).flatmap(
    lambda t: st.fixed_dictionaries(
        {
            "event_id": st.text(max_size=4),
            "type": st.just(t),
            "session_id": st.text(max_size=4),
            "clinic_id": st.just("c"),
            "occurred_at": times,
            "data": data_strategies[t],
        },
        optional={"device_id": st.text(max_size=3) | st.none(), "extra": json_values},
    )
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(near_valid_events)
def test_fast_decoder_agrees_with_the_wire_models(doc: dict[str, Any]) -> None:
    data = json.dumps(doc).encode()  # json, not orjson: integers beyond 64 bits are valid JSON
    result = decode_event(data)
    expected = reference_decode(data)
    if expected is None:
        assert isinstance(result, Rejection)
    else:
        assert result == expected
        assert type(result) is type(expected)


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    assert isinstance(decode_event(data), Event | Rejection)


@settings(max_examples=300)
@given(st.text(max_size=300))
def test_arbitrary_text_never_raises(text: str) -> None:
    assert isinstance(decode_event(text), Event | Rejection)


@settings(max_examples=300)
@given(json_values | st.dictionaries(st.sampled_from(REQUIRED_ENVELOPE), json_values))
def test_arbitrary_json_never_raises(value: Any) -> None:
    result = decode_event(json.dumps(value).encode())
    assert isinstance(result, Event | Rejection)
    if isinstance(result, Rejection):
        assert result.reason in set(RejectionReason)


def test_pathological_inputs_never_raise() -> None:
    for data in [b"[" * 100_000, b"{" * 5000, b'{"a":' * 300 + b"1" + b"}" * 300, b"\x00"]:
        assert isinstance(decode_event(data), Rejection)


# --------------------------------------------------------------------------- outbound

ALERT = Alert(
    alert_id="a1",
    rule="BP_CRISIS",
    severity=Severity.CRITICAL,
    session_id="s-1",
    clinic_id="c-1",
    triggered_at=datetime(2026, 11, 23, 10, 30, tzinfo=timezone(timedelta(hours=1))),
    message="Blood pressure 182/95 at or above crisis level",
    evidence=("e-1", "e-2"),
    protocol="spravato-rems",
    protocol_version="abc123",
)


def test_alert_json_is_compact_ordered_and_utc_z() -> None:
    data = alert_to_json(ALERT)
    assert data == (
        b'{"alert_id":"a1","rule":"BP_CRISIS","severity":"critical","session_id":"s-1",'
        b'"clinic_id":"c-1","triggered_at":"2026-11-23T09:30:00Z",'
        b'"message":"Blood pressure 182/95 at or above crisis level","evidence":["e-1","e-2"],'
        b'"protocol":"spravato-rems","protocol_version":"abc123","inhibited_by":null}'
    )
    assert data == AlertPublic.from_domain(ALERT).model_dump_json().encode()
    assert list(orjson.loads(data)) == list(AlertPublic.model_fields)


def test_alert_round_trips() -> None:
    back = alert_from_json(alert_to_json(ALERT))
    assert back == ALERT
    assert back.severity is Severity.CRITICAL
    with pytest.raises(ValidationError):
        alert_from_json(b'{"alert_id":"a1"}')


WITHDRAWAL = Withdrawal(
    alert_id="a1",
    rule="BP_CRISIS",
    session_id="s-1",
    clinic_id="c-1",
    withdrawn_at=datetime(2026, 11, 23, 11, 0, tzinfo=UTC),
    reason=WithdrawalReason.DISCHARGE_ARRIVED_LATE,
    detail="the reading came after the discharge",
    evidence=("d-1",),
)


def test_withdrawal_json_is_the_models_and_tells_itself_from_an_alert() -> None:
    data = withdrawal_to_json(WITHDRAWAL)
    assert data == AlertWithdrawalPublic.model_validate_json(data).model_dump_json().encode()
    assert list(orjson.loads(data)) == list(AlertWithdrawalPublic.model_fields)
    assert alerts_message_from_json(data) == WITHDRAWAL
    assert alerts_message_from_json(alert_to_json(ALERT)) == ALERT
    # An alert whose evidence or message says "kind" is still an alert.
    tricky = replace(ALERT, message='"kind": "alert.withdrawn"', evidence=("kind",))
    assert alerts_message_from_json(alert_to_json(tricky)) == tricky
    for bad in (b"not json", b"[]", b'{"kind":"alert.withdrawn","alert_id":"a1"}', b"{}"):
        with pytest.raises(ValueError):
            alerts_message_from_json(bad)


def test_a_withdrawal_survives_its_audit_record() -> None:
    assert withdrawal_of(alert_withdrawn(WITHDRAWAL)) == WITHDRAWAL


def test_audit_record_json_is_deterministic() -> None:
    rec = AuditRecord(
        record_id="r1",
        kind=AuditKind.ALERT_RAISED,
        subject_id="a1",
        session_id="s-1",
        clinic_id=None,
        occurred_at=datetime(2026, 11, 23, 9, 0, 0, 500, tzinfo=UTC),
        detail={"z": 1, "a": ["x"], "when": T0_DT, "sev": Severity.WARNING},
    )
    data = audit_record_to_json(rec)
    assert data == (
        b'{"record_id":"r1","kind":"alert.raised","subject_id":"a1","session_id":"s-1",'
        b'"clinic_id":null,"occurred_at":"2026-11-23T09:00:00.000500Z",'
        b'"detail":{"a":["x"],"sev":"warning","when":"2026-11-23T09:00:00Z","z":1}}'
    )
    assert data == AuditRecordPublic.from_domain(rec).model_dump_json().encode()
    reordered = AuditRecord(
        record_id="r1",
        kind=AuditKind.ALERT_RAISED,
        subject_id="a1",
        session_id="s-1",
        clinic_id=None,
        occurred_at=rec.occurred_at,
        detail=dict(reversed(list(rec.detail.items()))),
    )
    assert audit_record_to_json(reordered) == data
    empty = AuditRecord(
        record_id="r2",
        kind=AuditKind.EVENT_REJECTED,
        subject_id="x",
        session_id=None,
        clinic_id=None,
        occurred_at=None,
    )
    assert audit_record_to_json(empty).endswith(b'"occurred_at":null,"detail":{}}')


def test_rejection_json() -> None:
    rej = decode(event(data={"spo2": 101}))
    assert isinstance(rej, Rejection)
    data = rejection_to_json(rej, line=3)
    assert data == RejectionPublic.from_domain(rej, line=3).model_dump_json().encode()
    assert orjson.loads(data) == {
        "reason": "out_of_range",
        "detail": "data.spo2: Input should be less than or equal to 100",
        "event_id": "e-1",
        "session_id": "s-1",
        "clinic_id": "c-1",
        "line": 3,
    }
