"""MonitoringProtocol: the thresholds and intervals a clinic monitors by, parsed from data."""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from functools import lru_cache
from types import MappingProxyType
from typing import Final

from remsguard.domain.decisions import Severity
from remsguard.domain.events import Event, Medication, SessionOpened


class ProtocolError(ValueError):
    """A protocol file that cannot be trusted: unknown key, missing value, impossible value."""


@dataclass(frozen=True, slots=True)
class Param:
    """One rule parameter: its plausible range and which direction is the stricter one."""

    low: float
    high: float
    stricter: str  # "lower" or "higher": which value monitors more closely


RULE_PARAMS: Final[Mapping[str, Mapping[str, Param]]] = {
    "PRE_DOSE_BP_MISSING": {"lookback_minutes": Param(1, 24 * 60, "higher")},
    "PRE_DOSE_BP_ELEVATED": {
        "systolic_above": Param(60, 300, "lower"),
        "diastolic_above": Param(30, 200, "lower"),
    },
    "POST_DOSE_BP_MISSED": {
        "from_minutes": Param(0, 24 * 60, "higher"),
        "until_minutes": Param(1, 24 * 60, "lower"),
    },
    "BP_RISE": {
        "systolic_rise": Param(1, 200, "lower"),
        "diastolic_rise": Param(1, 150, "lower"),
    },
    "BP_CRISIS": {
        "systolic_at_least": Param(60, 300, "lower"),
        "diastolic_at_least": Param(30, 200, "lower"),
    },
    "SPO2_LOW": {"below": Param(50, 100, "higher")},
    "SPO2_CRITICAL": {"below": Param(50, 100, "higher")},
    "RESPIRATORY_DEPRESSION": {"rate_below": Param(1, 40, "higher")},
    "DEEP_SEDATION": {"moaas_at_most": Param(0, 4, "higher")},
    "EARLY_DISCHARGE": {},
    "DISCHARGE_WITHOUT_FINAL_BP": {"lookback_minutes": Param(1, 24 * 60, "higher")},
    "DISCHARGE_BP_ELEVATED": {},
    "DISCHARGE_SEDATED": {"moaas_below": Param(1, 5, "higher")},
    "VITALS_GAP": {"max_minutes": Param(1, 24 * 60, "lower")},
    "SESSION_NOT_CLOSED": {"after_minutes": Param(1, 7 * 24 * 60, "lower")},
    "DOSE_AFTER_DISCHARGE": {},
    "DISCHARGE_NOT_STABLE": {},
    "PATIENT_NOT_ENROLLED": {},
    "SETTING_NOT_CERTIFIED": {},
}
RULE_KEYS: Final = frozenset({"severity", "enabled", "message"})
PROTOCOL_KEYS: Final = frozenset(
    {
        "name",
        "title",
        "description",
        "allowed_lateness_minutes",
        "observation_window_minutes",
        "rems_gate",
    }
)
TOP_KEYS: Final = frozenset({"protocol", "rules", "concomitant", "inhibitions"})


@dataclass(frozen=True, slots=True)
class RuleSettings:
    severity: Severity
    enabled: bool
    params: Mapping[str, float]

    def __getitem__(self, param: str) -> float:
        return self.params[param]

    def minutes(self, param: str) -> timedelta:
        return _minutes(self.params[param])


@lru_cache(maxsize=256)
def _minutes(value: float) -> timedelta:
    return timedelta(minutes=value)


@dataclass(frozen=True, slots=True)
class DeadlineIntervals:
    """What the deadline checks add to event times, computed once: checks are listed often."""

    lateness: timedelta
    post_dose_until: timedelta
    window: timedelta
    not_closed_after: timedelta
    vitals_gap: timedelta


@dataclass(frozen=True, slots=True)
class MonitoringProtocol:
    """A parsed protocol file; `version` is a digest of its bytes, so decisions can be replayed."""

    name: str
    version: str
    title: str
    allowed_lateness: timedelta
    observation_window: timedelta
    rules: Mapping[str, RuleSettings]
    concomitant: Mapping[Medication, Mapping[str, Mapping[str, float]]] = field(
        default_factory=dict
    )
    # Alarm inhibition: an alert of the key's rule on a reading carries the notification and
    # console card for that reading's alerts of the listed (lower-priority) rules.
    inhibitions: Mapping[str, frozenset[str]] = field(default_factory=dict)
    intervals: DeadlineIntervals = field(init=False, repr=False, compare=False)
    # Whether a dose needs a certified setting and an enrolled patient (the REMS gate).
    rems_gate: bool = False

    def __post_init__(self) -> None:
        rules = self.rules
        intervals = DeadlineIntervals(
            lateness=self.allowed_lateness,
            post_dose_until=rules["POST_DOSE_BP_MISSED"].minutes("until_minutes"),
            window=self.observation_window,
            not_closed_after=rules["SESSION_NOT_CLOSED"].minutes("after_minutes"),
            vitals_gap=rules["VITALS_GAP"].minutes("max_minutes"),
        )
        object.__setattr__(self, "intervals", intervals)

    def rule(self, name: str) -> RuleSettings:
        return self.rules[name]

    def for_medications(self, medications: frozenset[Medication]) -> MonitoringProtocol:
        """The protocol tightened by every applicable concomitant-medication override."""
        overrides = [self.concomitant[m] for m in sorted(medications) if m in self.concomitant]
        if not overrides:
            return self
        rules = dict(self.rules)
        for override in overrides:
            for rule_name, params in override.items():
                current = rules[rule_name]
                merged = dict(current.params)
                for param, value in params.items():
                    pick = min if RULE_PARAMS[rule_name][param].stricter == "lower" else max
                    merged[param] = pick(merged[param], value)
                rules[rule_name] = RuleSettings(current.severity, current.enabled, merged)
        return replace(self, rules=MappingProxyType(rules))  # its intervals follow the rules


def session_protocol(
    events: Iterable[Event],
    protocols: Mapping[str, MonitoringProtocol],
    default_protocol: str,
) -> tuple[str, MonitoringProtocol | None]:
    """The session's protocol (named by its session.opened, else the default) tightened by
    its concomitant medications, as the engine judges it; None when it is not among
    `protocols`. For what reads a session back: the form, the chart, the report."""
    opened = next((e for e in events if isinstance(e, SessionOpened)), None)
    name = (opened.protocol if opened is not None else None) or default_protocol
    protocol = protocols.get(name)
    if protocol is not None and opened is not None:
        protocol = protocol.for_medications(frozenset(opened.concomitant_medications))
    return name, protocol


def parse_protocol(text: str, *, source: str = "<protocol>") -> MonitoringProtocol:
    """Parse and validate a TOML protocol; every problem is a ProtocolError naming the key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProtocolError(f"{source}: not valid TOML: {exc}") from exc
    _no_unknown(data, TOP_KEYS, source)
    head = _table(data, "protocol", source)
    _no_unknown(head, PROTOCOL_KEYS, f"{source} [protocol]")
    name = _text(head, "name", f"{source} [protocol]")
    lateness = _number(head, "allowed_lateness_minutes", Param(0, 120, "lower"), f"{source}")
    window = _number(head, "observation_window_minutes", Param(1, 24 * 60, "higher"), source)
    rules = _parse_rules(_table(data, "rules", source), source)
    rems_gate = head.get("rems_gate", False)
    if not isinstance(rems_gate, bool):
        raise ProtocolError(f"{source} [protocol]: rems_gate must be true or false")
    concomitant = _parse_concomitant(data.get("concomitant", {}), source)
    inhibitions = _parse_inhibitions(data.get("inhibitions", {}), rules, source)
    protocol = MonitoringProtocol(
        name=name,
        version=hashlib.sha256(text.encode("utf-8")).hexdigest()[:16],
        title=str(head.get("title", name)),
        allowed_lateness=timedelta(minutes=lateness),
        observation_window=timedelta(minutes=window),
        rules=MappingProxyType(rules),
        concomitant=MappingProxyType(concomitant),
        rems_gate=rems_gate,
        inhibitions=MappingProxyType(inhibitions),
    )
    _check_coherent(protocol, source)
    for medication in concomitant:
        _check_coherent(protocol.for_medications(frozenset({medication})), source)
    if len(concomitant) > 1:
        # Each parameter takes its strictest override, so all medications at once is the
        # extreme case: e.g. one raising from_minutes and another lowering until_minutes.
        everything = ", ".join(sorted(concomitant))
        _check_coherent(
            protocol.for_medications(frozenset(concomitant)),
            f"{source} [concomitant: {everything} together]",
        )
    return protocol


def _parse_rules(table: dict[str, object], source: str) -> dict[str, RuleSettings]:
    _no_unknown(table, frozenset(RULE_PARAMS), f"{source} [rules]")
    missing = sorted(set(RULE_PARAMS) - set(table))
    if missing:
        raise ProtocolError(f"{source}: rules missing from the protocol: {', '.join(missing)}")
    rules: dict[str, RuleSettings] = {}
    for rule_name, spec in RULE_PARAMS.items():
        where = f"{source} [rules.{rule_name}]"
        body = _table(table, rule_name, f"{source} [rules]")
        _no_unknown(body, RULE_KEYS | frozenset(spec), where)
        try:
            severity = Severity(str(body.get("severity")))
        except ValueError:
            raise ProtocolError(
                f"{where}: severity must be one of info, warning, critical"
            ) from None
        enabled = body.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ProtocolError(f"{where}: enabled must be true or false")
        params = {param: _number(body, param, bounds, where) for param, bounds in spec.items()}
        rules[rule_name] = RuleSettings(severity, enabled, MappingProxyType(params))
    return rules


_RANK: Final = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


def _parse_inhibitions(
    table: object, rules: Mapping[str, RuleSettings], source: str
) -> dict[str, frozenset[str]]:
    """`[inhibitions]`: `RULE = ["LOWER_RULE", ...]`; each listed rule must be of a lower
    severity than the rule that inhibits it (a critical alert never hides behind another)."""
    if not isinstance(table, dict):
        raise ProtocolError(f"{source}: [inhibitions] must be a table")
    _no_unknown(table, frozenset(rules), f"{source} [inhibitions]")
    out: dict[str, frozenset[str]] = {}
    for over, listed in table.items():
        where = f"{source} [inhibitions] {over}"
        if not isinstance(listed, list) or not all(isinstance(r, str) for r in listed):
            raise ProtocolError(f"{where}: must be a list of rule names")
        for under in listed:
            if under not in rules:
                raise ProtocolError(f"{where}: unknown rule {under!r}")
            if _RANK[rules[under].severity] >= _RANK[rules[over].severity]:
                raise ProtocolError(
                    f"{where}: {under} ({rules[under].severity}) is not of a lower severity"
                )
        out[over] = frozenset(listed)
    return out


def _parse_concomitant(
    table: object, source: str
) -> dict[Medication, Mapping[str, Mapping[str, float]]]:
    if not isinstance(table, dict):
        raise ProtocolError(f"{source}: [concomitant] must be a table")
    result: dict[Medication, Mapping[str, Mapping[str, float]]] = {}
    for med_name, overrides in table.items():
        try:
            medication = Medication(med_name)
        except ValueError:
            known = ", ".join(m.value for m in Medication)
            raise ProtocolError(
                f"{source}: unknown medication {med_name!r} in [concomitant] (known: {known})"
            ) from None
        where = f"{source} [concomitant.{med_name}]"
        if not isinstance(overrides, dict):
            raise ProtocolError(f"{where}: must be a table of rule overrides")
        _no_unknown(overrides, frozenset(RULE_PARAMS), where)
        parsed: dict[str, Mapping[str, float]] = {}
        for rule_name, params in overrides.items():
            rule_where = f"{where}.{rule_name}"
            if not isinstance(params, dict):
                raise ProtocolError(f"{rule_where}: must be a table of parameters")
            spec = RULE_PARAMS[rule_name]
            _no_unknown(params, frozenset(spec), rule_where)
            parsed[rule_name] = {p: _number(params, p, spec[p], rule_where) for p in params}
        result[medication] = MappingProxyType(parsed)
    return result


def _check_coherent(protocol: MonitoringProtocol, source: str) -> None:
    post = protocol.rule("POST_DOSE_BP_MISSED")
    if post["from_minutes"] >= post["until_minutes"]:
        raise ProtocolError(
            f"{source}: POST_DOSE_BP_MISSED from_minutes must be before until_minutes"
        )
    if protocol.rule("SPO2_CRITICAL")["below"] > protocol.rule("SPO2_LOW")["below"]:
        raise ProtocolError(f"{source}: SPO2_CRITICAL below must not exceed SPO2_LOW below")
    closed = timedelta(minutes=protocol.rule("SESSION_NOT_CLOSED")["after_minutes"])
    if closed < protocol.observation_window:
        raise ProtocolError(
            f"{source}: SESSION_NOT_CLOSED after_minutes must not be shorter than the "
            "observation window"
        )


def _no_unknown(table: Mapping[str, object], known: frozenset[str], where: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise ProtocolError(
            f"{where}: unknown key(s) {', '.join(unknown)}; "
            f"expected one of {', '.join(sorted(known))}"
        )


def _table(data: Mapping[str, object], key: str, where: str) -> dict[str, object]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise ProtocolError(f"{where}: [{key}] table is missing")
    return value


def _text(data: Mapping[str, object], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise ProtocolError(f"{where}: {key} must be a non-empty string")
    return value


def _number(data: Mapping[str, object], key: str, bounds: Param, where: str) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(f"{where}: {key} must be a number")
    if not bounds.low <= value <= bounds.high:
        raise ProtocolError(
            f"{where}: {key} = {value} is impossible (allowed {bounds.low:g} to {bounds.high:g})"
        )
    return float(value)
