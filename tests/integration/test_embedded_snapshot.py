"""Embedded snapshots under `kill -9` (issue 19): the process and its forked snapshot writer
killed while a snapshot is being written, it restarts from the previous snapshot (or the
journal), loses nothing acknowledged, and serves the same alerts as a restart that replays the
whole journal."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path

import httpx
import orjson
import pytest

from .embedded_support import batches, ndjson, start_up
from .test_embedded_crash import _by_id, _ids, _journaled, _load

pytestmark = pytest.mark.timeout(300)

# A snapshot after every step: one is being written most of the time while the load runs.
SNAPSHOT_ALWAYS = {"REMSGUARD_SNAPSHOT_EVERY_EVENTS": "1"}


def test_kill_9_while_a_snapshot_is_written(tmp_path: Path) -> None:
    data = tmp_path / "data"
    load = _load(tmp_path)
    up = start_up(data, env=SNAPSHOT_ALWAYS)
    acked: list[tuple[list[bytes], dict[str, object]]] = []
    temporaries = "engine.snapshot.*.tmp"
    seen_writing = threading.Event()

    def post_load() -> None:
        with httpx.Client(timeout=10.0) as client:
            headers = {"Content-Type": "application/x-ndjson", **up.auth("device")}
            for batch in batches(load, 20):
                try:
                    response = client.post(
                        f"{up.base}/v1/events", content=ndjson(batch), headers=headers
                    )
                except httpx.TransportError:
                    return  # killed
                assert response.status_code == 200, response.text
                acked.append((batch, response.json()))

    poster = threading.Thread(target=post_load, daemon=True)
    try:
        poster.start()
        # Kill the moment a snapshot's temporary file is seen, once some load is in.
        while poster.is_alive():
            if len(acked) >= 5 and any(data.glob(temporaries)):
                seen_writing.set()
                break
    finally:
        for child in _children(up.process.pid):  # the forked snapshot writers: torn too
            with contextlib.suppress(ProcessLookupError):  # it may have finished meanwhile
                os.kill(child, signal.SIGKILL)
        up.kill()  # SIGKILL, as close as it gets to the middle of a snapshot write
    poster.join(timeout=30)
    assert seen_writing.is_set(), "no snapshot was being written while the load ran"

    journaled = _journaled(data)
    for batch, body in acked:
        results = body["results"]
        assert isinstance(results, list)
        for line, result in zip(batch, results, strict=True):
            if result["outcome"] in ("accepted", "duplicate"):
                assert _ids(line) in journaled, "acknowledged but not journaled"

    again = start_up(data)
    try:
        assert _recovered_from(again.log_path.read_text()) in ("from_snapshot", "full_replay")
        assert not list(data.glob(temporaries)), "a killed writer's temporary file is left"
        from_snapshot = _by_id(again.alerts())
        for batch, _ in acked:  # the restarted engine knows every acknowledged event
            response = again.post(ndjson(batch))
            assert response.status_code == 200
            assert response.json()["accepted"] == 0
    finally:
        assert again.stop() == 0, again.log

    (data / "engine.snapshot").unlink(missing_ok=True)  # next start: the whole journal
    third = start_up(data)
    try:
        assert _recovered_from(third.log_path.read_text()) == "full_replay"
        assert _by_id(third.alerts()) == from_snapshot
    finally:
        assert third.stop() == 0, third.log


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _recovered_from(log: str) -> str | None:
    for line in log.splitlines():
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(entry, dict) and str(entry.get("event", "")).startswith("recovery."):
            return str(entry["event"]).removeprefix("recovery.")
    return None
