"""`remsguard processor` evicts finished sessions on the real broker (issue 19): the session's
changelog value becomes its small tombstone record; a late event for it is recorded
(`event.accepted`) and judged by no rule, before and after a restart; no new session is
opened for it (the changelog keeps the tombstone record)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from remsguard.handlers.stored_session import Evicted, decode_stored

from .processor_kit import SessionWriter, Stack, alerts_of, read_until, stack, to_lines

pytestmark = pytest.mark.kafka

SETTINGS = {
    "REMSGUARD_SESSION_RETENTION_HOURS": "0.5",
    "REMSGUARD_SESSION_EVICTION_SECONDS": "0.5",
    "REMSGUARD_STATE_FLUSH_SECONDS": "0.25",
}


def _latest(records: list[Any]) -> dict[bytes, bytes | None]:
    out: dict[bytes, bytes | None] = {}
    for record in records:
        out[record.key] = record.value
    return out


def _stored(stack: Stack, key: bytes, done: Callable[[Any], bool]) -> Any:
    """The changelog's latest value of `key`, decoded, once `done` holds for it."""

    def check(records: list[Any]) -> bool:
        value = _latest(records).get(key)
        return value is not None and done(decode_stored(value)[1])

    records = read_until(
        stack.bootstrap, f"{stack.name}-app-sessions-changelog", check, timeout=90, quiet=1.0
    )
    value = _latest(records).get(key)
    assert value is not None, "the session never reached the changelog"
    return decode_stored(value)[1]


def _accepted(stack: Stack, event_id: str) -> list[dict[str, Any]]:
    """Audit records of the input topic until `event_id`'s `event.accepted` is among them."""

    def check(records: list[Any]) -> bool:
        return any(
            r["kind"] == "event.accepted" and r["subject_id"] == event_id
            for r in map(lambda x: orjson.loads(x.value), records)
        )

    records = read_until(stack.bootstrap, stack.topics.audit, check, timeout=90, quiet=2.0)
    audit = [orjson.loads(r.value) for r in records]
    assert check(records), f"{event_id} was never recorded"
    return audit


def test_a_late_event_after_eviction_is_recorded_also_after_a_restart(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    dose_at = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=6)
    done = SessionWriter("ev-1", dose_at)
    done.opened()
    done.bp(-5)
    done.dose(0)
    for minute in range(5, 125, 5):
        done.vitals(minute, systolic=120, diastolic=78, spo2=98)
    done.discharge(125)
    with stack(kafka_bootstrap, tmp_path, **SETTINGS) as deployment:
        worker = deployment.start_worker()
        worker.wait_assigned()
        deployment.publish(to_lines(done.events))
        evicted = _stored(deployment, b"ev-1", lambda s: isinstance(s, Evicted))
        assert evicted == Evicted("clinic-1", dose_at + timedelta(minutes=125))
        assert worker.metric_sum("remsguard_processor_sessions_evicted_total") >= 1

        late = SessionWriter("ev-1", dose_at)
        late.n = 900
        late.bp(130, systolic=200, diastolic=125)  # a crisis reading after the end
        deployment.publish(to_lines(late.events))
        _accepted(deployment, "ev-1-901")

        worker.kill9()  # the next worker recovers the tombstone from the changelog
        again = deployment.start_worker()
        again.wait_assigned()
        later = SessionWriter("ev-1", dose_at)
        later.n = 901
        later.bp(131, systolic=205, diastolic=125)
        deployment.publish(to_lines(later.events))
        audit = _accepted(deployment, "ev-1-902")
        assert again.healthy()
        # No session was opened again for the late events: the changelog still holds the
        # tombstone record, not a session.
        assert _stored(deployment, b"ev-1", lambda _: True) == evicted
        alerts_records = read_until(
            deployment.bootstrap, deployment.topics.alerts, lambda _: True, timeout=10
        )
    late_ids = {"ev-1-901", "ev-1-902"}
    assert not [a for a in alerts_of(alerts_records) if set(a["evidence"]) & late_ids]
    assert {r["kind"] for r in audit if r.get("subject_id") in late_ids} == {"event.accepted"}
