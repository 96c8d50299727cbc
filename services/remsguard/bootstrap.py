"""Wires the engine and its adapters for every entry point (CLI, worker, API).

The pieces every process builds the same way live here: telemetry and the event-time bounds
of the live doors. Protocols and the engine are built by `remsguard.protocols` (they need
nothing but the domain); `load_protocols` and `build_engine` are re-exported here for the
callers that still import them from bootstrap. Heavy adapters are imported inside the
builders, so a command that only needs protocols (replay) does not pay for the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from remsguard.domain.admission import EventTimeBounds
from remsguard.protocols import build_engine, load_protocols

if TYPE_CHECKING:
    from remsguard.adapters.telemetry import Telemetry
    from remsguard.config import Settings

__all__ = ["build_engine", "build_telemetry", "event_time_bounds", "load_protocols"]


def build_telemetry(settings: Settings) -> Telemetry:
    """A process's metrics: a fresh registry, clinic labels capped by the settings."""
    from remsguard.adapters.metrics import new_registry
    from remsguard.adapters.telemetry import ClinicLabels, Telemetry

    return Telemetry(new_registry(), ClinicLabels(settings.metrics_max_clinics))


def event_time_bounds(settings: Settings) -> EventTimeBounds:
    """How far ahead of the clock, and how far behind, a live door takes an event."""
    return EventTimeBounds.of(settings.event_max_future_seconds, settings.event_max_age_days)
