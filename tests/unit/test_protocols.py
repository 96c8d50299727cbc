"""Protocols as data: the bundled files load; a bad file fails with a message naming the key."""

from __future__ import annotations

from datetime import timedelta
from importlib import resources
from pathlib import Path

import pytest

from remsguard.domain.decisions import Severity
from remsguard.domain.engine import MonitoringEngine
from remsguard.domain.events import Medication
from remsguard.domain.protocol import RULE_PARAMS, ProtocolError, parse_protocol
from remsguard.protocols import DEFAULT_PROTOCOL, bundled_protocols, load_protocol_file

from .scenario import Replay, Session, at, rules


def text(name: str = "spravato-rems") -> str:
    return resources.files("remsguard.protocols").joinpath(f"{name}.toml").read_text("utf-8")


def edited(old: str, new: str, name: str = "spravato-rems") -> str:
    source = text(name)
    assert source.count(old) == 1, f"{old!r} must occur once in {name}.toml"
    return source.replace(old, new)


# -- the bundled protocols ---------------------------------------------------------------


def test_both_bundled_protocols_load() -> None:
    protocols = bundled_protocols()
    assert set(protocols) == {"spravato-rems", "ketamine-iv"}
    assert DEFAULT_PROTOCOL == "spravato-rems"
    for name, protocol in protocols.items():
        assert protocol.name == name
        assert set(protocol.rules) == set(RULE_PARAMS)
        assert len(protocol.version) == 16


def test_spravato_rems_carries_the_issue_numbers() -> None:
    p = bundled_protocols()["spravato-rems"]
    assert p.allowed_lateness == timedelta(minutes=5)
    assert p.observation_window == timedelta(minutes=120)
    assert p.rule("PRE_DOSE_BP_MISSING")["lookback_minutes"] == 60
    assert (
        p.rule("PRE_DOSE_BP_ELEVATED")["systolic_above"],
        p.rule("PRE_DOSE_BP_ELEVATED")["diastolic_above"],
    ) == (140, 90)
    assert (
        p.rule("POST_DOSE_BP_MISSED")["from_minutes"],
        p.rule("POST_DOSE_BP_MISSED")["until_minutes"],
    ) == (30, 50)
    assert (p.rule("BP_RISE")["systolic_rise"], p.rule("BP_RISE")["diastolic_rise"]) == (40, 25)
    assert (
        p.rule("BP_CRISIS")["systolic_at_least"],
        p.rule("BP_CRISIS")["diastolic_at_least"],
    ) == (180, 120)
    assert p.rule("SPO2_LOW")["below"] == 92
    assert p.rule("SPO2_CRITICAL")["below"] == 88
    assert p.rule("RESPIRATORY_DEPRESSION")["rate_below"] == 10
    assert p.rule("DEEP_SEDATION")["moaas_at_most"] == 2
    assert p.rule("DISCHARGE_WITHOUT_FINAL_BP")["lookback_minutes"] == 30
    assert p.rule("DISCHARGE_SEDATED")["moaas_below"] == 5
    assert p.rule("VITALS_GAP")["max_minutes"] == 15
    assert p.rule("SESSION_NOT_CLOSED")["after_minutes"] == 240
    assert set(p.concomitant) == set(Medication)


def test_ketamine_iv_has_its_own_thresholds() -> None:
    spravato, ketamine = bundled_protocols()["spravato-rems"], bundled_protocols()["ketamine-iv"]
    different = [
        (rule, param)
        for rule, settings in ketamine.rules.items()
        for param, value in settings.params.items()
        if spravato.rule(rule)[param] != value
    ]
    assert len(different) >= 8
    assert ketamine.observation_window == timedelta(minutes=90)
    assert ketamine.allowed_lateness == timedelta(minutes=2)


def test_a_clinic_protocol_file_loads_from_a_path(tmp_path: Path) -> None:
    path = tmp_path / "clinic.toml"
    path.write_text(edited('name = "spravato-rems"', 'name = "clinic"'), encoding="utf-8")
    protocol = load_protocol_file(path)
    assert protocol.name == "clinic"
    assert str(path) in _error(edited("[protocol]", "[protocol]\nowner = 1"), source=str(path))


# -- versions --------------------------------------------------------------------------------


def test_protocol_version_is_a_digest_of_the_text() -> None:
    source = text()
    assert parse_protocol(source).version == parse_protocol(source).version
    assert parse_protocol(source).version == bundled_protocols()["spravato-rems"].version
    assert parse_protocol(source + "\n# a comment\n").version != parse_protocol(source).version
    changed = edited("below = 92", "below = 93")
    assert parse_protocol(changed).version != parse_protocol(source).version


# -- bad files -----------------------------------------------------------------------------


def _error(toml: str, **kwargs: str) -> str:
    with pytest.raises(ProtocolError) as caught:
        parse_protocol(toml, **kwargs)
    return str(caught.value)


BAD: dict[str, tuple[str, str, str]] = {
    # name: (old text, new text, a word the message must contain)
    # unknown keys, at every level
    "unknown top-level key": ("[protocol]", 'clinic = "x"\n\n[protocol]', "clinic"),
    "unknown key in [protocol]": ("[protocol]", '[protocol]\nowner = "x"', "owner"),
    "unknown key in a rule": ("below = 92", "below = 92\nbelow_percent = 92", "below_percent"),
    "unknown rule": (
        "[rules.BP_RISE]",
        '[rules.BP_DROP]\nseverity = "info"\n\n[rules.BP_RISE]',
        "BP_DROP",
    ),
    "unknown medication in [concomitant]": (
        "[concomitant.maoi]",
        "[concomitant.alcohol]\nVITALS_GAP = { max_minutes = 5 }\n\n[concomitant.maoi]",
        "alcohol",
    ),
    "unknown rule in [concomitant]": (
        "[concomitant.maoi]",
        "[concomitant.maoi]\nBP_DROP = { x = 1 }",
        "BP_DROP",
    ),
    "unknown parameter in [concomitant]": (
        "[concomitant.maoi]",
        "[concomitant.maoi]\nVITALS_GAP = { max_minute = 5 }",
        "max_minute",
    ),
    # impossible values
    "negative look-back minutes": (
        "lookback_minutes = 60",
        "lookback_minutes = -60",
        "lookback_minutes",
    ),
    "negative gap minutes": ("max_minutes = 15", "max_minutes = -15", "max_minutes"),
    "negative lateness": (
        "allowed_lateness_minutes = 5",
        "allowed_lateness_minutes = -5",
        "allowed_lateness_minutes",
    ),
    "negative override in [concomitant]": (
        "[concomitant.maoi]\nPOST_DOSE_BP_MISSED = { until_minutes = 45 }",
        "[concomitant.maoi]\nPOST_DOSE_BP_MISSED = { until_minutes = -45 }",
        "until_minutes",
    ),
    "from equal to until": ("from_minutes = 30", "from_minutes = 50", "from_minutes"),
    "from after until": ("from_minutes = 30", "from_minutes = 55", "until_minutes"),
    "a medication pushing until before from": (
        "[concomitant.maoi]\nPOST_DOSE_BP_MISSED = { until_minutes = 45 }",
        "[concomitant.maoi]\nPOST_DOSE_BP_MISSED = { until_minutes = 25 }",
        "until_minutes",
    ),
    "spo2 critical above low": ("below = 88", "below = 93", "SPO2_CRITICAL"),
    "spo2 over 100": ("below = 92", "below = 101", "below"),
    "session closed before the window": (
        "after_minutes = 240",
        "after_minutes = 100",
        "after_minutes",
    ),
    "severity not in the set": (
        'severity = "critical"          # discharge before',
        'severity = "urgent"          # discharge before',
        "severity",
    ),
    "a number as text": (
        "systolic_at_least = 180",
        'systolic_at_least = "180"',
        "systolic_at_least",
    ),
    "a boolean for a number": ("rate_below = 10", "rate_below = true", "rate_below"),
    "a missing parameter": ("moaas_at_most = 2\n", "\n", "moaas_at_most"),
    "a missing rule": (
        '[rules.SESSION_NOT_CLOSED]\nseverity = "warning"\nafter_minutes = 240',
        "",
        "SESSION_NOT_CLOSED",
    ),
    "enabled not a boolean": ("[rules.BP_RISE]", '[rules.BP_RISE]\nenabled = "no"', "enabled"),
    "no name": ('name = "spravato-rems"', 'name = ""', "name"),
    "not TOML": ("[protocol]", "[protocol", "TOML"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_protocol_fails_with_a_message_naming_the_key(case: str) -> None:
    old, new, word = BAD[case]
    message = _error(edited(old, new), source="clinic.toml")
    assert word in message
    assert message.startswith("clinic.toml")


def test_overrides_that_conflict_only_together_are_rejected() -> None:
    # Each medication alone is coherent (40-50 and 30-35 minutes), together they give 40-35.
    source = edited(
        "[concomitant.psychostimulant]\nPOST_DOSE_BP_MISSED = { until_minutes = 45 }",
        "[concomitant.psychostimulant]\nPOST_DOSE_BP_MISSED = { from_minutes = 40 }",
    ).replace(
        "[concomitant.maoi]\nPOST_DOSE_BP_MISSED = { until_minutes = 45 }",
        "[concomitant.maoi]\nPOST_DOSE_BP_MISSED = { until_minutes = 35 }",
    )
    assert "from_minutes" in _error(source)


# -- protocols drive the engine ------------------------------------------------------------


def test_a_disabled_rule_never_fires() -> None:
    source = edited("[rules.BP_CRISIS]", "[rules.BP_CRISIS]\nenabled = false")
    protocol = parse_protocol(source)
    assert protocol.rule("BP_CRISIS").enabled is False
    engine = MonitoringEngine({"spravato-rems": protocol})
    s = Session()
    replay = Replay(engine).feed([s.bp(-5), s.dose(0), s.bp(10, 200, 100)]).finish(at(20))
    assert "BP_CRISIS" not in rules(replay.alerts)
    assert "BP_RISE" in rules(replay.alerts)


def test_severity_is_taken_from_the_file() -> None:
    source = edited(
        'severity = "critical"\nsystolic_at_least', 'severity = "info"\nsystolic_at_least'
    ).replace('BP_CRISIS = ["BP_RISE"]\n', "")  # an info alert may inhibit nothing
    engine = MonitoringEngine({"spravato-rems": parse_protocol(source)})
    s = Session()
    replay = Replay(engine).feed([s.bp(10, 200, 100)]).finish(at(20))
    [crisis] = replay.alerts
    assert crisis.severity is Severity.INFO
