"""Telemetry: the metrics catalogue, recorded from real engine decisions into a fresh registry."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from remsguard.adapters.metrics import new_registry, serve_metrics
from remsguard.adapters.telemetry import METRIC_NAMES, Telemetry, violated_rules
from remsguard.contract.decode import decode_event
from remsguard.domain.decisions import Rejection
from unit.scenario import T0, Replay, Session, at, timeline

FORBIDDEN_LABELS = {"session", "session_id", "patient", "patient_ref", "event_id", "alert_id"}
ALLOWED_LABELS = {
    "clinic", "rule", "severity", "topic", "reason", "type", "partition", "service",
    "channel", "outcome", "result", "le",
}  # fmt: skip


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    got = registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


@pytest.fixture
def telemetry() -> Telemetry:
    return Telemetry(new_registry())


def test_names_follow_prometheus_conventions_and_labels_are_bounded() -> None:
    registry = new_registry()
    Telemetry(registry)
    families = list(registry.collect())
    assert len(families) >= 20
    for family in families:
        assert re.fullmatch(r"remsguard_[a-z0-9_]+", family.name), family.name
        assert family.documentation, family.name
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name
        if family.type == "gauge":
            assert not family.name.endswith("_total"), family.name
    for name in METRIC_NAMES:
        assert "_ms" not in name and "millis" not in name
    # Label names: every labelled child we can make has only bounded labels.
    for metric in Telemetry(new_registry()).__dict__.values():
        names = set(getattr(metric, "_labelnames", ()))
        assert not names & FORBIDDEN_LABELS
        assert names <= ALLOWED_LABELS, names


def test_two_registries_are_independent() -> None:
    first, second = Telemetry(new_registry()), Telemetry(new_registry())
    first.up("processor")
    assert value(first.registry, "remsguard_worker_up", service="processor") == 1
    assert second.registry.get_sample_value("remsguard_worker_up", {"service": "processor"}) is None


def test_observe_decisions_counts_events_alerts_and_latency(telemetry: Telemetry) -> None:
    s = Session("s1", "c-a")
    telemetry.know_clinics(["c-a"])  # configured: the session is never opened
    events = timeline(s.dose(0), s.bp(30, 190, 125), s.discharge(50))  # no pre-dose BP, crisis
    replay = Replay()
    decided = (T0 + timedelta(hours=3)).timestamp()
    for event in events:
        decisions = replay.engine.handle(event)
        telemetry.observe_decisions(
            decisions,
            topic="rems.vitals.v1",
            event=event,
            ingested_at=decided - 0.02,
            decided_at=decided,
        )
    clock = replay.engine.advance_to(T0 + timedelta(hours=6))
    telemetry.observe_decisions(clock)

    r = telemetry.registry
    assert (
        value(r, "remsguard_events_consumed_total", topic="rems.vitals.v1", type="vitals.recorded")
        == 1
    )
    assert (
        value(
            r, "remsguard_events_consumed_total", topic="rems.vitals.v1", type="dose.administered"
        )
        == 1
    )
    assert (
        value(
            r, "remsguard_alerts_raised_total", clinic="c-a", rule="BP_CRISIS", severity="critical"
        )
        == 1
    )
    # Deadline alerts come from the clock step (no topic, no event): counted all the same.
    assert (
        value(
            r,
            "remsguard_alerts_raised_total",
            clinic="c-a",
            rule="PRE_DOSE_BP_MISSING",
            severity="critical",
        )
        == 1
    )
    raised = sum(
        sample.value
        for family in r.collect()
        if family.name == "remsguard_alerts_raised"
        for sample in family.samples
        if sample.name.endswith("_total")
    )
    assert raised == len(clock.alerts) + 1
    # Event time -> decision: three events, 3 h minus their offsets; ingest -> decision: 20 ms.
    assert value(r, "remsguard_event_to_decision_seconds_count") == 3
    assert value(r, "remsguard_ingest_to_decision_seconds_count") == 3
    assert value(r, "remsguard_ingest_to_decision_seconds_bucket", le="0.025") == 3
    assert value(r, "remsguard_ingest_to_decision_seconds_bucket", le="0.01") == 0
    assert value(r, "remsguard_event_to_decision_seconds_bucket", le="3600.0") == 0
    assert value(r, "remsguard_event_to_decision_seconds_bucket", le="21600.0") == 3


def test_duplicates_and_rejections(telemetry: Telemetry) -> None:
    s = Session("s1", "c1")
    replay = Replay()
    dose = s.dose(0)
    telemetry.observe_decisions(replay.engine.handle(dose), topic="rems.dosing.v1", event=dose)
    telemetry.observe_decisions(replay.engine.handle(dose), topic="rems.dosing.v1", event=dose)
    decoded = decode_event(b"{not json")
    assert isinstance(decoded, Rejection)
    rejected = replay.engine.reject(decoded, source="rems.dosing.v1/0/7")
    telemetry.observe_decisions(rejected, topic="rems.dosing.v1", dead_lettered=True)
    telemetry.dead_letter("rems.vitals.v1", "processing_error")

    r = telemetry.registry
    assert (
        value(
            r, "remsguard_events_consumed_total", topic="rems.dosing.v1", type="dose.administered"
        )
        == 2
    )
    assert value(r, "remsguard_events_duplicate_total", topic="rems.dosing.v1") == 1
    assert value(r, "remsguard_events_consumed_total", topic="rems.dosing.v1", type="invalid") == 1
    assert (
        value(r, "remsguard_events_rejected_total", topic="rems.dosing.v1", reason="invalid_json")
        == 1
    )
    assert (
        value(r, "remsguard_dead_letters_total", topic="rems.dosing.v1", reason="invalid_json") == 1
    )
    assert (
        value(r, "remsguard_dead_letters_total", topic="rems.vitals.v1", reason="processing_error")
        == 1
    )
    # Only the accepted (non-duplicate) event has an event-time latency.
    assert value(r, "remsguard_event_to_decision_seconds_count") == 1


def test_sessions_under_monitoring_and_compliance_share(telemetry: Telemetry) -> None:
    good, bad, open_ = Session("good", "c1"), Session("bad", "c1"), Session("open", "c2")
    telemetry.know_clinics(["c1", "c2"])  # configured: no session is opened
    replay = Replay().feed(
        timeline(
            good.compliant(),
            [bad.dose(0), bad.bp(40, 190, 125), bad.discharge(130)],
            [open_.bp(-5), open_.dose(0)],
        )
    )
    engine = replay.engine
    r = telemetry.registry

    # Seeding: sessions already complete at the first scan are remembered, not counted.
    replay.finish(at(60))
    telemetry.observe_sessions(engine.sessions.values(), engine.protocol_of)
    assert value(r, "remsguard_sessions_under_monitoring", clinic="c1") == 2
    assert value(r, "remsguard_sessions_under_monitoring", clinic="c2") == 1
    assert value(r, "remsguard_sessions_completed_total", clinic="c1", outcome="compliant") == 0

    replay.finish(at(60 * 24))  # every check on the discharged sessions is decided
    telemetry.observe_sessions(engine.sessions.values(), engine.protocol_of)
    telemetry.observe_sessions(engine.sessions.values(), engine.protocol_of)  # counted once
    assert value(r, "remsguard_sessions_under_monitoring", clinic="c1") == 0
    assert value(r, "remsguard_sessions_under_monitoring", clinic="c2") == 1  # never discharged
    assert value(r, "remsguard_sessions_completed_total", clinic="c1", outcome="compliant") == 1
    assert value(r, "remsguard_sessions_completed_total", clinic="c1", outcome="violations") == 1
    rules = violated_rules(engine.sessions["bad"])
    assert "BP_CRISIS" in rules and "PRE_DOSE_BP_MISSING" in rules
    for rule in rules:
        assert value(r, "remsguard_session_violations_total", clinic="c1", rule=rule) == 1
    assert violated_rules(engine.sessions["good"]) == frozenset()


def test_count_existing_counts_sessions_complete_at_the_first_scan(telemetry: Telemetry) -> None:
    s = Session("good", "c1")
    telemetry.know_clinics(["c1"])
    replay = Replay().feed(s.compliant()).finish(at(60 * 24))
    telemetry.observe_sessions(
        replay.engine.sessions.values(), replay.engine.protocol_of, count_existing=True
    )
    r = telemetry.registry
    assert value(r, "remsguard_sessions_completed_total", clinic="c1", outcome="compliant") == 1


def test_alert_lifecycle_acknowledgement_escalation_and_forms(telemetry: Telemetry) -> None:
    telemetry.alert_opened("c1", "critical")
    telemetry.alert_opened("c1", "critical")
    telemetry.escalated("c1", "critical")
    telemetry.alert_acknowledged(
        "c1", "critical", raised_at=T0, acknowledged_at=T0 + timedelta(seconds=40)
    )
    telemetry.notified("webhook")
    telemetry.set_forms_overdue({"c1": 3})
    telemetry.set_open_past_escalation({("c1", "critical"): 1})
    r = telemetry.registry
    assert value(r, "remsguard_alerts_open", clinic="c1", severity="critical") == 1
    assert value(r, "remsguard_escalations_total", clinic="c1", severity="critical") == 1
    assert (
        value(
            r,
            "remsguard_alert_acknowledgement_seconds_bucket",
            clinic="c1",
            severity="critical",
            le="30.0",
        )
        == 0
    )
    assert (
        value(
            r,
            "remsguard_alert_acknowledgement_seconds_bucket",
            clinic="c1",
            severity="critical",
            le="45.0",
        )
        == 1
    )
    assert value(r, "remsguard_notifications_total", channel="webhook", outcome="delivered") == 1
    assert value(r, "remsguard_forms_overdue", clinic="c1") == 3
    assert value(r, "remsguard_alerts_open_past_escalation", clinic="c1", severity="critical") == 1
    telemetry.set_open_alerts({("c1", "critical"): 0})
    assert value(r, "remsguard_alerts_open", clinic="c1", severity="critical") == 0


def test_audit_sink_lag_and_liveness(telemetry: Telemetry) -> None:
    telemetry.audit_batch(inserted=500, duplicates=3, seconds=0.04)
    telemetry.set_consumer_lag("rems.audit.v1", 2, 17)
    telemetry.set_consumer_lag("rems.audit.v1", 3, -1)  # never negative
    telemetry.up("audit-sink")
    r = telemetry.registry
    assert value(r, "remsguard_audit_sink_rows_total", result="inserted") == 500
    assert value(r, "remsguard_audit_sink_rows_total", result="duplicate") == 3
    assert value(r, "remsguard_audit_sink_batch_seconds_count") == 1
    assert value(r, "remsguard_audit_sink_last_commit_timestamp_seconds") > 0
    assert value(r, "remsguard_consumer_lag_messages", topic="rems.audit.v1", partition="2") == 17
    assert value(r, "remsguard_consumer_lag_messages", topic="rems.audit.v1", partition="3") == 0
    assert value(r, "remsguard_worker_up", service="audit-sink") == 1
    telemetry.up("audit-sink", running=False)
    assert value(r, "remsguard_worker_up", service="audit-sink") == 0


def test_served_over_http_in_the_text_format(telemetry: Telemetry) -> None:
    import urllib.request

    telemetry.up("processor")
    with serve_metrics(telemetry.registry, "127.0.0.1", 0) as server:
        url = f"http://127.0.0.1:{server.port}/metrics"
        body = urllib.request.urlopen(url, timeout=5).read().decode()
    names = {s.name for f in text_string_to_metric_families(body) for s in f.samples}
    assert "remsguard_worker_up" in names
    assert names <= METRIC_NAMES


def test_a_series_is_looked_up_once_per_label_set_and_counts_alike() -> None:
    from prometheus_client import CollectorRegistry, Counter

    from remsguard.adapters.telemetry import Series

    registry = CollectorRegistry()
    counter = Counter("unit_things_total", "Things.", ["kind"], registry=registry)
    series = Series(counter)
    assert series("a") is series("a") and series("a") is not series("b")
    series("a").inc()
    series("a").inc()
    series("b").inc()
    assert registry.get_sample_value("unit_things_total", {"kind": "a"}) == 2
    assert registry.get_sample_value("unit_things_total", {"kind": "b"}) == 1
