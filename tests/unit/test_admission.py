"""Issue 13: event times are inputs to validate, and a session belongs to its clinic.

- `EventTimeBounds` refuses events too far ahead of the receiver's clock or too old;
- the contract bounds `occurred_at` to 2000-2099 whatever the offset, so no datetime
  arithmetic downstream can overflow (property tests over the whole datetime range);
- the engine refuses an event naming a session of another clinic.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remsguard.bootstrap import load_protocols
from remsguard.contract.decode import RejectionReason, decode_event
from remsguard.domain import admission
from remsguard.domain.admission import EARLIEST, LATEST, EventTimeBounds
from remsguard.domain.decisions import Outcome, Rejection
from remsguard.domain.engine import MonitoringEngine
from remsguard.domain.events import DoseAdministered, SessionOpened, VitalsRecorded

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
BOUNDS = EventTimeBounds(max_future=timedelta(minutes=5), max_age=timedelta(days=30))


def _vitals(at: datetime, session: str = "s1", clinic: str = "c1", n: int = 1) -> VitalsRecorded:
    return VitalsRecorded(
        event_id=f"v{n}",
        session_id=session,
        clinic_id=clinic,
        occurred_at=at,
        systolic=250,
        diastolic=150,
    )


def test_an_event_ahead_of_the_skew_is_refused_and_one_within_it_is_not() -> None:
    assert BOUNDS.check(_vitals(NOW + timedelta(minutes=5)), NOW) is None
    refused = BOUNDS.check(_vitals(NOW + timedelta(minutes=5, seconds=1)), NOW)
    assert refused is not None and refused.reason == "occurred_in_future"
    assert (refused.event_id, refused.session_id, refused.clinic_id) == ("v1", "s1", "c1")


def test_an_event_older_than_the_horizon_is_refused_and_one_inside_it_is_not() -> None:
    assert BOUNDS.check(_vitals(NOW - timedelta(days=30)), NOW) is None
    refused = BOUNDS.check(_vitals(NOW - timedelta(days=30, seconds=1)), NOW)
    assert refused is not None and refused.reason == "too_old"


def test_every_reason_decided_after_the_contract_is_in_the_contracts_closed_list() -> None:
    codes = {
        value
        for name, value in vars(admission).items()
        if name.isupper() and isinstance(value, str)
    }
    assert codes <= {reason.value for reason in RejectionReason}


_OFFSETS = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)


def _wire(at: str, kind: str = "vitals.recorded") -> bytes:
    data = {"systolic": 120, "diastolic": 80} if kind == "vitals.recorded" else {}
    return orjson.dumps(
        {
            "type": kind,
            "event_id": "e",
            "session_id": "s",
            "clinic_id": "c",
            "occurred_at": at,
            "data": data,
        }
    )


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.datetimes(min_value=datetime.min, max_value=datetime.max, timezones=_OFFSETS))
def test_decode_never_raises_and_accepts_only_times_from_2000_to_2099(at: datetime) -> None:
    decoded = decode_event(_wire(at.isoformat()))
    if isinstance(decoded, Rejection):
        assert decoded.reason == "invalid_time"
        assert not EARLIEST <= at < LATEST
    else:
        assert EARLIEST <= decoded.occurred_at < LATEST


def test_decode_refuses_the_extremes_of_the_datetime_range() -> None:
    for at in ("0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59", "1999-12-31T23:59Z"):
        decoded = decode_event(_wire(at))
        assert isinstance(decoded, Rejection) and decoded.reason == "invalid_time", at
    assert not isinstance(decode_event(_wire("2099-12-31T23:59:59Z")), Rejection)
    assert not isinstance(decode_event(_wire("2000-01-01T00:00:00Z")), Rejection)


_EDGE = st.sampled_from([EARLIEST, LATEST - timedelta(microseconds=1)])
_INSIDE = st.datetimes(
    min_value=EARLIEST.replace(tzinfo=None),
    max_value=(LATEST - timedelta(microseconds=1)).replace(tzinfo=None),
    timezones=st.just(UTC),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(_EDGE, _INSIDE), min_size=1, max_size=6), st.integers(0, 3))
def test_the_engine_never_overflows_on_any_time_the_contract_accepts(
    times: list[datetime], shape: int
) -> None:
    """Sessions opened, dosed and read at the very edges of the accepted range, with every
    deadline decided (a clock up to 8 days past the last event: the longest protocol wait is
    7 days)."""
    engine = MonitoringEngine(load_protocols())
    for n, at in enumerate(times):
        session = f"s{n % 2}"
        events = [
            SessionOpened(event_id=f"o{n}", session_id=session, clinic_id="c", occurred_at=at,
                          patient_ref="p"),
            DoseAdministered(event_id=f"d{n}", session_id=session, clinic_id="c",
                             occurred_at=at, drug="esketamine", route="intranasal", dose_mg=56),
            _vitals(at, session, "c", n),
        ]  # fmt: skip
        for event in events[shape % 3 :]:
            engine.handle(event)
    latest = max(times)
    for session_id in ("s0", "s1"):
        engine.next_due(session_id)
        engine.readiness(session_id, latest)
    engine.advance_to(latest + timedelta(days=8))


def test_a_session_belongs_to_the_clinic_that_first_named_it() -> None:
    engine = MonitoringEngine(load_protocols())
    assert engine.handle(_vitals(NOW, "s1", "clinic-02", 1)).outcome is Outcome.ACCEPTED
    crossed = engine.handle(_vitals(NOW, "s1", "clinic-01", 2))
    assert crossed.outcome is Outcome.REJECTED and not crossed.alerts
    assert crossed.rejection is not None
    assert crossed.rejection.reason == "session_of_another_clinic"
    assert "v2" not in engine.sessions["s1"].seen
    # Its own clinic's next event is judged as ever (a case that must go through).
    assert engine.handle(_vitals(NOW, "s1", "clinic-02", 3)).outcome is Outcome.ACCEPTED


class _Producer:
    """Stands in for kafka-python's producer: records what would be sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None]] = []

    def send(self, topic: str, key: bytes | None = None, value: bytes = b"") -> None:
        self.sent.append((topic, key))


def test_the_device_client_refuses_an_event_time_the_service_would_refuse() -> None:
    from remsguard.client import DeviceClient, RefusedEvent

    producer = _Producer()
    client = DeviceClient("unused", producer=producer, now=lambda: NOW)
    ahead = _wire((NOW + timedelta(minutes=6)).isoformat())
    try:
        client.send(ahead)
    except RefusedEvent as exc:
        assert exc.reason == "occurred_in_future"
    else:
        raise AssertionError("a future-dated event was sent")
    client.send(_wire((NOW + timedelta(minutes=4)).isoformat()))  # within the skew: sent
    assert producer.sent == [("rems.vitals.v1", b"s")]
