"""Escalation policies per clinic, from configuration.

A policy maps a severity to escalation steps: "not acknowledged within `after` -> notify
`target`". The file (TOML or JSON, `REMSGUARD_ALERTING_POLICY_FILE`) has a `default` policy
and optional per-clinic overrides; a clinic not listed gets the default:

```toml
[default]
critical = [
  { after_minutes = 2, target = "lead_on_call" },
  { after_minutes = 5, target = "medical_director" },
]
warning = []

[clinics.clinic-7]
critical = [{ after_minutes = 1, target = "lead_on_call" }]
```

Without a file, `Policies.default()` is the policy above (critical: 2 min -> lead on call,
5 min -> medical director; warnings and info: none).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

__all__ = ["EscalationPolicy", "EscalationStep", "Policies", "PolicyError"]

SEVERITIES = ("info", "warning", "critical")


class PolicyError(ValueError):
    """The policy file is malformed (raised at start-up)."""


@dataclass(frozen=True, slots=True)
class EscalationStep:
    after: timedelta  # since the alert was recorded
    target: str  # who is notified, e.g. "lead_on_call"


@dataclass(frozen=True, slots=True)
class EscalationPolicy:
    steps: Mapping[str, tuple[EscalationStep, ...]] = field(default_factory=dict)

    def for_severity(self, severity: str) -> tuple[EscalationStep, ...]:
        return tuple(self.steps.get(severity, ()))


DEFAULT_POLICY = EscalationPolicy(
    {
        "critical": (
            EscalationStep(timedelta(minutes=2), "lead_on_call"),
            EscalationStep(timedelta(minutes=5), "medical_director"),
        )
    }
)


@dataclass(frozen=True, slots=True)
class Policies:
    default: EscalationPolicy = DEFAULT_POLICY
    clinics: Mapping[str, EscalationPolicy] = field(default_factory=dict)

    def of(self, clinic_id: str) -> EscalationPolicy:
        return self.clinics.get(clinic_id, self.default)

    def steps(self, clinic_id: str, severity: str) -> tuple[EscalationStep, ...]:
        return self.of(clinic_id).for_severity(severity)

    @property
    def severities(self) -> frozenset[str]:
        """Severities that escalate anywhere (the only ones the timers need to watch)."""
        out = {s for s, steps in self.default.steps.items() if steps}
        for policy in self.clinics.values():
            out |= {s for s, steps in policy.steps.items() if steps}
        return frozenset(out)

    @classmethod
    def load(cls, path: Path | None) -> Policies:
        if path is None:
            return cls()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise PolicyError(f"cannot read escalation policy file {path}: {exc}") from None
        try:
            doc = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        except (ValueError, tomllib.TOMLDecodeError) as exc:
            raise PolicyError(f"{path}: {exc}") from None
        return cls.from_mapping(doc, where=str(path))

    @classmethod
    def from_mapping(cls, doc: Any, where: str = "policy") -> Policies:
        if not isinstance(doc, dict):
            raise PolicyError(f"{where}: must be a table")
        unknown = set(doc) - {"default", "clinics"}
        if unknown:
            raise PolicyError(f"{where}: unknown keys {sorted(unknown)}")
        default = (
            _policy(doc["default"], f"{where}: default") if "default" in doc else DEFAULT_POLICY
        )
        clinics_doc = doc.get("clinics", {})
        if not isinstance(clinics_doc, dict):
            raise PolicyError(f"{where}: clinics must be a table")
        clinics = {
            str(clinic): _policy(body, f"{where}: clinics.{clinic}")
            for clinic, body in clinics_doc.items()
        }
        return cls(default, clinics)


def _policy(doc: Any, where: str) -> EscalationPolicy:
    if not isinstance(doc, dict):
        raise PolicyError(f"{where}: must be a table of severity = [steps]")
    steps: dict[str, tuple[EscalationStep, ...]] = {}
    for severity, items in doc.items():
        if severity not in SEVERITIES:
            raise PolicyError(f"{where}: unknown severity {severity!r} (one of {SEVERITIES})")
        if not isinstance(items, list):
            raise PolicyError(f"{where}.{severity}: must be a list of steps")
        parsed: list[EscalationStep] = []
        for index, item in enumerate(items):
            at = f"{where}.{severity}[{index}]"
            if not isinstance(item, dict) or set(item) - {
                "after_minutes",
                "after_seconds",
                "target",
            }:
                raise PolicyError(f"{at}: needs after_minutes (or after_seconds) and target")
            target = item.get("target")
            if not isinstance(target, str) or not target:
                raise PolicyError(f"{at}: target must be a non-empty string")
            if "after_minutes" in item:
                after = timedelta(minutes=_number(item["after_minutes"], at))
            elif "after_seconds" in item:
                after = timedelta(seconds=_number(item["after_seconds"], at))
            else:
                raise PolicyError(f"{at}: needs after_minutes or after_seconds")
            if parsed and after <= parsed[-1].after:
                raise PolicyError(f"{at}: steps must come strictly later than the one before")
            parsed.append(EscalationStep(after, target))
        steps[severity] = tuple(parsed)
    return EscalationPolicy(steps)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise PolicyError(f"{where}: the delay must be a non-negative number")
    return float(value)
