"""Alarm inhibition as protocol data (issue 14, gap 6): on one reading, the higher-priority
alert carries the notification and card; the lower one stays, marked `inhibited_by`."""

from __future__ import annotations

from importlib import resources

import pytest

from remsguard.domain.engine import MonitoringEngine
from remsguard.domain.protocol import ProtocolError, parse_protocol

from .scenario import Replay, Session, at, only, run

SPRAVATO = resources.files("remsguard.protocols").joinpath("spravato-rems.toml").read_text()


def test_a_crisis_reading_carries_the_rise_of_the_same_reading() -> None:
    s = Session()
    alerts = run([s.bp(-5, 120, 80), s.dose(0), s.bp(10, 192, 104)], until=20)
    [crisis] = only(alerts, "BP_CRISIS")
    [rise] = only(alerts, "BP_RISE")
    assert crisis.inhibited_by is None
    assert rise.inhibited_by == crisis.alert_id


def test_a_rise_without_a_crisis_is_not_inhibited() -> None:
    s = Session()
    alerts = run([s.bp(-5, 120, 80), s.dose(0), s.bp(10, 170, 90)], until=20)
    [rise] = only(alerts, "BP_RISE")
    assert rise.inhibited_by is None and not only(alerts, "BP_CRISIS")


def test_a_rise_before_the_crisis_was_shown_and_stays_uninhibited() -> None:
    """Other readings: the rise at 10 was shown on its own; the crisis at 15 cannot take it."""
    s = Session()
    alerts = run([s.bp(-5, 120, 80), s.dose(0), s.bp(10, 170, 90), s.bp(15, 195, 100)], until=20)
    assert all(a.inhibited_by is None for a in alerts)


def test_without_inhibitions_in_the_protocol_nothing_is_inhibited() -> None:
    start = SPRAVATO.index("[inhibitions]")
    end = SPRAVATO.index("\n\n", start)
    protocol = parse_protocol(SPRAVATO[:start] + SPRAVATO[end:])
    assert protocol.inhibitions == {}
    s = Session()
    engine = MonitoringEngine({"spravato-rems": protocol})
    replay = Replay(engine).feed([s.bp(-5, 120, 80), s.dose(0), s.bp(10, 192, 104)])
    alerts = replay.finish(at(20)).alerts
    assert {a.rule for a in alerts} >= {"BP_CRISIS", "BP_RISE"}
    assert all(a.inhibited_by is None for a in alerts)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('BP_RISE = ["BP_CRISIS"]', "not of a lower severity"),
        ('BP_CRISIS = ["SPO2_CRITICAL"]', "not of a lower severity"),
        ('BP_CRISIS = ["NO_SUCH_RULE"]', "unknown rule"),
        ('NO_SUCH_RULE = ["BP_RISE"]', "NO_SUCH_RULE"),
        ('BP_CRISIS = "BP_RISE"', "list of rule names"),
    ],
)
def test_a_bad_inhibition_is_refused_naming_it(table: str, message: str) -> None:
    start = SPRAVATO.index("[inhibitions]")
    end = SPRAVATO.index("\n\n", start)
    source = SPRAVATO[:start] + "[inhibitions]\n" + table + SPRAVATO[end:]
    with pytest.raises(ProtocolError, match=message):
        parse_protocol(source)


def test_a_crisis_that_arrived_before_the_dose_still_carries_the_rise() -> None:
    """Found by the arrival-order property test: the crisis reading comes in before the dose
    (within the lateness), so the crisis is raised at once and the rise only when the dose
    arrives. The rise is about the crisis's reading and is inhibited as when both came
    together: the same alerts for either order."""
    s = Session()
    pre, dose, reading = s.bp(-5, 120, 80), s.dose(0), s.bp(1, 200, 120)
    in_order = run([pre, dose, reading], until=20)
    late_dose = run([pre, reading, dose], until=20)
    [crisis] = only(late_dose, "BP_CRISIS")
    [rise] = only(late_dose, "BP_RISE")
    assert rise.inhibited_by == crisis.alert_id
    assert sorted(late_dose, key=lambda a: a.alert_id) == sorted(in_order, key=lambda a: a.alert_id)
