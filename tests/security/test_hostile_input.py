"""The hostile-input suite (issue 13): fuzz the ingest contract, in process and against a real
`remsguard up`, with a bounded number of examples (the whole module takes well under a minute).

Generated events start from a valid event of each type and then break any field of it: every
envelope and `data` field replaced by any JSON value or removed, extra keys, boundary times
(years 1 and 9999, +/-23:59 offsets, leap seconds, naive, dates only), huge and tiny numbers
(1e308, -0, 2**64, 5e-324, NaN and Infinity tokens), unicode (escaped lone surrogates, RTL
marks, NUL, emoji). Most times are plausible (near now), so most events reach the engine.

Asserted:
- `decode_event` never raises: always an `Event` or a `Rejection` with a reason;
- the engine's `handle` and `advance_to` never raise on what `decode_event` accepts;
- the server never answers 5xx and never dies (`/healthz` is 200 after every request); every
  event is answered `accepted`, `duplicate` or `rejected` (with a reason), or the body as a
  whole gets a 4xx with an error code;
- after the process is killed and started again, recovery succeeds with nothing quarantined
  (no journaled event the engine cannot process), and every event acknowledged as accepted is
  in the compliance log (`GET /v1/audit/records?session=…&kind=event.accepted`).
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from integration.embedded_support import NDJSON, Up, start_up
from remsguard.contract.decode import decode_event
from remsguard.domain.decisions import Rejection
from remsguard.domain.engine import MonitoringEngine
from remsguard.domain.events import Event
from remsguard.protocols import bundled_protocols
from unit.test_contract import VALID_DATA

JSON: Final = "application/json"
CLINIC: Final = "c-hostile"
OUTCOMES: Final = frozenset({"accepted", "duplicate", "rejected"})
NOW: Final = datetime.now(UTC)

# -- strategies ------------------------------------------------------------------------------

SPECIAL_STRINGS: Final = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ud800",  # a lone surrogate: sent escaped, `"\ud800"`
    "\udfff\ud800",
    "\u202eevil\u202c",  # RTL override
    "\u05e9\u05dc\u05d5\u05dd",  # Hebrew
    "\U0001f9ea",
    "\ufeff",
    "x" * 300,
    "null",
    "NaN",
    "-0",
    "1e308",
    "18446744073709551616",
]
SPECIAL_NUMBERS: Final[list[Any]] = [
    0,
    -0.0,
    1,
    -1,
    1e308,
    -1e308,
    5e-324,
    2**63 - 1,
    2**64,
    -(2**63) - 1,
    10**30,
    float("nan"),
    float("inf"),
    float("-inf"),
    40,
    300,
    300.0000001,
    19.999999,
]
BOUNDARY_TIMES: Final = [
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+23:59",
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:59.999999-23:59",
    "9999-12-31T22:00:00Z",
    "1969-12-31T23:59:59Z",
    "1999-12-31T23:59:59Z",
    "2100-01-01T00:00:00Z",
    "2016-12-31T23:59:60Z",  # a leap second
    "2026-11-23T09:00:00",  # naive
    "2026-11-23",
    "2026-11-23T09:00:00+24:00",
    "2026-02-30T09:00:00Z",
    "T09:00:00Z",
    "",
    "now",
]
OFFSETS: Final = [timedelta(0), timedelta(hours=5, minutes=30), timedelta(hours=-8)]


def _stamp(when: datetime, offset: timedelta) -> str:
    local = when.astimezone(timezone(offset))
    text = local.isoformat()
    return text.replace("+00:00", "Z") if offset == timedelta(0) else text


plausible_times = st.builds(
    _stamp,
    st.integers(min_value=-3 * 3600, max_value=240).map(lambda s: NOW + timedelta(seconds=s)),
    st.sampled_from(OFFSETS),
)
times = st.one_of(
    plausible_times,
    plausible_times,
    plausible_times,
    st.sampled_from(BOUNDARY_TIMES),
    st.builds(  # the horizons' edges: 30 days ago, 5 minutes ahead
        _stamp,
        st.sampled_from([-30 * 86400 - 60, -30 * 86400 + 3600, 290, 310, 86400 * 365 * 50]).map(
            lambda s: NOW + timedelta(seconds=s)
        ),
        st.sampled_from(OFFSETS),
    ),
)
strings = st.one_of(st.sampled_from(SPECIAL_STRINGS), st.text(max_size=12))
numbers = st.one_of(
    st.sampled_from(SPECIAL_NUMBERS),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, strings)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(strings, inner, max_size=3)
    ),
    max_leaves=6,
)

# A valid `data` of each type (every field given), from the contract's own tests.
DATA: Final = {
    **VALID_DATA,
    "session.opened": {**VALID_DATA["session.opened"], "protocol": "spravato-rems"},
}
REQUIRED: Final = frozenset(
    {"patient_ref", "drug", "route", "dose_mg", "staff_id", "clinically_stable"}
)
ENVELOPE: Final = (
    "type",
    "event_id",
    "session_id",
    "clinic_id",
    "occurred_at",
    "device_id",
    "data",
)
SESSIONS: Final = [f"s-h{n}" for n in range(6)]


_IDS: Final = itertools.count()


def _event_id(repeat: int) -> str:
    """Mostly a fresh id (so events get through); now and then one of a few repeated ones
    (duplicates, and conflicting duplicates when the content differs)."""
    return f"e-dup-{repeat}" if repeat < 2 else f"e-{next(_IDS)}"


@st.composite
def hostile_events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event of some type, then any of its fields broken (or none)."""
    kind = draw(st.sampled_from(sorted(DATA)))
    data = {k: v for k, v in DATA[kind].items() if k in REQUIRED or draw(st.booleans())}
    if kind == "vitals.recorded" and not data:
        data = {"spo2": 95}
    if kind == "vitals.recorded" and ("systolic" in data) != ("diastolic" in data):
        data.update(systolic=128, diastolic=82)
    doc: dict[str, Any] = {
        "type": kind,
        "event_id": _event_id(draw(st.integers(0, 7))),
        "session_id": draw(st.sampled_from(SESSIONS)),
        "clinic_id": CLINIC,
        "occurred_at": draw(times),
        "device_id": "dev-1",
        "data": data,
    }
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2, 3]))):
        field = draw(st.sampled_from([*ENVELOPE, *(f"data.{k}" for k in DATA[kind])]))
        target, key = (doc.get("data"), field[5:]) if field.startswith("data.") else (doc, field)
        if not isinstance(target, dict):
            continue
        if draw(st.integers(0, 4)) == 0:
            target.pop(key, None)
        else:
            target[key] = draw(json_values)
    if draw(st.integers(0, 6)) == 0:
        doc[draw(strings)] = draw(json_values)  # extra envelope keys are allowed
    return doc


def encode(doc: Any) -> bytes:
    """JSON as a hostile device may send it: lone surrogates escaped, NaN/Infinity tokens."""
    return json.dumps(doc, ensure_ascii=True, allow_nan=True).encode("ascii")


raw_inputs = st.one_of(
    hostile_events().map(encode),
    hostile_events().map(encode),
    json_values.map(encode),
    st.binary(max_size=200),
)

# -- in process ------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(raw_inputs)
def test_decode_event_never_raises(raw: bytes) -> None:
    decoded = decode_event(raw)
    assert isinstance(decoded, Event | Rejection)
    if isinstance(decoded, Rejection):
        assert decoded.reason and isinstance(decoded.reason, str)


@settings(max_examples=200, deadline=None)
@given(st.lists(hostile_events(), min_size=1, max_size=15), st.integers(0, 10 * 86400))
def test_the_engine_takes_whatever_the_contract_accepts(
    docs: list[dict[str, Any]], then: int
) -> None:
    engine = MonitoringEngine(bundled_protocols())
    latest: datetime | None = None
    for doc in docs:
        decoded = decode_event(encode(doc))
        if isinstance(decoded, Rejection):
            continue
        engine.handle(decoded)
        engine.advance_to(decoded.occurred_at)
        if latest is None or decoded.occurred_at > latest:
            latest = decoded.occurred_at
    if latest is not None:
        engine.advance_to(latest + timedelta(seconds=then))
        for session in engine.sessions:
            engine.next_due(session)


# -- against remsguard up --------------------------------------------------------------------


class Acknowledged:
    """Events the server acknowledged as accepted, by session."""

    def __init__(self) -> None:
        self.by_session: dict[str, set[str]] = {}
        self.requests = 0

    def add(self, session: str, event_id: str) -> None:
        self.by_session.setdefault(session, set()).add(event_id)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Up, Acknowledged]]:
    up = start_up(tmp_path_factory.mktemp("hostile") / "data")
    try:
        yield up, Acknowledged()
    finally:
        up.kill()


def _check_answer(up: Up, docs: list[Any], body: bytes, kind: str, acked: Acknowledged) -> None:
    response = up.post(body, kind)
    acked.requests += 1
    assert response.status_code < 500, (response.status_code, response.text[:500], body[:500])
    assert up.client.get(f"{up.base}/healthz").status_code == 200, up.log
    answer = response.json()
    if response.status_code != 200:
        assert response.status_code in (400, 413), response.text
        assert answer["error"] and answer["message"]
        return
    results = answer["results"]
    assert len(results) == len(docs)
    assert answer["accepted"] + answer["duplicates"] + answer["rejected"] == len(docs)
    for doc, result in zip(docs, results, strict=True):
        assert result["outcome"] in OUTCOMES
        if result["outcome"] == "rejected":
            assert result["reason"]
        elif result["outcome"] == "accepted":
            assert isinstance(doc, dict)
            assert result["event_id"] == doc["event_id"]
            acked.add(doc["session_id"], doc["event_id"])


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    st.lists(st.one_of(hostile_events(), hostile_events(), json_values), min_size=1, max_size=8),
    st.booleans(),
)
def test_the_server_answers_every_event_and_never_fails(
    server: tuple[Up, Acknowledged], docs: list[Any], as_ndjson: bool
) -> None:
    up, acked = server
    if as_ndjson:
        body = b"\n".join(encode(doc) for doc in docs)
        _check_answer(up, docs, body, NDJSON, acked)
    else:
        _check_answer(up, docs, encode(docs), JSON, acked)


def test_after_a_restart_recovery_succeeds_and_nothing_acknowledged_is_lost(
    server: tuple[Up, Acknowledged],
) -> None:
    up, acked = server
    accepted = sum(len(ids) for ids in acked.by_session.values())
    print(f"{acked.requests} requests, {accepted} events accepted")
    assert acked.requests > 50
    assert accepted > 20, "too few events accepted to check recovery with"
    up.kill()  # SIGKILL: a 2xx promised the events were on disk
    again = start_up(up.data_dir)
    try:
        with sqlite3.connect(f"file:{up.data_dir / 'journal.db'}?mode=ro", uri=True) as db:
            quarantined = db.execute("SELECT seq, reason, detail FROM quarantine").fetchall()
        assert quarantined == [], "journaled events the engine could not process"
        for session, event_ids in acked.by_session.items():
            recorded = _accepted_ids(again, session)
            missing = event_ids - recorded
            assert not missing, f"acknowledged but not in the compliance log: {session} {missing}"
    finally:
        again.stop()


def _accepted_ids(up: Up, session: str) -> set[str]:
    found: set[str] = set()
    params: dict[str, Any] = {"session": session, "kind": "event.accepted", "limit": 1000}
    for _ in range(100):
        response = up.client.get(
            f"{up.base}/v1/audit/records", params=params, headers=up.auth("admin")
        )
        assert response.status_code == 200, response.text
        page = response.json()
        found.update(str(record["subject_id"]) for record in page["records"])
        if not page.get("next_cursor"):
            return found
        params["cursor"] = page["next_cursor"]
    raise AssertionError("more than 100 pages")
