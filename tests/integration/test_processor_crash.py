"""Crash safety on the real broker: kill -9 a worker in the middle of a stream, restart it
(or let the surviving worker take over): the alerts consumers see, deduplicated by
`alert_id` as every consumer does, equal the replay's; none missing, none extra."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from kafka.partitioner.default import murmur2

from .processor_kit import (
    PARTITIONS,
    Stack,
    Worker,
    as_set,
    clinic_day,
    ids,
    in_time_order,
    read_until,
    replay_alerts,
    stack,
    to_lines,
    wait_for_alerts,
)

pytestmark = pytest.mark.kafka


def _wait(condition: object, timeout: float, what: str, workers: list[Worker]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            tails = "\n---\n".join(w.tail(15) for w in workers)
            raise AssertionError(f"timed out waiting for {what}\n{tails}")
        time.sleep(0.2)


def _deduplicated(alerts: list[dict[str, object]]) -> tuple[list[dict[str, object]], int]:
    by_id: dict[object, dict[str, object]] = {}
    for alert in alerts:
        previous = by_id.setdefault(alert["alert_id"], alert)
        assert previous == alert, "one alert_id, two different alerts"
    return list(by_id.values()), len(alerts) - len(by_id)


def _partition(alert: dict[str, object]) -> int:
    """The input partition of the alert's session (the default partitioner's)."""
    return (murmur2(str(alert["session_id"]).encode("utf-8")) & 0x7FFFFFFF) % PARTITIONS


def _diff(alerts: list[dict[str, object]], expected: list[dict[str, object]]) -> str:
    missing = [a for a in expected if a["alert_id"] not in ids(alerts)]
    extra = [a for a in alerts if a["alert_id"] not in ids(expected)]
    return (
        f"missing {len(missing)} {Counter(a['rule'] for a in missing)}, "
        f"by partition {sorted(Counter(_partition(a) for a in missing).items())} "
        f"of {sorted(Counter(_partition(a) for a in expected).items())}, "
        f"sessions {len({a['session_id'] for a in missing})}; "
        f"extra {len(extra)} {Counter(a['rule'] for a in extra)}"
    )


def _stream(events: int, hours_ago: float, seed: int) -> list[bytes]:
    sessions = events // 28 + 1
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=hours_ago)
    lines = to_lines(in_time_order(clinic_day("crash", start, sessions, seed, 24 * 60)))
    return lines[:events]


def _settled_commits(deployment: Stack) -> int:
    """The group's committed offsets on the input topics, summed, once two reads half a
    second apart agree (a commit the killed worker had already sent may still land)."""
    committed = deployment.committed()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(0.5)
        again = deployment.committed()
        if again == committed:
            return sum(committed.values())
        committed = again
    raise AssertionError(f"the group's commits kept moving after the kill: {committed}")


def _survivor_state(deployment: Stack, survivor: Worker) -> str:
    """For a failure: where the survivor stood (alerts were missing after the wait, twice
    in ~20 runs): its input count, partitions, the broker's committed and end offsets per
    input partition (a partition not read to its end, or read and its alerts not out), its
    lag and clock metrics, and its log's tail."""
    committed, ends = deployment.committed(), deployment.input_ends()
    offsets = {f"{tp.topic}[{tp.partition}]": (committed[tp], ends[tp]) for tp in ends}
    gauges = {
        name: value
        for name, value in survivor.metrics().items()
        if any(word in name for word in ("lag", "clock", "watermark", "behind", "held"))
    }
    return (
        f"survivor: {survivor.processed():.0f} input events, {survivor.partitions()} "
        f"partitions\ncommitted/end by input partition: {offsets}\nmetrics: {gauges}\n"
        f"{survivor.tail(30)}"
    )


def _keep(
    deployment: Stack, into: Path, lines: list[bytes], expected: list[dict[str, object]]
) -> None:
    """The events, the replay's alerts and every record of the output topics, as files."""
    (into / "events.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (into / "expected.jsonl").write_bytes(b"".join(orjson.dumps(a) + b"\n" for a in expected))
    topics = deployment.topics
    for name in (topics.alerts, topics.deadletter):
        records = read_until(deployment.bootstrap, name, lambda _: True, timeout=20, quiet=2)
        rows = [
            orjson.dumps(
                {"partition": r.partition, "offset": r.offset, "key": r.key, "value": r.value},
                default=lambda b: b.decode("utf-8", "replace"),
            )
            for r in records
        ]
        (into / f"{name}.jsonl").write_bytes(b"".join(row + b"\n" for row in rows))


def test_kill_9_mid_stream_then_restart(kafka_bootstrap: str, tmp_path: Path) -> None:
    lines = _stream(100_000, hours_ago=60, seed=31)
    assert len(lines) == 100_000
    with stack(kafka_bootstrap, tmp_path) as deployment:
        first = deployment.start_worker()
        first.wait_assigned()
        assert deployment.publish(lines) == len(lines)
        _wait(lambda: first.processed() >= 35_000, 180, "35,000 events processed", [first])
        first.kill9()
        # Where the restarted worker must start: nobody commits for the group until it does.
        committed = _settled_commits(deployment)
        before = first.log.read_text(errors="replace")
        second = deployment.start_worker()
        until = datetime.now(UTC)
        expected = replay_alerts(lines, until)
        got = wait_for_alerts(deployment, ids(expected), timeout=240, quiet=3)
        published = sum(deployment.input_ends().values())
        owed = published - committed
        _wait(lambda: second.processed() >= owed, 120, f"{owed} events redone", [second])
        time.sleep(2)  # a redelivery, or a pass from the start, would show by now
        redone = second.processed()  # input messages only, whatever their outcome
        seen_before = second.metric_sum(
            'remsguard_processor_messages_total{kind="input",outcome="duplicate"'
        )
    alerts, duplicates = _deduplicated(got)
    assert ids(alerts) == ids(expected), _diff(alerts, expected)
    assert as_set(alerts) == as_set(expected)
    # State came back from the changelog: the restarted worker went on from the committed
    # offsets instead of reading the stream again from the start. It reads every input
    # message from the committed offsets to the end, so it processes `owed` of them, each
    # once. (faust used to hand each input partition's last delivered message to the agent
    # once more, 0 or 9 extra in 10 runs: messages it delivered while seeking to the
    # committed offsets at the end of the rebalance, the race that also lost messages, once
    # 8 extra with an input offset never processed; see `HeldResumes`, kafka/rebalance.py.)
    # A pass from the start would add the `committed` events (thousands).
    assert published == len(lines)
    assert committed > 0
    extra = redone - owed
    assert extra == 0, (redone, owed, committed, seen_before)
    assert "Traceback" not in before
    print(
        f"alerts {len(alerts)}, duplicates on the topic {duplicates}, committed {committed}, "
        f"events processed after the restart {redone:.0f} (owed {owed}, "
        f"{seen_before:.0f} already applied)"
    )


def test_two_workers_one_killed_the_other_takes_over(kafka_bootstrap: str, tmp_path: Path) -> None:
    lines = _stream(30_000, hours_ago=40, seed=41)
    with stack(kafka_bootstrap, tmp_path) as deployment:
        a = deployment.start_worker()
        b = deployment.start_worker()
        _wait(
            lambda: (
                a.partitions() + b.partitions() == PARTITIONS
                and a.partitions() > 0
                and b.partitions() > 0
            ),
            90,
            "both workers to own partitions",
            [a, b],
        )
        assert deployment.publish(lines) == len(lines)
        _wait(lambda: b.processed() >= 3_000, 120, "worker b to process 3,000 events", [a, b])
        b.kill9()
        _wait(lambda: a.partitions() == PARTITIONS, 90, "a to take over every partition", [a])
        until = datetime.now(UTC)
        expected = replay_alerts(lines, until)
        got = wait_for_alerts(deployment, ids(expected), timeout=180, quiet=3)
        assert a.process.poll() is None
        # For a failure: where the survivor stood (alerts missing after the wait, once).
        state = _survivor_state(deployment, a)
        if ids(got) != ids(expected):  # kept beside the workers' logs, to be looked into
            _keep(deployment, tmp_path, lines, expected)
        # Every input message processed and acknowledged: the group's commits reach the
        # ends. Messages faust dropped during a rebalance were never acknowledged, and a
        # hole of two or more stopped the partition's commits for good.
        ends = deployment.input_ends()
        deadline = time.monotonic() + 30
        while (committed := deployment.committed()) != ends and time.monotonic() < deadline:
            time.sleep(0.5)
    alerts, duplicates = _deduplicated(got)
    assert ids(alerts) == ids(expected), f"{_diff(alerts, expected)}\n{state}"
    assert as_set(alerts) == as_set(expected)
    assert committed == ends, f"commits stopped short of the ends: {committed} {ends}"
    print(
        f"alerts {len(alerts)}, duplicates {duplicates}, rules {Counter(a['rule'] for a in alerts)}"
    )
