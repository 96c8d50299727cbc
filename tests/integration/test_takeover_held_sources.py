"""The workaround for faust-streaming 0.15.3 dropping messages at the end of a rebalance
(`HeldResumes` in `remsguard.adapters.kafka.rebalance`).

faust's `Recovery.on_recovery_completed` resumes the stream partitions, awaits the seek to the
committed offsets (the consumer's flow is already active), then resumes flow control, which
clears the agents' queues: what the fetcher delivered during the seek was recorded as read,
and the part the agent had not taken yet was never processed (and its offsets were
committed over). In the two-worker takeover test the survivor lost readings that way, and a
restarted worker skipped input offsets. The worker now keeps faust from resuming the agent's
source partitions while a rebalance is in progress, and resumes them itself once it is over.

No broker: the faust app is built as `remsguard processor` builds it, not started; its
consumer object is faust's own, and the calls are the ones faust makes in that order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from faust.types import TP
from prometheus_client import CollectorRegistry

from remsguard.adapters.kafka.processor import create_app
from remsguard.config import Settings


def _app(tmp_path: Path) -> Any:
    settings = Settings(
        kafka_bootstrap="127.0.0.1:1",  # never contacted
        topic_prefix="held-",
        processor_app_id="held-app",
        processor_data_dir=str(tmp_path),
        rems_gate=False,
    )
    return create_app(settings, CollectorRegistry())


def test_faust_does_not_resume_the_sources_during_a_rebalance(tmp_path: Path) -> None:
    app = _app(tmp_path)
    worker, topics = app.remsguard["worker"], app.remsguard["topics"]
    consumer = app.consumer
    sources = {TP(topic, p) for topic in (*topics.inputs, topics.ticks) for p in range(3)}
    changelog = {TP("held-app-sessions-changelog", p) for p in range(3)}
    assignment = sources | changelog
    consumer.assignment = lambda: set(assignment)  # not started: no broker to ask

    # A rebalance, as faust runs it: everything assigned is paused, the assigned callback
    # runs, recovery resumes the changelogs, then `on_recovery_completed` resumes the stream
    # partitions before it seeks them to the committed offsets.
    app.on_rebalance_start()
    consumer._set_active_tps(assignment)
    consumer.pause_partitions(assignment)
    worker.assigned(assignment)
    consumer.resume_partitions(changelog)
    assert consumer._get_active_partitions() == changelog
    consumer.resume_partitions(assignment - changelog)
    # Nothing of the sources is fetched for the agent during the seek that follows.
    assert not consumer._get_active_partitions() & sources
    assert sources <= consumer._paused_partitions

    # The rebalance is over (the seek is done, the queues are cleared): the worker resumes
    # the sources itself; from the committed offsets, nothing delivered and then dropped.
    app.on_rebalance_end()
    worker.resumes.release()
    assert consumer._get_active_partitions() == assignment
    assert not consumer._paused_partitions


def test_outside_a_rebalance_resumes_pass_through(tmp_path: Path) -> None:
    app = _app(tmp_path)
    worker, topics = app.remsguard["worker"], app.remsguard["topics"]
    consumer = app.consumer
    tp = TP(topics.vitals, 0)
    consumer.assignment = lambda: {tp}
    app.on_rebalance_start()
    worker.assigned({tp})
    app.on_rebalance_end()
    worker.resumes.release()  # nothing was held
    consumer.pause_partitions({tp})
    consumer.resume_partitions({tp})
    assert tp in consumer._get_active_partitions()
    # Partitions no longer assigned when the rebalance ends are not resumed.
    app.on_rebalance_start()
    consumer.pause_partitions({tp})
    consumer.resume_partitions({tp})
    assert tp not in consumer._get_active_partitions()
    consumer.assignment = set
    app.on_rebalance_end()
    worker.resumes.release()
    assert tp not in consumer._get_active_partitions()
