"""What a simulated clinic day looks like: its size, its mix and how often things go wrong."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Final

# The protocol violations the simulator can inject, one per session at most, so that the
# alert rules each one must raise are known exactly.
EARLY_DISCHARGE: Final = "early_discharge"
MISSED_POST_DOSE_CHECK: Final = "missed_post_dose_check"
MISSING_PRE_DOSE_BP: Final = "missing_pre_dose_bp"
BP_CRISIS: Final = "bp_crisis"
DESATURATION: Final = "desaturation"
DEVICE_DROPOUT: Final = "device_dropout"
# A SPRAVATO session whose patient is left out of the simulated REMS registry.
NOT_ENROLLED: Final = "not_enrolled"
VIOLATION_KINDS: Final = (
    EARLY_DISCHARGE,
    MISSED_POST_DOSE_CHECK,
    MISSING_PRE_DOSE_BP,
    BP_CRISIS,
    DESATURATION,
    DEVICE_DROPOUT,
    NOT_ENROLLED,
)


class ConfigError(ValueError):
    """A simulation setting that cannot work (a rate out of range, no sessions)."""


def _rate(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be between 0 and 1, not {value}")


@dataclass(frozen=True, slots=True)
class ViolationRates:
    """Probability that a session gets each violation; together at most 1 (one per session)."""

    early_discharge: float = 0.03
    missed_post_dose_check: float = 0.03
    missing_pre_dose_bp: float = 0.03
    bp_crisis: float = 0.03
    desaturation: float = 0.03
    device_dropout: float = 0.03
    not_enrolled: float = 0.0  # esketamine sessions only (others stay compliant)

    def items(self) -> list[tuple[str, float]]:
        return [(f.name, float(getattr(self, f.name))) for f in fields(self)]

    def validate(self) -> None:
        for name, value in self.items():
            _rate(f"{name} rate", value)
        total = sum(value for _, value in self.items())
        if total > 1.0 + 1e-9:
            raise ConfigError(
                f"violation rates add up to {total:g}; at most 1 (one violation per session)"
            )


@dataclass(frozen=True, slots=True)
class TransportRates:
    """Per-event probabilities of delivery faults."""

    duplicate: float = 0.01  # the same event sent again (a retry)
    reorder: float = 0.03  # delivered late, within the protocol's allowed lateness
    malformed: float = 0.003  # a broken event from the same device (not JSON, missing, range)

    def validate(self) -> None:
        for f in fields(self):
            _rate(f"{f.name} rate", float(getattr(self, f.name)))


@dataclass(frozen=True, slots=True)
class SimulationConfig:
    start: datetime  # when the first chair opens its first session (timezone-aware)
    seed: int
    clinics: int = 2
    chairs_per_clinic: int = 3
    sessions_per_chair: int = 3
    days: int = 1
    esketamine_share: float = 0.5  # the rest are ketamine (IV, IM, sublingual)
    concomitant_share: float = 0.15  # sessions with a recorded concomitant medication
    violations: ViolationRates = field(default_factory=ViolationRates)
    transport: TransportRates = field(default_factory=TransportRates)

    def validate(self) -> None:
        if self.start.tzinfo is None:
            raise ConfigError("start needs a timezone offset")
        for name in ("clinics", "chairs_per_clinic", "sessions_per_chair", "days"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        _rate("esketamine share", self.esketamine_share)
        _rate("concomitant share", self.concomitant_share)
        self.violations.validate()
        self.transport.validate()
