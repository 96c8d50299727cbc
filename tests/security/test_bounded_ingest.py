"""Issue 13, finding 4: bounded work per request, against a real `remsguard up`.

Before: a 400 KB JSON array of 200,000 `1`s took 17-28 s, answered 24 MB, grew the process from
about 120 MB to over 1 GB (never given back) and the databases by 340 MB; 1M items gave a
MemoryError and a 500; an array of objects nested 255-1024 deep gave a 500. Now a body holding
more than `ingest_max_events` events is a 413 before any event is decoded or journaled, every
worst-case body within the byte limit is answered in seconds without a 5xx, and the process
stays within a fixed memory budget.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from integration.embedded_support import NDJSON, Up, start_up

JSON = "application/json"
MAX_BODY = 8 * 1024 * 1024  # the default `ingest_max_body_bytes`
MAX_EVENTS = 10_000  # the default `ingest_max_events`
RSS_BUDGET_MIB = 300  # growth of the server process over all the bodies of this module
SECONDS = 30.0  # per body, on a loaded 2-core CI machine (each takes a few seconds at most)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def journal_rows(data_dir: Path) -> tuple[int, int]:
    """(events, rejections) in the journal, read-only beside the running process."""
    with sqlite3.connect(f"file:{data_dir / 'journal.db'}?mode=ro", uri=True) as db:
        events = db.execute("SELECT count(*) FROM events").fetchone()[0]
        rejections = db.execute("SELECT count(*) FROM rejections").fetchone()[0]
    return int(events), int(rejections)


@dataclass
class Server:
    up: Up
    baseline_mib: float

    def post(self, body: bytes, content_type: str) -> tuple[httpx.Response, float]:
        """One request on a connection of its own (a refused body may close it)."""
        headers = {"Content-Type": content_type, **self.up.auth("device")}
        started = time.monotonic()
        with httpx.Client(timeout=120.0) as client:
            response = client.post(f"{self.up.base}/v1/events", content=body, headers=headers)
        return response, time.monotonic() - started

    def check_alive_and_within_budget(self) -> float:
        assert self.up.process.poll() is None, self.up.log
        assert self.up.client.get(f"{self.up.base}/healthz").status_code == 200
        grown = rss_mib(self.up.process.pid) - self.baseline_mib
        assert grown < RSS_BUDGET_MIB, f"the process grew {grown:.0f} MiB"
        return grown


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    up = start_up(tmp_path_factory.mktemp("bounded") / "data")
    try:
        warm = up.post(b"[1]", JSON)  # the ingest path's imports and caches
        assert warm.status_code == 200, warm.text
        yield Server(up, rss_mib(up.process.pid))
    finally:
        up.stop()


def _at(minutes_ago: float) -> str:
    when = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _array(items: list[bytes]) -> bytes:
    return b"[" + b",".join(items) + b"]"


def _fill(item: bytes, sep: int = 1) -> int:
    """How many copies of `item` fit in a body at the byte limit."""
    return (MAX_BODY - 2) // (len(item) + sep)


def test_finding_4_a_400_kb_array_of_200000_items_is_refused_before_any_work(
    server: Server,
) -> None:
    before = journal_rows(server.up.data_dir)
    body = _array([b"1"] * 200_000)
    assert len(body) < 401_000
    response, seconds = server.post(body, JSON)
    assert response.status_code == 413, response.text
    assert response.json()["error"] == "too_many_events"
    assert f"at most {MAX_EVENTS}" in response.json()["message"]
    assert seconds < 5.0
    assert len(response.content) < 500
    assert journal_rows(server.up.data_dir) == before  # nothing journaled, not even rejections
    server.check_alive_and_within_budget()


def test_the_cap_counts_events_not_bytes_or_blank_lines(server: Server) -> None:
    over = server.post(b"1\n" * (MAX_EVENTS + 1), NDJSON)[0]
    assert over.status_code == 413 and over.json()["error"] == "too_many_events", over.text
    over = server.post(b"\r\n".join([b"{}"] * (MAX_EVENTS + 1)), NDJSON)[0]
    assert over.status_code == 413, over.text
    # Blank lines are not events: a body of exactly the cap, padded with them, is read.
    padded = b"\n \n\t\n".join([b"{}"] * MAX_EVENTS) + b"\n" * 100_000
    response = server.post(padded, NDJSON)[0]
    assert response.status_code == 200, response.text
    assert response.json()["rejected"] == MAX_EVENTS
    assert response.json()["results"][1]["line"] == 4  # lines still count from the body's start


def test_rejections_at_the_cap_are_answered_compactly(server: Server) -> None:
    response, seconds = server.post(_array([b"1"] * MAX_EVENTS), JSON)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (0, 0, MAX_EVENTS)
    assert body["reasons"] == {"not_an_object": MAX_EVENTS}
    results = body["results"]
    assert [r["index"] for r in results] == list(range(MAX_EVENTS))
    assert all(r["outcome"] == "rejected" and r["reason"] == "not_an_object" for r in results)
    # The detail is given once for identical rejections, not 10,000 times.
    assert results[0]["detail"] == "an event must be a JSON object"
    assert not any("detail" in r for r in results[1:])
    assert len(response.content) < 800_000
    assert seconds < SECONDS


def _deep(depth: int) -> bytes:
    return b'{"type":"vitals.recorded","data":' + b"[" * depth + b"]" * depth + b"}"


def _long_strings(as_ndjson: bool) -> tuple[bytes, str]:
    """Session openings with a 60 KB device id each (the contract bounds an event at 64 KB)."""
    events: list[bytes] = []
    size = 2
    while True:
        n = len(events)
        event = orjson.dumps(
            {
                "type": "session.opened",
                "event_id": f"long-{n}",
                "session_id": f"s-long-{n}-{as_ndjson}",
                "clinic_id": "c-long",
                "occurred_at": _at(1),
                "device_id": "d" * 60_000,
                "data": {"patient_ref": "p" * 2_000},
            }
        )
        if size + len(event) + 1 > MAX_BODY:
            break
        events.append(event)
        size += len(event) + 1
    if as_ndjson:
        return b"\n".join(events), NDJSON
    return _array(events), JSON


def _cap_of_valid_events() -> tuple[bytes, str]:
    """The most work a request can ask for: `MAX_EVENTS` contract-valid events."""
    lines = []
    for n in range(MAX_EVENTS):
        session = f"s-cap-{n // 20}"
        if n % 20 == 0:
            event: dict[str, Any] = {
                "type": "session.opened",
                "data": {"patient_ref": f"p-{n}"},
            }
        else:
            event = {"type": "vitals.recorded", "data": {"systolic": 120, "diastolic": 80}}
        event.update(event_id=f"cap-{n}", session_id=session, clinic_id="c-cap", occurred_at=_at(2))
        lines.append(orjson.dumps(event))
    return b"\n".join(lines), NDJSON


@dataclass(frozen=True)
class Case:
    build: Callable[[], tuple[bytes, str]]
    status: int
    reason: str | None = None  # every event's rejection reason; None: every event accepted


CASES: dict[str, Case] = {
    "8 MiB of tiny items": Case(lambda: (_array([b"1"] * _fill(b"1")), JSON), 413),
    "8 MiB of empty objects": Case(lambda: (_array([b"{}"] * _fill(b"{}")), JSON), 413),
    "8 MiB of tiny NDJSON lines": Case(lambda: (b"1\n" * _fill(b"1"), NDJSON), 413),
    "8 MiB of blank NDJSON lines": Case(
        lambda: (b"{}" + b"\n" * (MAX_BODY - 2), NDJSON), 200, "missing_field"
    ),
    "objects nested 1000 deep": Case(
        lambda: (_array([_deep(1000)] * _fill(_deep(1000))), JSON), 200, "invalid_json"
    ),
    "objects nested 300 deep": Case(
        lambda: (_array([_deep(300)] * min(MAX_EVENTS, _fill(_deep(300)))), JSON),
        200,
        "invalid_json",
    ),
    "NDJSON lines nested 1000 deep": Case(
        lambda: (b"\n".join([_deep(1000)] * _fill(_deep(1000))), NDJSON), 200, "invalid_json"
    ),
    "a body nested past 1024": Case(lambda: (b"[" + _deep(1100) + b"]", JSON), 400),
    "60 KB strings, JSON array": Case(lambda: _long_strings(False), 200),
    "60 KB strings, NDJSON": Case(lambda: _long_strings(True), 200),
    "oversized events": Case(
        lambda: (b"\n".join([b'{"pad":"' + b"x" * 70_000 + b'"}'] * 100), NDJSON),
        200,
        "too_large",
    ),
    "the cap of valid events": Case(_cap_of_valid_events, 200),
}


@pytest.mark.parametrize("name", list(CASES))
def test_worst_case_bodies_are_answered_in_seconds_within_a_memory_budget(
    server: Server, name: str
) -> None:
    case = CASES[name]
    body, content_type = case.build()
    assert len(body) <= MAX_BODY
    response, seconds = server.post(body, content_type)
    del body
    assert response.status_code == case.status, response.text[:500]
    assert seconds < SECONDS, f"{name}: {seconds:.1f} s"
    if case.status == 200:
        answer = response.json()
        assert answer["accepted"] + answer["duplicates"] + answer["rejected"] == len(
            answer["results"]
        )
        assert all(r["outcome"] in ("accepted", "duplicate", "rejected") for r in answer["results"])
        if case.reason is not None:
            assert set(answer["reasons"]) == {case.reason}
            assert answer["rejected"] == len(answer["results"])
        else:
            assert answer["accepted"] == len(answer["results"]), answer["reasons"]
    else:
        assert "error" in response.json()
    assert len(response.content) < MAX_BODY + 1_000_000
    grown = server.check_alive_and_within_budget()
    size = len(response.content)
    print(f"{name}: {response.status_code} in {seconds:.2f} s, {size} bytes, +{grown:.0f} MiB")
