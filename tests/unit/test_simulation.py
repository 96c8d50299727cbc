"""The clinic simulator: every injected violation comes back as exactly its alerts, nothing else.

Each check runs the generated lines, in arrival order, through the replay handler (the same
loop `remsguard replay` uses) with `--until` past the last session's end.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from functools import cache

import httpx
import orjson
import pytest

from remsguard.bootstrap import build_engine, load_protocols
from remsguard.contract.decode import decode_event
from remsguard.domain.decisions import Alert, Rejection
from remsguard.domain.protocol import MonitoringProtocol
from remsguard.entrypoints.simulate import IngestClient, PostSink, SinkError, deliver
from remsguard.handlers.replay import ReplayEvents, replay
from remsguard.simulation import (
    VIOLATION_KINDS,
    ConfigError,
    Delivery,
    Simulation,
    SimulationConfig,
    TransportRates,
    ViolationRates,
    simulate,
)
from remsguard.simulation.sessions import stamp

START = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
BUSY = ViolationRates(*([0.12] * len(VIOLATION_KINDS)))  # 72% of sessions get one
FAULTY = TransportRates(duplicate=0.05, reorder=0.25, malformed=0.02)


@cache
def protocols() -> dict[str, MonitoringProtocol]:
    return load_protocols()


@cache
def run(
    seed: int,
    violations: ViolationRates = BUSY,
    transport: TransportRates = FAULTY,
    sessions_per_chair: int = 4,
) -> Simulation:
    config = SimulationConfig(
        start=START,
        seed=seed,
        clinics=3,
        chairs_per_clinic=3,
        sessions_per_chair=sessions_per_chair,
        concomitant_share=0.4,
        violations=violations,
        transport=transport,
    )
    return simulate(config, protocols())


def replayed(sim: Simulation) -> tuple[list[Alert], list[tuple[int, str]]]:
    alerts: list[Alert] = []
    rejected: list[tuple[int, str]] = []
    engine = build_engine("spravato-rems")
    engine.registry = sim.registry()  # the gate on: the simulated days enroll their patients
    replay(
        ReplayEvents(sim.lines(), sim.until),
        engine,
        alerts.append,
        lambda line, rejection: rejected.append((line, rejection.reason)),
    )
    return alerts, rejected


def expected(sim: Simulation) -> Counter[tuple[str, str, str]]:
    return Counter(
        (p.spec.session_id, a.rule, stamp(a.triggered_at))
        for p in sim.sessions
        for a in p.expected_alerts
    )


def raised(alerts: list[Alert]) -> Counter[tuple[str, str, str]]:
    return Counter((a.session_id, a.rule, stamp(a.triggered_at)) for a in alerts)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_every_injected_violation_is_raised_exactly_and_compliant_sessions_stay_quiet(
    seed: int,
) -> None:
    sim = run(seed)
    alerts, _ = replayed(sim)
    assert raised(alerts) == expected(sim)
    compliant = {p.spec.session_id for p in sim.sessions if p.compliant}
    assert compliant, "the run should have compliant sessions too"
    assert not [a for a in alerts if a.session_id in compliant]


def test_the_manifest_lists_each_violation_with_its_expected_alerts() -> None:
    sim = run(1)
    manifest = orjson.loads(sim.manifest_json())
    alerts, _ = replayed(sim)
    by_session: dict[str, Counter[tuple[str, str]]] = defaultdict(Counter)
    for alert in alerts:
        by_session[alert.session_id][(alert.rule, stamp(alert.triggered_at))] += 1
    for entry in manifest["sessions"]:
        wanted: Counter[tuple[str, str]] = Counter(
            (a["rule"], a["triggered_at"])
            for v in entry["violations"]
            for a in v["expected_alerts"]
        )
        assert by_session.get(entry["session_id"], Counter()) == wanted, entry["session_id"]
        assert entry["compliant"] == (not entry["violations"])
    counts = manifest["counts"]
    assert counts["sessions"] == len(manifest["sessions"]) == 36
    assert sum(counts["violations"].values()) == 36 - counts["compliant_sessions"]
    assert counts["expected_alerts"] == dict(sorted(Counter(a.rule for a in alerts).items()))
    assert manifest["until"] == stamp(sim.until)


def test_a_run_uses_every_violation_both_protocols_and_every_route() -> None:
    sim = run(1)
    kinds = Counter(v.kind for p in sim.sessions for v in p.violations)
    assert set(kinds) == set(VIOLATION_KINDS)
    assert {p.spec.protocol for p in sim.sessions} == {"spravato-rems", "ketamine-iv"}
    routes = {(p.spec.drug, p.spec.route) for seed in (1, 2, 3, 4) for p in run(seed).sessions}
    assert routes == {
        ("esketamine", "intranasal"),
        ("ketamine", "iv"),
        ("ketamine", "im"),
        ("ketamine", "sublingual"),
    }
    rules = {a.rule for seed in (1, 2, 3, 4) for p in run(seed).sessions for a in p.expected_alerts}
    assert {"SPO2_LOW", "SPO2_CRITICAL", "BP_CRISIS", "BP_RISE", "VITALS_GAP"} <= set(rules)
    assert any(p.spec.medications for p in sim.sessions)


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_a_compliant_day_with_faulty_transport_raises_nothing(seed: int) -> None:
    quiet = ViolationRates(*([0.0] * len(VIOLATION_KINDS)))
    sim = run(seed, quiet, TransportRates(duplicate=0.1, reorder=0.5, malformed=0.0))
    alerts, rejected = replayed(sim)
    assert alerts == []
    assert rejected == []
    assert all(p.compliant for p in sim.sessions)


def test_malformed_events_come_back_as_rejections_not_alerts() -> None:
    sim = run(2)
    manifest = sim.manifest()
    alerts, rejected = replayed(sim)
    assert rejected == [(r["line"], r["reason"]) for r in manifest["rejections"]]
    assert set(manifest["transport"]["malformed_by_reason"]) == {
        "invalid_json",
        "missing_field",
        "out_of_range",
    }
    assert len(rejected) == manifest["transport"]["malformed"] > 0
    malformed_ids = {
        f"{p.spec.session_id}-{n:03d}-x" for p in sim.sessions for n in range(len(p.events) + 1)
    }
    assert not [a for a in alerts if malformed_ids & set(a.evidence)]


def test_every_other_line_is_a_valid_event_and_duplicates_repeat_an_earlier_line() -> None:
    sim = run(3)
    seen: set[bytes] = set()
    for delivery in sim.deliveries:
        decoded = decode_event(delivery.line)
        if delivery.kind == "malformed":
            assert isinstance(decoded, Rejection)
            assert decoded.reason == delivery.reason
            continue
        assert not isinstance(decoded, Rejection), (delivery.line, decoded)
        if delivery.kind == "duplicate":
            assert delivery.line in seen
        else:
            assert delivery.line not in seen
        seen.add(delivery.line)
    assert sim.transport.duplicates > 0


def test_reordering_stays_within_the_lateness_and_keeps_each_stream_in_order() -> None:
    sim = run(4)
    lateness = {p.spec.session_id: p.lateness for p in sim.sessions}
    opened: set[str] = set()
    last: dict[tuple[str, str], datetime] = {}
    for delivery in sim.deliveries:
        if delivery.kind != "event":
            continue
        doc = orjson.loads(delivery.line)
        session = delivery.session_id
        assert timedelta(0) <= delivery.arrival - delivery.event_time < lateness[session]
        if doc["type"] == "session.opened":
            opened.add(session)
        assert session in opened, "session.opened is delivered first"
        stream = (session, doc["type"])
        assert last.get(stream, delivery.event_time) <= delivery.event_time
        last[stream] = delivery.event_time
    arrivals = [d.arrival for d in sim.deliveries]
    assert arrivals == sorted(arrivals)
    assert sim.transport.out_of_order > 0
    assert {p.lateness for p in sim.sessions} == {timedelta(minutes=5), timedelta(minutes=2)}


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    config = SimulationConfig(start=START, seed=42, violations=BUSY, transport=FAULTY)
    first, second = simulate(config, protocols()), simulate(config, protocols())
    assert b"".join(first.lines()) == b"".join(second.lines())
    assert first.manifest_json() == second.manifest_json()
    other = simulate(
        SimulationConfig(start=START, seed=43, violations=BUSY, transport=FAULTY), protocols()
    )
    assert b"".join(other.lines()) != b"".join(first.lines())


def test_trajectories_are_plausible() -> None:
    sim = run(6, ViolationRates(*([0.0] * len(VIOLATION_KINDS))))
    near_peak: list[float] = []
    late: list[float] = []
    for plan in sim.sessions:
        docs = [e.doc for e in plan.events]
        bp = [(e.at, e.doc["data"]) for e in plan.events if "systolic" in e.doc["data"]]
        baseline = next(d for at, d in bp if at < plan.dosed_at)["systolic"]
        for at, data in bp:
            minutes = (at - plan.dosed_at).total_seconds() / 60
            if 30 <= minutes <= 50:
                near_peak.append(data["systolic"] - baseline)
            elif minutes >= 100:
                late.append(data["systolic"] - baseline)
            assert data["systolic"] - data["diastolic"] >= 25
        vitals = [d["data"] for d in docs if d["type"] == "vitals.recorded"]
        assert all(92 <= v["spo2"] <= 100 for v in vitals)
        assert all(12 <= v["respiratory_rate"] <= 18 for v in vitals)
        assert all(45 <= v["heart_rate"] <= 140 for v in vitals)
        assessments = [d["data"] for d in docs if d["type"] == "assessment.recorded"]
        assert assessments[-1]["sedation_moaas"] == 5
        dissociated = [a["dissociation"] for a in assessments]
        assert not any(dissociated[-2:]), "dissociation resolves before discharge"
        assert docs[-1]["type"] == "session.discharged"
        assert plan.discharged_at - plan.dosed_at >= timedelta(minutes=90)
    assert sum(near_peak) / len(near_peak) > sum(late) / len(late) + 3
    early = [
        e.doc["data"]["dissociation"]
        for p in sim.sessions
        for e in p.events
        if e.type == "assessment.recorded"
        and p.dosed_at < e.at < p.dosed_at + timedelta(minutes=30)
    ]
    assert sum(early) > len(early) / 3, "dissociation is common early"
    assert sum(near_peak) / len(near_peak) > 5
    benign_dips = [
        e.doc["data"]["spo2"]
        for p in sim.sessions
        for e in p.events
        if e.type == "vitals.recorded" and e.doc["data"]["spo2"] < 96
    ]
    assert benign_dips, "occasional benign dips"


def test_chairs_run_sessions_back_to_back() -> None:
    sim = run(1)
    by_chair: dict[tuple[str, int], list[tuple[datetime, datetime]]] = defaultdict(list)
    for plan in sim.sessions:
        by_chair[(plan.spec.clinic_id, plan.spec.chair)].append(
            (plan.spec.opened_at, plan.discharged_at)
        )
    assert len(by_chair) == 9
    for spans in by_chair.values():
        assert len(spans) == 4
        for (_, end), (begin, _) in itertools.pairwise(spans):
            assert timedelta(minutes=5) <= begin - end <= timedelta(minutes=30)
    assert len({p.spec.patient_ref for p in sim.sessions}) == len(sim.sessions)


def test_impossible_rates_are_refused() -> None:
    with pytest.raises(ConfigError):
        simulate(
            SimulationConfig(start=START, seed=1, violations=ViolationRates(*([0.2] * 6))),
            protocols(),
        )
    with pytest.raises(ConfigError):
        simulate(
            SimulationConfig(start=START, seed=1, transport=TransportRates(duplicate=1.5)),
            protocols(),
        )


# -- delivery: pacing and the HTTP client ------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.flushes = 0

    def send(self, delivery: Delivery) -> None:
        self.lines.append(delivery.line)

    def flush(self) -> None:
        self.flushes += 1


def test_speed_paces_deliveries_by_arrival_time() -> None:
    sim = run(1)
    deliveries = sim.deliveries[:50]
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    sink = Recorder()
    deliver(deliveries, [sink], 60.0, clock=lambda: now[0], sleep=sleep)
    span = (deliveries[-1].arrival - deliveries[0].arrival).total_seconds()
    assert now[0] == pytest.approx(span / 60.0)
    assert sink.lines == [d.line for d in deliveries]
    fast = Recorder()
    sleeps.clear()
    deliver(deliveries, [fast], 0.0, clock=lambda: now[0], sleep=sleep)
    assert sleeps == [] and fast.lines == sink.lines


def test_ingest_client_posts_ndjson_batches_with_the_token_and_retries() -> None:
    requests: list[httpx.Request] = []
    failures = [503]

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if failures:
            return httpx.Response(failures.pop())
        n = request.content.count(b"\n")
        return httpx.Response(200, json={"results": [{"status": "accepted"}] * n})

    client = IngestClient(
        "http://ingest.test/v1/events",
        "dev-token",
        client=httpx.Client(transport=httpx.MockTransport(handler)),
        sleep=lambda _: None,
    )
    sink = PostSink(client, batch_size=3)
    lines = [b'{"n":%d}' % i for i in range(7)]
    deliver([_fake(line) for line in lines], [sink], 0.0)
    assert [r.headers["authorization"] for r in requests] == ["Bearer dev-token"] * 4
    assert {r.headers["content-type"] for r in requests} == {"application/x-ndjson"}
    bodies = [r.content for r in requests[1:]]
    assert bodies == [b"".join(line + b"\n" for line in lines[i : i + 3]) for i in (0, 3, 6)]
    assert requests[0].content == requests[1].content  # the 503 was retried
    assert client.lines == 7 and client.batches == 3
    assert client.outcomes == Counter({"accepted": 7})


def test_ingest_client_gives_up_on_a_refusal() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"detail": "bad token"})

    client = IngestClient(
        "http://ingest.test/v1/events",
        "wrong",
        client=httpx.Client(transport=httpx.MockTransport(handler)),
        sleep=lambda _: None,
    )
    with pytest.raises(SinkError, match="401"):
        client.post([b"{}"])


def _fake(line: bytes) -> Delivery:
    return Delivery(START, line, "event", "s", START)


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []

    def send(
        self,
        topic: str,
        key: bytes | None = None,
        value: bytes = b"",
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        self.sent.append((topic, key, value))

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        pass


def test_kafka_sink_routes_by_type_and_dead_letters_unroutable_lines() -> None:
    """Issue 15 item 9: `publish`'s policy. A line no input topic can take goes to the
    dead-letter topic with its reason (not raw to the vitals topic); with skip_invalid every
    malformed line is skipped and counted instead."""
    from remsguard.entrypoints.simulate import KafkaSink

    sim = run(2)
    producer = FakeProducer()
    sink = KafkaSink("unused:9092", producer=producer, create=False)
    deliver(sim.deliveries, [sink], 0.0)
    assert [value for _, _, value in producer.sent] == [d.line for d in sim.deliveries]
    unroutable = [t for t, _, _ in producer.sent if t == "rems.deadletter.v1"]
    assert unroutable and sum(sink.report.dead_lettered.values()) == len(unroutable)
    assert sink.report.ok
    skipping = FakeProducer()
    skipper = KafkaSink("unused:9092", producer=skipping, create=False, skip_invalid=True)
    deliver(sim.deliveries, [skipper], 0.0)
    malformed = [d for d in sim.deliveries if d.kind == "malformed"]
    assert sum(skipper.report.skipped.values()) == len(malformed)
    assert len(skipping.sent) == len(sim.deliveries) - len(malformed)
    topics = {
        "dose.administered": "rems.dosing.v1",
        "vitals.recorded": "rems.vitals.v1",
        "session.opened": "rems.sessions.v1",
        "assessment.recorded": "rems.sessions.v1",
        "session.discharged": "rems.sessions.v1",
    }
    for (topic, key, _), delivery in zip(producer.sent, sim.deliveries, strict=True):
        if topic != "rems.deadletter.v1":
            assert key == delivery.session_id.encode()
        if delivery.kind != "malformed":
            assert topic == topics[orjson.loads(delivery.line)["type"]]
    assert sink.published == len(sim.deliveries) - len(unroutable)
