"""Engine semantics from issue 3: event time and lateness, episodes, idempotence, sessions,
doses, discharge, protocols, concomitant medications, deterministic ids and the audit trail."""

from __future__ import annotations

import heapq
from datetime import timedelta

import pytest

from remsguard.domain.decisions import (
    AuditKind,
    Outcome,
    Severity,
    WithdrawalReason,
    stable_id,
)
from remsguard.domain.engine import MonitoringEngine
from remsguard.domain.events import Event
from remsguard.domain.protocol import RULE_PARAMS

from .scenario import (
    T0,
    Replay,
    Session,
    at,
    engine,
    only,
    protocols,
    rules,
    run,
    run_open,
    timeline,
)

SECOND = 1 / 60


def merged(*streams: list[Event]) -> list[Event]:
    """Several sessions' streams interleaved in event-time order (stable per stream)."""
    keyed = [[(e.occurred_at, i, n, e) for n, e in enumerate(s)] for i, s in enumerate(streams)]
    return [item[-1] for item in heapq.merge(*keyed)]


# -- event time, the clock and the allowed lateness -----------------------------------------


def test_issue_example_bp_at_41_arriving_after_45_satisfies_the_40_minute_check() -> None:
    s = Session()
    events = [s.bp(-5), s.dose(0), s.hr(10), s.hr(20), s.hr(30), s.bp(45), s.bp(41, id="b41")]
    assert only(run(events, until=600), "POST_DOSE_BP_MISSED") == []


def test_a_late_reading_is_the_only_one_in_the_window_and_still_counts() -> None:
    s = Session()
    # The clock reaches 54 before the BP stamped 50 arrives (4 minutes late).
    events = [s.bp(-5), s.dose(0), s.hr(54), s.bp(50)]
    assert only(run(events, until=600), "POST_DOSE_BP_MISSED") == []


def test_a_reading_exactly_the_allowed_lateness_late_still_counts() -> None:
    """'Out of order by up to an allowed lateness' includes exactly the lateness (5 min)."""
    s = Session()
    events = [s.bp(-5), s.dose(0), s.hr(55), s.bp(50)]
    assert only(run(events, until=600), "POST_DOSE_BP_MISSED") == []


def test_a_reading_later_than_the_allowed_lateness_is_too_late() -> None:
    s = Session()
    events = [s.bp(-5), s.dose(0, id="dose"), s.hr(55 + SECOND), s.bp(50)]
    [missed] = only(run(events, until=600), "POST_DOSE_BP_MISSED")
    assert missed.triggered_at == at(50)
    assert missed.evidence == ("dose",)


def test_a_pre_dose_bp_arriving_after_the_dose_within_lateness_counts() -> None:
    s = Session()
    events = [s.dose(0), s.hr(3), s.bp(-2, 150, 95, id="pre")]
    alerts = run(events, until=600)
    assert only(alerts, "PRE_DOSE_BP_MISSING") == []
    [elevated] = only(alerts, "PRE_DOSE_BP_ELEVATED")
    assert elevated.evidence[1] == "pre"


def test_a_pre_dose_bp_exactly_the_lateness_late_counts() -> None:
    s = Session()
    events = [s.dose(0), s.hr(5), s.bp(0)]
    assert only(run(events, until=600), "PRE_DOSE_BP_MISSING") == []


def test_a_late_pre_dose_bp_sets_the_rise_baseline() -> None:
    s = Session()
    events = [s.bp(-30, 150, 95), s.dose(0), s.bp(-1, 110, 70, id="base"), s.bp(3, 150, 95, id="r")]
    [rise] = only(run(events, until=600), "BP_RISE")
    assert rise.evidence == ("r", "base")


def test_deadlines_fire_only_once_the_clock_passes_deadline_plus_lateness() -> None:
    s = Session()
    events = [s.bp(-5), s.dose(0)]
    assert only(run(events, until=55), "POST_DOSE_BP_MISSED") == []
    [missed] = only(run(events, until=55 + SECOND), "POST_DOSE_BP_MISSED")
    assert missed.triggered_at == at(50)  # the deadline, not the clock


def test_a_silent_device_still_triggers_its_deadlines_from_the_clock() -> None:
    s = Session()
    replay = Replay().feed([s.bp(-5), s.dose(0)])
    assert replay.alerts == []
    decisions = replay.engine.advance_to(at(300))
    assert rules(decisions.alerts) == ["VITALS_GAP", "POST_DOSE_BP_MISSED", "SESSION_NOT_CLOSED"]


def test_the_clock_never_goes_back() -> None:
    s = Session()
    replay = Replay().feed([s.bp(-5), s.dose(0)])
    assert len(replay.engine.advance_to(at(60)).alerts) == 2
    assert replay.engine.advance_to(at(30)).alerts == []
    assert replay.engine.clock == at(60)


# -- episodes ------------------------------------------------------------------------------


def test_crisis_crisis_normal_crisis_gives_two_alerts() -> None:
    s = Session()
    events = [
        s.bp(-5),
        s.dose(0),
        s.bp(10, 190, 100, id="c1"),
        s.bp(15, 185, 100, id="c2"),
        s.bp(20, 130, 85, id="n"),
        s.bp(25, 181, 100, id="c3"),
    ]
    crises = only(run(events, until=600), "BP_CRISIS")
    assert [a.evidence for a in crises] == [("c1",), ("c3",)]
    assert [a.triggered_at for a in crises] == [at(10), at(25)]
    assert crises[0].alert_id != crises[1].alert_id


@pytest.mark.parametrize(
    ("rule", "reading"),
    [
        ("SPO2_LOW", lambda s, t, bad, i: s.vitals(t, spo2=90 if bad else 97, id=i)),
        ("SPO2_CRITICAL", lambda s, t, bad, i: s.vitals(t, spo2=85 if bad else 97, id=i)),
        ("RESPIRATORY_DEPRESSION", lambda s, t, bad, i: s.vitals(t, rr=8 if bad else 14, id=i)),
        ("DEEP_SEDATION", lambda s, t, bad, i: s.assess(t, 1 if bad else 5, id=i)),
        ("BP_RISE", lambda s, t, bad, i: s.bp(t, 170 if bad else 125, 80, id=i)),
    ],
)
def test_threshold_episodes_rearm_only_after_a_reading_that_no_longer_meets(rule, reading) -> None:
    s = Session()
    pattern = [True, True, False, True, True, True, False, False, True]
    events = [s.bp(-5, 120, 80), s.dose(0)]
    events += [reading(s, 5 + 5 * n, bad, f"r{n}") for n, bad in enumerate(pattern)]
    got = only(run(events, until=600), rule)
    assert [a.evidence[0] for a in got] == ["r0", "r3", "r8"]


def test_spo2_moving_from_low_to_critical_and_back() -> None:
    # Judgement call, literal reading of the issue: LOW is "below 92 and not below 88", so a
    # critical reading ends a LOW episode, and a low one after it starts a new LOW episode.
    s = Session()
    events = [
        s.dose(0),
        *[s.vitals(t, spo2=v, id=f"o{t}") for t, v in [(5, 90), (10, 85), (15, 90)]],
    ]
    alerts = run(events, until=600)
    assert [(a.rule, a.evidence) for a in alerts if a.rule.startswith("SPO2")] == [
        ("SPO2_LOW", ("o5",)),
        ("SPO2_CRITICAL", ("o10",)),
        ("SPO2_LOW", ("o15",)),
    ]


def test_every_respiratory_depression_assessment_raises() -> None:
    # The issue's episode list covers RESPIRATORY_DEPRESSION "from readings" only; an observed
    # respiratory depression is raised for each assessment that reports it.
    s = Session()
    events = [s.dose(0), s.assess(10, resp=True, id="a1"), s.assess(15, resp=True, id="a2")]
    got = only(run(events, until=600), "RESPIRATORY_DEPRESSION")
    assert [a.evidence for a in got] == [("a1",), ("a2",)]


# -- idempotence ---------------------------------------------------------------------------


def test_a_duplicate_event_changes_nothing() -> None:
    s = Session()
    crisis = s.bp(10, 190, 100, id="c")
    events = [s.bp(-5), s.dose(0), crisis]
    replay = Replay().feed(events)
    again = replay.engine.handle(crisis)
    assert again.outcome is Outcome.DUPLICATE
    assert again.alerts == [] and again.audit == []
    assert rules(replay.alerts) == ["BP_CRISIS", "BP_RISE"]
    doubled = [e for e in events for _ in range(2)]
    assert run(doubled, until=600) == run(events, until=600)


def test_a_duplicate_dose_or_discharge_changes_nothing() -> None:
    s = Session()
    events = [s.bp(-5), s.dose(0), s.hr(10), s.discharge(60)]
    doubled = [*events, events[1], events[3], events[1]]
    assert run(doubled, until=600) == run(events, until=600)
    assert set(rules(run(events, until=600))) == {
        "EARLY_DISCHARGE",
        "VITALS_GAP",
        "POST_DOSE_BP_MISSED",
        "DISCHARGE_WITHOUT_FINAL_BP",
    }


# -- several sessions ------------------------------------------------------------------------


def _problem_sessions() -> list[list[Event]]:
    a, b, c = Session("a"), Session("b", clinic_id="c2"), Session("c")
    return [
        [a.bp(-5, 150, 95), a.dose(0), a.bp(20, 200, 100), a.hr(30), a.discharge(90)],
        [b.opened(-20, "ketamine-iv"), b.dose(3), b.vitals(8, spo2=93), b.assess(12, 3)],
        [c.opened(-15, meds=["opioid"]), *c.compliant(dose_at=7, discharge_at=140)],
    ]


def test_interleaved_sessions_give_the_same_alerts_as_each_alone() -> None:
    streams = _problem_sessions()
    together = run(merged(*streams), until=600)
    alone = [alert for stream in streams for alert in run(stream, until=600)]
    assert len(alone) > 8
    assert sorted(together, key=lambda a: a.alert_id) == sorted(alone, key=lambda a: a.alert_id)


def test_same_session_id_is_one_session_even_from_several_devices() -> None:
    s = Session()
    dev = Session()  # same session id; different device, different event ids
    events = [s.bp(-5, id="x1"), s.dose(0, id="x2"), dev.bp(10, 190, 100, id="y1")]
    got = rules(run(events, until=12))
    assert "BP_CRISIS" in got
    assert "PRE_DOSE_BP_MISSING" not in got  # the first device's reading counts


# -- two doses -------------------------------------------------------------------------------


def test_two_doses_first_for_pre_dose_and_baseline_latest_for_window() -> None:
    s = Session()
    events = timeline(
        s.bp(-5, 120, 80, id="base"),
        s.dose(0, id="d1"),
        [s.hr(m) for m in range(5, 171, 5)],
        s.bp(40, 165, 85, id="rise"),  # between the doses: already post-dose for BP_RISE
        s.bp(60, 125, 80),
        s.dose(70, id="d2"),  # no BP in the hour before d2: fine, only the first dose counts
        s.bp(110),  # the 40-minute check of d2
        s.bp(170),
        s.discharge(175, id="dis"),  # 105 minutes after d2: early
    )
    replay = Replay().feed(events).finish(at(600))
    got = {(a.rule, a.evidence) for a in replay.alerts}
    assert got == {("BP_RISE", ("rise", "base")), ("EARLY_DISCHARGE", ("dis", "d2"))}
    windows = [r for r in replay.audit if r.kind is AuditKind.WINDOW_SATISFIED]
    assert windows == []  # discharged before d2 + 120
    dosed = [r.subject_id for r in replay.audit if r.kind is AuditKind.SESSION_DOSED]
    assert dosed == ["d1", "d2"]


def test_window_satisfied_is_recorded_for_the_latest_dose() -> None:
    s = Session()
    events = [s.bp(-5), s.dose(0, id="d1"), s.dose(20, id="d2")]
    replay = Replay().feed(events).finish(at(600))
    [window] = [r for r in replay.audit if r.kind is AuditKind.WINDOW_SATISFIED]
    assert (window.subject_id, window.occurred_at) == ("d2", at(140))


def test_session_not_closed_counts_from_the_latest_dose() -> None:
    s = Session()
    events = [s.bp(-5), s.dose(0), s.dose(30, id="d2")]
    [alert] = only(run(events, until=600), "SESSION_NOT_CLOSED")
    assert (alert.triggered_at, alert.evidence) == (at(270), ("d2",))


# -- discharge -------------------------------------------------------------------------------


def test_events_after_discharge_are_recorded_but_trigger_no_rules() -> None:
    s = Session()
    events = [*s.compliant()]
    late = [
        s.bp(130, 200, 130, id="after1"),
        s.vitals(131, spo2=80, rr=4, id="after2"),
        s.assess(132, 0, resp=True, id="after3"),
        s.discharge(133, stable=False, id="after4"),  # a repeated discharge, after the end
    ]
    replay = Replay().feed([*events, *late]).finish(at(900))
    assert replay.alerts == []
    accepted = {r.subject_id for r in replay.audit if r.kind is AuditKind.EVENT_ACCEPTED}
    assert {"after1", "after2", "after3", "after4"} <= accepted
    assert all(d.outcome is Outcome.ACCEPTED for d in replay.decisions)


def test_issue_14_gap_2_a_discharge_before_the_dose_no_longer_silences_the_session() -> None:
    """Discharge at -5, dose at 0, SpO2 80 at 20, BP 200/130 at 30: the dose after the
    discharge is critical, and the session is monitored again from it."""
    s = Session()
    events = [
        s.discharge(-5, id="dis"),
        s.dose(0, id="dose"),
        s.vitals(20, spo2=80, id="o20"),
        s.bp(30, 200, 130, id="bp30"),
    ]
    got = {(a.rule, a.evidence) for a in run(events, until=600)}
    assert got == {
        ("DOSE_AFTER_DISCHARGE", ("dose", "dis")),
        ("PRE_DOSE_BP_MISSING", ("dose",)),
        ("SPO2_CRITICAL", ("o20",)),
        ("BP_CRISIS", ("bp30",)),
        ("VITALS_GAP", ("dose",)),  # 0 -> 20
        ("VITALS_GAP", ("bp30",)),  # nothing after 30
        ("SESSION_NOT_CLOSED", ("dose",)),
    }
    [alert] = only(run(events, until=600), "DOSE_AFTER_DISCHARGE")
    assert alert.severity is Severity.CRITICAL and alert.triggered_at == at(0)


def test_a_dose_after_a_discharge_puts_the_session_back_under_monitoring() -> None:
    s = Session()
    compliant = s.compliant(discharge_at=125)
    events = [
        *compliant,
        s.bp(130, 200, 130, id="after1"),  # between the discharge and the new dose: judged
        s.dose(133, id="again"),
        s.bp(175, 125, 80),  # the new dose's 40-minute check
        s.discharge(200, id="dis2"),  # 67 minutes after it: early
    ]
    replay = Replay().feed(events).finish(at(900))
    got = {(a.rule, a.evidence) for a in replay.open_alerts}
    assert ("DOSE_AFTER_DISCHARGE", ("again", compliant[-1].event_id)) in got
    assert ("BP_CRISIS", ("after1",)) in got
    assert ("EARLY_DISCHARGE", ("dis2", "again")) in got
    assert not [a for a in replay.alerts if a.rule == "SESSION_NOT_CLOSED"]
    dosed = [r.subject_id for r in replay.audit if r.kind is AuditKind.SESSION_DOSED]
    assert dosed[-1] == "again"
    discharged = [r.subject_id for r in replay.audit if r.kind is AuditKind.SESSION_DISCHARGED]
    assert discharged[-1] == "dis2"  # the new period's discharge is recorded too


def test_discharge_rules_apply_only_to_sessions_with_a_dose() -> None:
    s = Session()
    # No BP before discharge, sedated, discharged at once: nothing, since no dose was given.
    events = [s.opened(-30), s.assess(-10, 2, id="deep"), s.discharge(0)]
    assert [(a.rule, a.evidence) for a in run(events, until=600)] == [("DEEP_SEDATION", ("deep",))]


def test_discharge_is_recorded_once() -> None:
    s = Session()
    events = [*s.compliant()]
    replay = Replay().feed(events).finish(at(600))
    discharged = [r for r in replay.audit if r.kind is AuditKind.SESSION_DISCHARGED]
    assert [r.subject_id for r in discharged] == [events[-1].event_id]


# -- protocols -----------------------------------------------------------------------------


def test_a_session_never_opened_uses_the_default_protocol() -> None:
    s = Session()
    [alert] = run([s.dose(0)], until=6)  # PRE_DOSE_BP_MISSING, decided after dose + 5
    spravato = protocols()["spravato-rems"]
    assert (alert.protocol, alert.protocol_version) == (spravato.name, spravato.version)
    # and with another default, that one
    [alert] = run([Session().dose(0)], until=3, protocol="ketamine-iv")
    assert alert.protocol == "ketamine-iv"


def test_an_unknown_protocol_is_rejected() -> None:
    s = Session()
    replay = Replay()
    decisions = replay.engine.handle(s.opened(-10, "no-such-protocol", id="o"))
    assert decisions.outcome is Outcome.REJECTED
    assert decisions.rejection is not None
    assert decisions.rejection.reason == "unknown_protocol"
    assert decisions.rejection.event_id == "o"
    [record] = decisions.audit
    assert record.kind is AuditKind.EVENT_REJECTED
    assert record.detail["reason"] == "unknown_protocol"
    assert "s1" not in replay.engine.sessions


def test_protocol_and_version_are_on_every_alert() -> None:
    k = Session("k")
    events = [k.opened(-10, "ketamine-iv"), k.dose(0)]
    alerts = run(events, until=600)
    ketamine = protocols()["ketamine-iv"]
    assert alerts
    assert {(a.protocol, a.protocol_version) for a in alerts} == {("ketamine-iv", ketamine.version)}
    assert ketamine.version != protocols()["spravato-rems"].version


def test_ketamine_iv_uses_its_own_thresholds() -> None:
    k = Session("k")
    events = timeline(
        k.opened(-20, "ketamine-iv"),
        k.bp(-5, 145, 92),  # above 140/90 but not above 150/95: quiet here
        k.dose(0, id="dose"),
        [k.hr(m) for m in range(4, 95, 4)],  # every 4 minutes: within the 5-minute gap
        k.bp(20, 150, 110, id="crisis"),  # diastolic >= 110 is a crisis in this protocol
        k.vitals(22, spo2=93, id="low"),  # below 94
        k.assess(24, 3, id="deep"),  # MOAA/S <= 3
        k.assess(80, 5),
        k.bp(85, 130, 85),
        k.discharge(95, id="dis"),  # window is 90 minutes: not early
    )
    got = [(a.rule, a.evidence) for a in run(events, until=600)]
    assert sorted(got) == sorted(
        [
            ("BP_CRISIS", ("crisis",)),
            ("SPO2_LOW", ("low",)),
            ("DEEP_SEDATION", ("deep",)),
        ]
    )
    # the same readings under the default protocol: none of the above, but its own rules
    assert sorted(rules(run(events[1:], until=600))) == [
        "EARLY_DISCHARGE",
        "POST_DOSE_BP_MISSED",
        "PRE_DOSE_BP_ELEVATED",
    ]


def test_ketamine_iv_deadlines_and_lateness() -> None:
    k = Session("k")
    base = [k.opened(-20, "ketamine-iv"), k.bp(-5), k.dose(0, id="dose")]
    gap = [(a.rule, a.triggered_at) for a in run([*base, k.hr(4), k.hr(10)], until=12)]
    assert gap == [("VITALS_GAP", at(9))]  # 4 -> 10 is more than 5 minutes
    # the infusion's mid-point check is 10-25 minutes, decided after 25 + 2 minutes
    assert only(run(base, until=27), "POST_DOSE_BP_MISSED") == []
    [missed] = only(run(base, until=27 + SECOND), "POST_DOSE_BP_MISSED")
    assert missed.triggered_at == at(25)


# -- concomitant medications ---------------------------------------------------------------


def _meds_case(meds: list[str]) -> list[Event]:
    s = Session()
    return timeline(
        s.opened(-30, meds=meds),
        s.bp(-5, 120, 80),
        s.dose(0),
        s.vitals(10, 120, 80, spo2=93, rr=11, id="v10"),  # low for CNS depressants only
        s.vitals(21, spo2=97, rr=14, id="v21"),  # 11 minutes later: a gap at 10 minutes
        s.vitals(25, 150, 100, id="v25"),  # +30/+20: a rise for stimulants/MAOIs
        s.vitals(33, spo2=97),
        s.vitals(41, spo2=97),
        s.bp(47, 125, 80),  # the only 40-minute reading: too late with a 45-minute limit
        [s.hr(m) for m in range(55, 130, 9)],
        s.assess(125, 5),
        s.bp(126),
        s.discharge(130),
    )


@pytest.mark.parametrize(
    ("meds", "expected"),
    [
        ([], set()),
        (["opioid"], {"SPO2_LOW", "RESPIRATORY_DEPRESSION", "VITALS_GAP"}),
        (["benzodiazepine"], {"SPO2_LOW", "VITALS_GAP"}),
        (["sedative_hypnotic"], {"SPO2_LOW", "VITALS_GAP"}),
        (["psychostimulant"], {"BP_RISE", "POST_DOSE_BP_MISSED"}),
        (["maoi"], {"BP_RISE", "POST_DOSE_BP_MISSED"}),
        (
            ["maoi", "opioid"],
            {"SPO2_LOW", "RESPIRATORY_DEPRESSION", "VITALS_GAP", "BP_RISE", "POST_DOSE_BP_MISSED"},
        ),
    ],
)
def test_concomitant_medications_tighten_thresholds(meds: list[str], expected: set[str]) -> None:
    assert set(rules(run(_meds_case(meds), until=600))) == expected


def test_concomitant_overrides_only_tighten() -> None:
    for protocol in protocols().values():
        assert protocol.concomitant
        for medication, overrides in protocol.concomitant.items():
            tightened = protocol.for_medications(frozenset({medication}))
            assert tightened.version == protocol.version
            for name, rule in tightened.rules.items():
                for param, value in rule.params.items():
                    base = protocol.rule(name)[param]
                    override = overrides.get(name, {}).get(param)
                    if override is None:
                        assert value == base
                    else:
                        assert value == override
                        stricter = RULE_PARAMS[name][param].stricter
                        assert value <= base if stricter == "lower" else value >= base


# -- ids and the audit trail ---------------------------------------------------------------


def test_alert_ids_are_deterministic_and_distinct() -> None:
    streams = _problem_sessions()
    events = merged(*streams)
    first, second = run(events, until=600), run(events, until=600)
    assert [a.alert_id for a in first] == [a.alert_id for a in second]
    assert first == second
    ids = [a.alert_id for a in first]
    assert len(set(ids)) == len(ids)
    # the same story in another session gets other ids
    a1 = run([Session("x").dose(0)], until=600)
    a2 = run([Session("y").dose(0)], until=600)
    assert rules(a1) == rules(a2)
    assert not {a.alert_id for a in a1} & {a.alert_id for a in a2}
    assert a1[0].alert_id == stable_id("x", a1[0].rule, "x-dose1")


def test_audit_records_every_accepted_event_alert_and_state_change() -> None:
    s = Session()
    events = timeline(
        s.opened(-20, id="open"),
        s.bp(-5, id="pre"),
        s.dose(0, id="dose"),
        [s.normal(m) for m in range(10, 130, 10)],
        s.bp(45, 190, 100, id="crisis"),
        s.assess(128, 5),
        s.discharge(130, id="dis"),
    )
    replay = Replay().feed(events).finish(at(600))
    audit = replay.audit
    by_kind: dict[AuditKind, list[str]] = {}
    for record in audit:
        by_kind.setdefault(record.kind, []).append(record.subject_id)
    assert by_kind[AuditKind.EVENT_ACCEPTED] == [e.event_id for e in events]
    assert by_kind[AuditKind.SESSION_OPENED] == ["open"]
    assert by_kind[AuditKind.SESSION_DOSED] == ["dose"]
    assert by_kind[AuditKind.WINDOW_SATISFIED] == ["dose"]
    assert by_kind[AuditKind.SESSION_DISCHARGED] == ["dis"]
    crisis, rise = replay.alerts  # any crisis over a 120/80 baseline is also a rise
    assert crisis.rule == "BP_CRISIS" and crisis.severity is Severity.CRITICAL
    assert rise.rule == "BP_RISE" and rise.severity is Severity.WARNING
    assert by_kind[AuditKind.ALERT_RAISED] == [crisis.alert_id, rise.alert_id]
    raised = next(r for r in audit if r.kind is AuditKind.ALERT_RAISED)
    assert raised.detail == {"rule": "BP_CRISIS", "severity": "critical"}
    assert raised.occurred_at == at(45)
    window = next(r for r in audit if r.kind is AuditKind.WINDOW_SATISFIED)
    assert window.occurred_at == at(120)
    # record ids are unique and the same on a second run
    ids = [r.record_id for r in audit]
    assert len(set(ids)) == len(ids)
    again = Replay().feed(events).finish(at(600)).audit
    assert [r.record_id for r in again] == ids


def test_engine_rejects_an_unknown_default_protocol() -> None:
    with pytest.raises(ValueError, match="no-such"):
        MonitoringEngine(protocols(), default_protocol="no-such")


def test_scenario_helpers_are_anchored_at_t0() -> None:
    assert at(0) == T0 and at(90) - at(30) == timedelta(hours=1)
    assert isinstance(engine(), MonitoringEngine)


@pytest.mark.parametrize("second_dose_at", [48, 50, 52])
def test_a_second_dose_near_the_40_minute_deadline_is_judged_by_event_time(
    second_dose_at: float,
) -> None:
    """The 40-minute check belongs to the latest dose *at its deadline* (dose + 50): a second
    dose given by then takes it over, one given later does not, however late it arrives."""
    s = Session()
    head = [s.bp(-5), s.dose(0, id="d1"), s.hr(10), s.hr(20), s.hr(30), s.hr(40)]
    dose2, other = s.dose(second_dose_at, id="d2"), s.hr(second_dose_at + 4)
    in_order = run([*head, dose2, other], until=600)
    late = run([*head, other, dose2], until=600)  # d2 arrives 4 minutes late
    assert {a.alert_id for a in late} == {a.alert_id for a in in_order}
    missed = [a.evidence for a in only(in_order, "POST_DOSE_BP_MISSED")]
    if second_dose_at <= 50:
        assert missed == [("d2",)]
    else:
        assert missed == [("d1",), ("d2",)]


# -- withdrawals: later-arriving facts take alerts back (issue 14, gap 4) ------------------


def test_a_late_session_opened_re_judges_earlier_readings() -> None:
    s = Session()
    opened, reading = s.opened(-3, meds=["opioid"]), s.vitals(-1, spo2=93, rr=11)
    head = [s.bp(-5)]
    assert rules(run([*head, reading, opened], until=2)) == rules(
        run([*head, opened, reading], until=2)
    )


def test_a_reading_after_discharge_arriving_before_it_is_withdrawn() -> None:
    s = Session()
    events = s.compliant()
    crisis = s.bp(126, 200, 100, id="after")  # a crisis, and a rise over the 120/80 baseline
    replay = Replay().feed([*events[:-1], crisis, events[-1]]).finish(at(600))
    assert replay.open_alerts == []
    raised = {a.alert_id: a.rule for a in replay.alerts}
    assert {w.alert_id: w.rule for w in replay.withdrawals} == raised
    assert sorted(raised.values()) == ["BP_CRISIS", "BP_RISE"]
    for withdrawal in replay.withdrawals:
        assert withdrawal.reason is WithdrawalReason.DISCHARGE_ARRIVED_LATE
        assert withdrawal.evidence == (events[-1].event_id,)
        assert withdrawal.withdrawn_at == events[-1].occurred_at
    records = [r for r in replay.audit if r.kind is AuditKind.ALERT_WITHDRAWN]
    assert {r.subject_id for r in records} == set(raised)
    for record in records:
        assert record.record_id == stable_id(AuditKind.ALERT_WITHDRAWN, record.subject_id)
        assert record.detail["reason"] == "discharge_arrived_late"
        assert record.detail["evidence"] == [events[-1].event_id]
        assert record.detail["rule"] == raised[record.subject_id]


def test_readings_of_one_kind_in_reverse_order_give_one_episode() -> None:
    """c12 arrives first and starts an episode; c10, earlier, arrives next: the episode
    starts at c10, so c12's alert is withdrawn (in order there is one alert, c10's)."""
    s = Session()
    head = [s.bp(-5), s.dose(0)]
    c10, c12 = s.bp(10, 190, 100, id="c10"), s.bp(12, 190, 100, id="c12")
    in_order = run_open([*head, c10, c12], until=600)
    replay = Replay().feed([*head, c12, c10]).finish(at(600))
    assert [a.evidence for a in only(replay.open_alerts, "BP_CRISIS")] == [("c10",)]
    assert {a.alert_id for a in replay.open_alerts} == {a.alert_id for a in in_order}
    [withdrawal] = [w for w in replay.withdrawals if w.rule == "BP_CRISIS"]
    assert withdrawal.reason is WithdrawalReason.READING_ARRIVED_LATE
    assert withdrawal.evidence == ("c10",)


def test_simultaneous_spo2_low_then_critical_withdraws_the_low() -> None:
    s = Session()
    events = [s.dose(0), s.vitals(20, spo2=90, id="a"), s.vitals(20, spo2=85, id="z")]
    replay = Replay().feed(events).finish(at(600))
    assert [(a.rule, a.evidence) for a in replay.open_alerts if a.rule.startswith("SPO2")] == [
        ("SPO2_CRITICAL", ("z",))
    ]
    assert [w.rule for w in replay.withdrawals] == ["SPO2_LOW"]


def test_a_late_session_opened_with_another_protocol_re_judges_earlier_readings() -> None:
    s = Session()
    opened, reading = s.opened(0, protocol="ketamine-iv"), s.vitals(2, spo2=93)
    late = run_open([reading, opened], until=3)
    assert rules(late) == rules(run([opened, reading], until=3)) == ["SPO2_LOW"]
    assert late[0].protocol == "ketamine-iv"


def test_issue_14_gap_4_a_ketamine_session_opened_late_is_judged_by_its_own_protocol() -> None:
    """The issue's reproduction: a ketamine-iv session whose `session.opened` arrives after its
    first readings. Under spravato-rems SpO2 91 is low (below 92, and 93 is not); under
    ketamine-iv both are (below 94); gaps are 5 minutes, not 15."""
    k = Session("k")
    opened = k.opened(-20, "ketamine-iv")
    readings = [
        k.bp(-5),
        k.dose(0, id="dose"),
        k.vitals(4, spo2=91, id="o4"),
        k.vitals(8, spo2=97),
        k.vitals(12, spo2=97, id="v12"),  # 12 -> 19: a 5-minute gap under ketamine-iv
        k.vitals(19, spo2=93, id="o19"),  # low under ketamine-iv only
        k.vitals(21, spo2=98),
    ]
    in_order = Replay().feed([opened, *readings]).finish(at(22))
    late = Replay().feed([*readings[:4], opened, *readings[4:]]).finish(at(22))
    assert {a.alert_id for a in late.open_alerts} == {a.alert_id for a in in_order.open_alerts}
    assert sorted(rules(late.open_alerts)) == ["SPO2_LOW", "SPO2_LOW", "VITALS_GAP"]
    # An alert raised before the protocol arrived that its rules also hold keeps its id and
    # the protocol it was raised under; the ones raised since name ketamine-iv.
    assert {a.protocol for a in late.open_alerts if a.evidence != ("o4",)} == {"ketamine-iv"}


def test_a_late_protocol_withdraws_what_its_rules_do_not_hold() -> None:
    """Under the default (spravato-rems) SpO2 90 is low; the session's protocol (ketamine-iv
    with its own levels) arrives late and makes it low too, but a 150/115 reading is a crisis
    only under ketamine-iv and 185/100 under both: nothing is withdrawn. The other way round
    (default ketamine-iv, session spravato-rems), 150/115 is withdrawn."""
    s = Session()
    opened = s.opened(-20, "spravato-rems")
    readings = [s.bp(-5), s.dose(0), s.bp(10, 150, 115, id="c10")]
    replay = Replay(engine("ketamine-iv")).feed([*readings, opened]).finish(at(12))
    assert rules(only(replay.alerts, "BP_CRISIS")) == ["BP_CRISIS"]
    assert only(replay.open_alerts, "BP_CRISIS") == []
    [withdrawal] = [w for w in replay.withdrawals if w.rule == "BP_CRISIS"]
    assert withdrawal.reason is WithdrawalReason.PROTOCOL_ARRIVED_LATE
    assert "spravato-rems" in withdrawal.detail
    in_order = Replay(engine("ketamine-iv")).feed([opened, *readings]).finish(at(12))
    assert only(in_order.alerts, "BP_CRISIS") == []
    assert {a.alert_id for a in replay.open_alerts} == {a.alert_id for a in in_order.alerts}


def test_a_longer_gap_limit_arriving_late_withdraws_the_gap() -> None:
    s = Session()
    opened = s.opened(-20, "spravato-rems")
    readings = [s.bp(-5), s.dose(0), s.hr(4, id="v4"), s.hr(12, id="v12")]
    replay = Replay(engine("ketamine-iv")).feed(readings).finish(at(10))
    assert [(a.rule, a.evidence) for a in replay.alerts] == [("VITALS_GAP", ("v4",))]
    replay.feed([opened]).finish(at(20))
    assert [w.rule for w in replay.withdrawals] == ["VITALS_GAP"]
    assert only(replay.open_alerts, "VITALS_GAP") == []


def test_a_withdrawal_is_made_once_and_duplicates_change_nothing() -> None:
    s = Session()
    events = s.compliant()
    crisis = s.bp(126, 200, 100)
    stream = [*events[:-1], crisis, events[-1], events[-1], crisis]
    replay = Replay().feed(stream).finish(at(600))
    assert sorted(w.rule for w in replay.withdrawals) == ["BP_CRISIS", "BP_RISE"]
    assert replay.open_alerts == []


def test_the_opened_record_carries_the_pseudonymous_patient_and_protocol() -> None:
    s = Session()
    replay = Replay().feed([s.opened(0, meds=["opioid", "maoi"])])
    opened = [r for r in replay.audit if r.kind == AuditKind.SESSION_OPENED]
    assert [r.detail for r in opened] == [
        {
            "patient_ref": "p-s1",
            "protocol": "spravato-rems",
            "concomitant_medications": ["maoi", "opioid"],
        }
    ]
