"""Wires the engine and its adapters for every entry point (CLI, worker, API)."""

from __future__ import annotations

from pathlib import Path

from remsguard.domain.engine import MonitoringEngine
from remsguard.domain.protocol import MonitoringProtocol
from remsguard.protocols import bundled_protocols, load_protocol_file


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
