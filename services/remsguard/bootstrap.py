"""Wires the engine and its adapters for every entry point (CLI, worker, API).

The pieces every process builds the same way live here: protocols, the engine, telemetry, the
event-time bounds of the live doors. Heavy adapters are imported inside the builders, so a
command that only needs protocols (replay) does not pay for the rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from remsguard.domain.admission import EventTimeBounds
from remsguard.domain.engine import MonitoringEngine
from remsguard.domain.protocol import MonitoringProtocol
from remsguard.protocols import bundled_protocols, load_protocol_file

if TYPE_CHECKING:
    from remsguard.adapters.telemetry import Telemetry
    from remsguard.config import Settings


def load_protocols(extra_files: list[Path] | None = None) -> dict[str, MonitoringProtocol]:
    """The bundled protocols plus a clinic's own files (which may replace a bundled one)."""
    protocols = bundled_protocols()
    for path in extra_files or []:
        protocol = load_protocol_file(path)
        protocols[protocol.name] = protocol
    return protocols


def build_engine(
    default_protocol: str, extra_protocol_files: list[Path] | None = None
) -> MonitoringEngine:
    return MonitoringEngine(load_protocols(extra_protocol_files), default_protocol=default_protocol)


def build_telemetry(settings: Settings) -> Telemetry:
    """A process's metrics: a fresh registry, clinic labels capped by the settings."""
    from remsguard.adapters.metrics import new_registry
    from remsguard.adapters.telemetry import ClinicLabels, Telemetry

    return Telemetry(new_registry(), ClinicLabels(settings.metrics_max_clinics))


def event_time_bounds(settings: Settings) -> EventTimeBounds:
    """How far ahead of the clock, and how far behind, a live door takes an event."""
    return EventTimeBounds.of(settings.event_max_future_seconds, settings.event_max_age_days)
