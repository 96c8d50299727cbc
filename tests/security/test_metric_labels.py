"""Issue 13, finding 6 (metrics): a device could mint unlimited `clinic` label values (5,000
clinic ids gave 10,000+ series). Labels now name only clinics the service knows (configured,
or opened a session the engine accepted), at most `max_clinics`; every other clinic is `other`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from integration.embedded_support import Up, event, ndjson, start_up
from remsguard.adapters.metrics import new_registry
from remsguard.adapters.telemetry import OTHER_CLINIC, ClinicLabels, Telemetry
from remsguard.contract.decode import decode_event
from remsguard.domain.decisions import Rejection
from unit.scenario import Replay, Session


def _clinics(families: Iterable[object]) -> dict[str, set[str]]:
    """Clinic label values by metric family."""
    out: dict[str, set[str]] = {}
    for family in families:
        for sample in family.samples:  # type: ignore[attr-defined]
            if "clinic" in sample.labels:
                out.setdefault(family.name, set()).add(sample.labels["clinic"])  # type: ignore[attr-defined]
    return out


def _registry_clinics(registry: CollectorRegistry) -> dict[str, set[str]]:
    return _clinics(registry.collect())


def test_rejected_and_unopened_clinics_get_no_label_an_opened_one_does() -> None:
    telemetry = Telemetry(new_registry())
    replay = Replay()
    engine = replay.engine
    for n in range(5_000):  # rejected events naming 5,000 clinics
        raw = event("vitals.recorded", f"r{n}", f"s-r{n}", "not a time", {"spo2": 90}, f"x{n}")
        rejection = decode_event(raw)
        assert isinstance(rejection, Rejection) and rejection.clinic_id == f"x{n}"
        telemetry.observe_decisions(engine.reject(rejection, source=f"t/{n}"), topic="http")
    for n in range(2_000):  # accepted crisis readings of sessions nobody opened
        reading = Session(f"s-u{n}", f"u{n}").bp(30, 250, 150)
        telemetry.observe_decisions(engine.handle(reading), topic="http", event=reading)
    real = Session("s-real", "c-real")
    for item in [real.opened(-10), real.bp(-5), real.dose(0), real.bp(30, 250, 150)]:
        telemetry.observe_decisions(engine.handle(item), topic="http", event=item)
    for alert_clinic in ("u1", "c-real"):  # the alerting service, in the engine's process
        telemetry.alert_opened(alert_clinic, "critical")
    telemetry.observe_sessions(engine.sessions.values(), engine.protocol_of)

    labels = _registry_clinics(telemetry.registry)
    assert labels, "no clinic series at all"
    for family, values in labels.items():
        assert values <= {"c-real", OTHER_CLINIC}, family
    assert "c-real" in labels["remsguard_alerts_raised"]  # the case that fires
    assert OTHER_CLINIC in labels["remsguard_alerts_raised"]  # and the one that must not
    assert labels["remsguard_sessions_under_monitoring"] == {"c-real", OTHER_CLINIC}
    assert labels["remsguard_alerts_open"] == {"c-real", OTHER_CLINIC}
    monitored = telemetry.registry.get_sample_value(
        "remsguard_sessions_under_monitoring", {"clinic": OTHER_CLINIC}
    )
    assert monitored == 2_000  # counted, under `other`


def test_the_number_of_labelled_clinics_is_capped() -> None:
    telemetry = Telemetry(new_registry(), ClinicLabels(limit=3, configured=["c-conf"]))
    replay = Replay()
    for n in range(6):
        s = Session(f"s{n}", f"c{n}")
        for item in [s.opened(-10), s.bp(-5), s.dose(0), s.bp(20, 250, 150)]:
            telemetry.observe_decisions(replay.engine.handle(item), topic="http", event=item)
    raised = _registry_clinics(telemetry.registry)["remsguard_alerts_raised"]
    assert raised == {"c0", "c1", OTHER_CLINIC}  # c-conf took the first place
    assert telemetry.clinics.known == {"c-conf", "c0", "c1"}


def test_a_process_without_an_engine_labels_the_clinics_of_stored_alerts_up_to_the_cap() -> None:
    telemetry = Telemetry(new_registry(), ClinicLabels(limit=2))  # e.g. the notifier
    for clinic in ("a", "b", "c"):
        telemetry.alert_opened(clinic, "critical")
    telemetry.set_open_alerts({("a", "critical"): 1, ("b", "critical"): 1, ("c", "critical"): 4})
    registry = telemetry.registry
    assert _registry_clinics(registry)["remsguard_alerts_open"] == {"a", "b", OTHER_CLINIC}
    assert (
        registry.get_sample_value(
            "remsguard_alerts_open", {"clinic": OTHER_CLINIC, "severity": "critical"}
        )
        == 4
    )


def _series(up: Up) -> dict[str, set[str]]:
    text = up.client.get(f"{up.base}/metrics", headers=up.auth("admin")).text
    return _clinics(text_string_to_metric_families(text))


def test_remsguard_up_keeps_metric_labels_bounded(tmp_path: Path) -> None:
    up = start_up(tmp_path / "data")
    try:
        t0 = datetime.now(UTC) - timedelta(minutes=3)

        def stamp(minutes: float) -> str:
            return (t0 + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")

        crisis = {"systolic": 250, "diastolic": 150}
        made_up = [
            event("vitals.recorded", f"u{n}", f"s-u{n}", stamp(1), crisis, clinic=f"made-up-{n}")
            for n in range(5_000)
        ]
        rejected = [
            event("vitals.recorded", f"r{n}", f"s-r{n}", "yesterday", crisis, clinic=f"bad-{n}")
            for n in range(5_000)
        ]
        real = [
            event("session.opened", "o", "s-real", stamp(0), {"patient_ref": "p"}, "c-real"),
            event("vitals.recorded", "v", "s-real", stamp(1), crisis, clinic="c-real"),
        ]
        for lines in (made_up, rejected, real):
            response = up.post(ndjson(lines))
            assert response.status_code == 200, response.text
        assert up.post(ndjson(rejected)).json()["rejected"] == 5_000
        series = _series(up)
        assert "c-real" in series["remsguard_alerts_raised"]
        for family, values in series.items():
            assert values <= {"c-real", OTHER_CLINIC}, (family, sorted(values)[:5])
    finally:
        up.stop()
